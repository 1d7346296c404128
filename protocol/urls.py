"""The URL rule shared by WebSub parameters and ``Link`` targets.

A topic, a callback or a link target is an absolute ``http``/``https`` URL with a host,
without whitespace, control characters or a fragment.
"""

from __future__ import annotations

from urllib.parse import urlsplit

from protocol.errors import LocalProtocolError

__all__ = ["check_url"]


def check_url(name: str, value: str) -> str:
    """Return ``value``, or raise :class:`LocalProtocolError` saying what is wrong.

    Callers that check a peer's value convert the error at their entry point.
    """
    if not value:
        raise LocalProtocolError(f"{name} is empty; it must be an absolute http or https URL")
    if any(c.isspace() or ord(c) < 0x20 or ord(c) == 0x7F for c in value):
        raise LocalProtocolError(f"{name} contains whitespace or control characters: {value!r}")
    try:
        parts = urlsplit(value)
        parts.port  # noqa: B018 - raises ValueError on a malformed port
    except ValueError as exc:
        raise LocalProtocolError(f"{name} is not a valid URL ({exc}): {value!r}") from exc
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise LocalProtocolError(
            f"{name} must be an absolute http or https URL with a host, got {value!r}"
        )
    if "#" in value:
        # A fragment never reaches the server, so two callbacks differing only in their
        # fragment would be the same endpoint under two subscription keys.
        raise LocalProtocolError(f"{name} must not contain a fragment (#...): {value!r}")
    return value
