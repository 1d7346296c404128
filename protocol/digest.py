"""Body digests: RFC 9530 ``Content-Digest`` and the legacy RFC 3230 ``Digest``.

A signature covers the digest *header*, never the body itself, so a signature is worth
nothing until the digest has been recomputed from the bytes actually received. Both
profiles call the ``verify_*`` functions here for that.

Comparisons use :func:`hmac.compare_digest` so the time taken says nothing about how
many leading bytes of a forged digest were right.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import http_sf

from protocol.errors import LocalProtocolError, RemoteProtocolError

__all__ = [
    "CONTENT_DIGEST_ALGORITHMS",
    "LEGACY_DIGEST_ALGORITHMS",
    "Headers",
    "content_digest",
    "header_pairs",
    "header_value",
    "legacy_digest",
    "parse_dictionary",
    "verify_content_digest",
    "verify_legacy_digest",
]

_Hasher = Callable[[bytes], "hashlib._Hash"]

# Headers as the HTTP layer has them: a plain mapping, or (name, value) pairs when a
# field may repeat (werkzeug/Quart ``Headers.items()`` yields every line).
Headers = Mapping[str, str] | Iterable[tuple[str, str]]


def header_pairs(headers: Headers) -> list[tuple[str, str]]:
    """Return *headers* as a list of ``(name, value)`` lines, repeated fields kept."""
    items = headers.items() if isinstance(headers, Mapping) else headers
    pairs = []
    for name, value in items:
        if not isinstance(name, str) or not isinstance(value, str):
            raise LocalProtocolError(f"header {name!r} must be given as str name and str value")
        pairs.append((name, value))
    return pairs


def header_value(pairs: Iterable[tuple[str, str]], name: str) -> str | None:
    """Value of header *name* (case-insensitive), repeated lines joined with ``", "``.

    Both RFC 9421 (section 2.1) and draft-cavage (section 2.3) combine repeated fields
    this way and trim surrounding whitespace; ``None`` when the header is absent.
    """
    wanted = name.lower()
    values = [value.strip(" \t") for key, value in pairs if key.lower() == wanted]
    return ", ".join(values) if values else None


# RFC 9530 section 5 registers sha-256 and sha-512 as "Active"; md5, sha, crc32c etc.
# are "Deprecated" or "Insecure" and are never accepted as the only digest.
CONTENT_DIGEST_ALGORITHMS: dict[str, _Hasher] = {
    "sha-256": hashlib.sha256,
    "sha-512": hashlib.sha512,
}

# RFC 3230 names are case-insensitive; keys here are lower-cased. Mastodon only
# accepts SHA-256, so that is what we send.
LEGACY_DIGEST_ALGORITHMS: dict[str, _Hasher] = {
    "sha-256": hashlib.sha256,
    "sha-512": hashlib.sha512,
}


def content_digest(body: bytes, algorithm: str = "sha-256") -> str:
    """Return the ``Content-Digest`` value for *body*, e.g. ``sha-256=:X48E…=:``."""
    hasher = CONTENT_DIGEST_ALGORITHMS.get(algorithm)
    if hasher is None:
        raise LocalProtocolError(
            f"cannot build Content-Digest with {algorithm!r}; "
            f"supported: {', '.join(CONTENT_DIGEST_ALGORITHMS)}"
        )
    return f"{algorithm}=:{base64.b64encode(hasher(body).digest()).decode('ascii')}:"


def verify_content_digest(value: str | None, body: bytes) -> tuple[str, ...]:
    """Check a ``Content-Digest`` header value against *body*.

    Every member with a supported algorithm must match; members with algorithms we do
    not know are ignored (RFC 9530 section 2), but at least one supported member is
    required. Returns the algorithms that were checked.
    """
    if value is None:
        raise RemoteProtocolError(
            "Content-Digest header is missing; send 'Content-Digest: sha-256=:<base64>:' "
            "(RFC 9530) for the request body",
            status_hint=400,
        )
    members = _parse_content_digest(value)
    checked: list[str] = []
    for algorithm, digest in members.items():
        hasher = CONTENT_DIGEST_ALGORITHMS.get(algorithm)
        if hasher is None:
            continue
        expected = hasher(body).digest()
        if not isinstance(digest, bytes) or len(digest) != len(expected):
            raise RemoteProtocolError(
                f"Content-Digest member {algorithm} must be a byte sequence of "
                f"{len(expected)} bytes, like {algorithm}=:<base64>:",
                status_hint=400,
            )
        if not hmac.compare_digest(digest, expected):
            raise RemoteProtocolError(
                f"Content-Digest {algorithm} does not match the body received "
                f"({len(body)} bytes): the body was changed in transit or the digest "
                "was computed over other bytes (before compression?)",
                status_hint=401,
            )
        checked.append(algorithm)
    if not checked:
        raise RemoteProtocolError(
            f"Content-Digest has only unsupported algorithms ({', '.join(members)}); "
            f"supported: {', '.join(CONTENT_DIGEST_ALGORITHMS)}",
            status_hint=400,
        )
    return tuple(checked)


def _parse_content_digest(value: str) -> dict[str, object]:
    parsed = parse_dictionary("Content-Digest", value)
    if not parsed:
        raise RemoteProtocolError("Content-Digest is empty", status_hint=400)
    return {name: member[0] for name, member in parsed.items()}


def parse_dictionary(field: str, value: str) -> dict[str, Any]:
    """Parse an RFC 8941 dictionary field strictly: a repeated key is refused (400).

    RFC 8941 lets the last duplicate win; refusing it means no two parsers can see
    different digests or signatures in the same field.
    """

    def refuse_duplicate(key: str, context: str) -> None:
        raise ValueError(f"duplicate {context} key {key!r}")

    try:
        parsed = http_sf.parse(
            value.encode("ascii"), tltype="dictionary", on_duplicate_key=refuse_duplicate
        )
    except (UnicodeEncodeError, ValueError, TypeError) as exc:
        raise RemoteProtocolError(
            f"{field} is not a valid structured-field dictionary: {exc}", status_hint=400
        ) from exc
    # tltype="dictionary" always gives a dict; the library's return type is the union
    # of every structured type, so say which one this is.
    if not isinstance(parsed, dict):
        raise LocalProtocolError(f"http_sf returned {type(parsed).__name__} for a dictionary")
    return dict(parsed)


def legacy_digest(body: bytes, algorithm: str = "SHA-256") -> str:
    """Return the RFC 3230 ``Digest`` value for *body*, e.g. ``SHA-256=X48E…=``."""
    hasher = LEGACY_DIGEST_ALGORITHMS.get(algorithm.lower())
    if hasher is None:
        raise LocalProtocolError(
            f"cannot build Digest with {algorithm!r}; supported: SHA-256, SHA-512"
        )
    return f"{algorithm.upper()}={base64.b64encode(hasher(body).digest()).decode('ascii')}"


def verify_legacy_digest(value: str | None, body: bytes) -> tuple[str, ...]:
    """Check an RFC 3230 ``Digest`` header value (``SHA-256=<base64>[, …]``) against *body*.

    Same rules as :func:`verify_content_digest`: every supported member must match,
    unknown ones are ignored, at least one supported member is required.
    """
    if value is None:
        raise RemoteProtocolError(
            "Digest header is missing; send 'Digest: SHA-256=<base64 of SHA-256(body)>'",
            status_hint=400,
        )
    seen: set[str] = set()
    checked: list[str] = []
    for raw_member in value.split(","):
        name, sep, encoded = raw_member.strip().partition("=")
        algorithm = name.strip().lower()
        if not sep or not algorithm or not encoded:
            raise RemoteProtocolError(
                f"Digest member {raw_member.strip()!r} is malformed; expected 'SHA-256=<base64>'",
                status_hint=400,
            )
        if algorithm in seen:
            raise RemoteProtocolError(
                f"Digest names {name.strip()} twice; send each algorithm once", status_hint=400
            )
        seen.add(algorithm)
        hasher = LEGACY_DIGEST_ALGORITHMS.get(algorithm)
        if hasher is None:
            continue
        expected = hasher(body).digest()
        try:
            digest = base64.b64decode(encoded, validate=True)
        except (binascii.Error, ValueError) as exc:
            raise RemoteProtocolError(
                f"Digest {name.strip()} value is not base64", status_hint=400
            ) from exc
        if len(digest) != len(expected):
            raise RemoteProtocolError(
                f"Digest {name.strip()} value is {len(digest)} bytes; expected {len(expected)}",
                status_hint=400,
            )
        if not hmac.compare_digest(digest, expected):
            raise RemoteProtocolError(
                f"Digest {name.strip()} does not match the body received ({len(body)} bytes): "
                "the body was changed in transit or the digest was computed over other bytes",
                status_hint=401,
            )
        checked.append(algorithm)
    if not checked:
        raise RemoteProtocolError(
            f"Digest has only unsupported algorithms ({', '.join(sorted(seen))}); "
            "supported: SHA-256, SHA-512",
            status_hint=400,
        )
    return tuple(checked)
