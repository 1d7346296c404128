"""WebSub messages, sans-IO (W3C WebSub Recommendation, 2018-01-23).

Everything here takes decoded form parameters, a status and body, or a challenge, and
returns value objects or URLs. The caller does the HTTP.

* Hub side: :func:`parse_hub_request` (subscribe / unsubscribe / publish, REC §5.1, §6),
  :func:`build_verification_url` (§5.3), :func:`check_verification_response` (§5.3.1),
  :func:`build_denial_url` (§5.2).
* Subscriber side: :func:`parse_callback_request` and :meth:`VerificationRequest.expect`
  (§5.3, websub.rocks subscriber test 205).

Beside it: ``X-Hub-Signature`` in :mod:`protocol.hubsignature` (§7.1), ``Link`` headers
and discovery in :mod:`protocol.links` (§4), the subscription and delivery state tables
in :mod:`protocol.states`.
"""

from __future__ import annotations

import hmac
import secrets
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Final
from urllib.parse import parse_qsl, urlencode

from protocol.errors import LocalProtocolError, RemoteProtocolError
from protocol.urls import check_url

__all__ = [
    "DEFAULT_LEASE",
    "Denial",
    "LeasePolicy",
    "PublishRequest",
    "SubscribeRequest",
    "UnsubscribeRequest",
    "VerificationOutcome",
    "VerificationRequest",
    "build_denial_url",
    "build_verification_url",
    "check_verification_response",
    "decode_form",
    "new_challenge",
    "parse_callback_request",
    "parse_hub_request",
]

MODE_SUBSCRIBE: Final = "subscribe"
MODE_UNSUBSCRIBE: Final = "unsubscribe"
MODE_PUBLISH: Final = "publish"
MODE_DENIED: Final = "denied"

#: REC §5.1: hub.secret "MUST be less than 200 bytes in length".
SECRET_MAX_BYTES: Final = 199

# The parameters this module reads. Only these are checked for duplicates: REC §5.1
# says hubs MUST ignore parameters they do not understand (websub.rocks hub test 102
# sends hub.foo), so an unknown one is never an error, repeated or not.
_KNOWN_PARAMS: Final = frozenset(
    {
        "hub.mode",
        "hub.topic",
        "hub.callback",
        "hub.lease_seconds",
        "hub.secret",
        "hub.url",
        "hub.challenge",
        "hub.reason",
    }
)
# 2**63 has 19 digits: a longer lease is nonsense, and refusing it early avoids feeding
# megabyte-long digit strings to int().
_MAX_LEASE_DIGITS: Final = 20
# A form body is small; bound it so a hostile POST can't make us decode megabytes.
MAX_FORM_BYTES: Final = 64 * 1024

Params = Mapping[str, Any] | Iterable[tuple[str, str]]


# --------------------------------------------------------------------------- helpers


def _pairs(params: Params) -> list[tuple[str, str]]:
    """Flatten a multi-dict, a dict of lists (``parse_qs``), a dict or a list of pairs."""
    if isinstance(params, Mapping):
        getlist = getattr(params, "getlist", None)
        if callable(getlist):  # werkzeug / Quart MultiDict: iteration yields each key once
            pairs = [(k, v) for k in params for v in getlist(k)]
        else:
            pairs = []
            for key, value in params.items():
                if isinstance(value, str):
                    pairs.append((key, value))
                else:
                    pairs.extend((key, v) for v in value)
    else:
        pairs = [(k, v) for k, v in params]
    for key, value in pairs:
        if not isinstance(key, str) or not isinstance(value, str):
            # The caller's bug, not the peer's: it stays a LocalProtocolError at the edge.
            raise LocalProtocolError("form parameters must be decoded to str before parsing")
    return pairs


# The helpers below raise LocalProtocolError, as the value objects' own checks do; the
# two entry points that read a peer's form (parse_hub_request, parse_callback_request)
# turn it into RemoteProtocolError with their status, as h11's next_event() does.


def _collect(pairs: list[tuple[str, str]]) -> dict[str, str]:
    """The known ``hub.*`` parameters, each at most once."""
    seen: dict[str, str] = {}
    for key, value in pairs:
        if key not in _KNOWN_PARAMS:
            continue
        if key in seen:
            # Two hub.topic values would make "which one did we verify?" ambiguous.
            raise LocalProtocolError(f"{key} is given more than once; send it exactly once")
        seen[key] = value
    return seen


def _parse_positive_int(name: str, value: str) -> int:
    # int() would accept " 7", "+7", "7_000" and non-ASCII digits; the REC asks for a
    # positive integer, so accept plain ASCII digits only.
    if not value.isascii() or not value.isdigit():
        raise LocalProtocolError(f"{name} must be a positive integer, got {value!r}")
    if len(value) > _MAX_LEASE_DIGITS:
        raise LocalProtocolError(f"{name} is too large ({len(value)} digits)")
    number = int(value)
    if number <= 0:
        raise LocalProtocolError(f"{name} must be a positive integer, got {value!r}")
    return number


def _check_secret(secret: str) -> None:
    size = len(secret.encode("utf-8"))
    if size > SECRET_MAX_BYTES:
        raise LocalProtocolError(
            f"hub.secret is {size} bytes; WebSub requires less than 200 bytes (REC §5.1)"
        )


def decode_form(body: bytes) -> list[tuple[str, str]]:
    """Decode an ``application/x-www-form-urlencoded`` body (REC §5.1: UTF-8)."""
    if len(body) > MAX_FORM_BYTES:
        raise RemoteProtocolError(
            f"form body is {len(body)} bytes; at most {MAX_FORM_BYTES} are accepted",
            status_hint=413,
        )
    try:
        # Percent-escapes must decode to UTF-8 too, hence errors="strict" in parse_qsl.
        text = body.decode("utf-8")
        return parse_qsl(text, keep_blank_values=True, encoding="utf-8", errors="strict")
    except UnicodeDecodeError as exc:
        raise RemoteProtocolError(
            "form body is not valid percent-encoded UTF-8 (WebSub REC §5.1)", status_hint=400
        ) from exc


# ------------------------------------------------------------------ hub requests (§5.1)


@dataclass(frozen=True)
class LeasePolicy:
    """The hub's lease bounds, in seconds. REC §8.2: "10 days is a good default"."""

    minimum: int = 60
    default: int = 10 * 24 * 3600
    maximum: int = 31 * 24 * 3600

    def __post_init__(self) -> None:
        if not 0 < self.minimum <= self.default <= self.maximum:
            raise LocalProtocolError(
                "lease policy needs 0 < minimum <= default <= maximum, got "
                f"{self.minimum}/{self.default}/{self.maximum}"
            )

    def clamp(self, requested: int | None) -> int:
        if requested is None:
            return self.default
        return max(self.minimum, min(self.maximum, requested))


DEFAULT_LEASE: Final = LeasePolicy()


@dataclass(frozen=True)
class SubscribeRequest:
    """A verified-shape ``hub.mode=subscribe``; ``lease_seconds`` is already clamped."""

    topic: str
    callback: str
    lease_seconds: int
    secret: str | None = field(default=None, repr=False)  # never log the secret

    def __post_init__(self) -> None:
        check_url("hub.topic", self.topic)
        check_url("hub.callback", self.callback)
        if isinstance(self.lease_seconds, bool) or self.lease_seconds <= 0:
            raise LocalProtocolError(f"lease_seconds must be positive, got {self.lease_seconds}")
        if self.secret is not None:
            if not self.secret:
                raise LocalProtocolError("secret must be None or non-empty")
            _check_secret(self.secret)

    @property
    def mode(self) -> str:
        return MODE_SUBSCRIBE


@dataclass(frozen=True)
class UnsubscribeRequest:
    topic: str
    callback: str

    def __post_init__(self) -> None:
        check_url("hub.topic", self.topic)
        check_url("hub.callback", self.callback)

    @property
    def mode(self) -> str:
        return MODE_UNSUBSCRIBE


@dataclass(frozen=True)
class PublishRequest:
    """A publisher's ping (REC §6 leaves it open; ``hub.topic`` or ``hub.url``)."""

    topic: str

    def __post_init__(self) -> None:
        check_url("hub.topic", self.topic)

    @property
    def mode(self) -> str:
        return MODE_PUBLISH


HubRequest = SubscribeRequest | UnsubscribeRequest | PublishRequest


def parse_hub_request(params: Params, *, lease: LeasePolicy = DEFAULT_LEASE) -> HubRequest:
    """Validate a form POST to the hub. Raises :class:`RemoteProtocolError` (400).

    Unknown parameters are ignored (REC §5.1, websub.rocks hub test 102); a known
    ``hub.*`` parameter given twice is refused. ``hub.lease_seconds`` is clamped to
    ``lease`` on subscribe and ignored on unsubscribe (REC §5.1). An empty
    ``hub.lease_seconds`` or ``hub.secret`` counts as absent: HTML forms send empty
    inputs, and an empty HMAC key would protect nothing.
    """
    pairs = _pairs(params)
    try:
        return _hub_request(_collect(pairs), lease)
    except LocalProtocolError as exc:
        raise RemoteProtocolError(exc.message, status_hint=400) from None


def _hub_request(got: dict[str, str], lease: LeasePolicy) -> HubRequest:
    mode = got.get("hub.mode")
    if mode is None:
        raise LocalProtocolError("hub.mode is missing; send subscribe, unsubscribe or publish")
    if mode == MODE_PUBLISH:
        return _parse_publish(got)
    if mode not in (MODE_SUBSCRIBE, MODE_UNSUBSCRIBE):
        raise LocalProtocolError(
            f"hub.mode {mode!r} is not supported; send subscribe, unsubscribe or publish"
        )
    for name in ("hub.topic", "hub.callback"):
        if name not in got:
            raise LocalProtocolError(f"{name} is missing (REC §5.1)")
    topic = check_url("hub.topic", got["hub.topic"])
    callback = check_url("hub.callback", got["hub.callback"])
    if mode == MODE_UNSUBSCRIBE:
        return UnsubscribeRequest(topic=topic, callback=callback)
    requested: int | None = None
    if got.get("hub.lease_seconds"):
        requested = _parse_positive_int("hub.lease_seconds", got["hub.lease_seconds"])
    secret = got.get("hub.secret") or None
    if secret is not None:
        _check_secret(secret)
    return SubscribeRequest(
        topic=topic, callback=callback, lease_seconds=lease.clamp(requested), secret=secret
    )


def _parse_publish(got: dict[str, str]) -> PublishRequest:
    # Google's and Superfeedr's hubs use hub.url, websub.rocks and Switchboard hub.topic
    # (notes/websub.md pitfall 2): accept either, refuse two different ones.
    topic = got.get("hub.topic")
    url = got.get("hub.url")
    if topic is None and url is None:
        raise LocalProtocolError("publish needs hub.topic (or hub.url)")
    if topic is not None and url is not None and topic != url:
        raise LocalProtocolError(
            "publish names two different topics in hub.topic and hub.url; send one"
        )
    value = topic if topic is not None else url
    assert value is not None
    name = "hub.topic" if topic is not None else "hub.url"
    return PublishRequest(topic=check_url(name, value))


# ------------------------------------------------------- verification of intent (§5.3)


def new_challenge(nbytes: int = 32) -> str:
    """A random single-use challenge (REC §8.2); URL-safe so it survives any query."""
    if nbytes < 16:
        raise LocalProtocolError("a challenge needs at least 16 random bytes")
    return secrets.token_urlsafe(nbytes)


def _append_query(callback: str, params: list[tuple[str, str]]) -> str:
    # REC §5.1.1: preserve the callback's query string and append with "&".
    check_url("hub.callback", callback)
    encoded = urlencode(params)
    if "?" not in callback:
        return f"{callback}?{encoded}"
    if callback.endswith(("?", "&")):
        return callback + encoded
    return f"{callback}&{encoded}"


def build_verification_url(
    callback: str,
    *,
    mode: str,
    topic: str,
    challenge: str,
    lease_seconds: int | None = None,
) -> str:
    """The URL the hub GETs to verify intent. ``lease_seconds`` is required on subscribe."""
    if mode not in (MODE_SUBSCRIBE, MODE_UNSUBSCRIBE):
        raise LocalProtocolError(
            f"verification mode must be subscribe or unsubscribe, not {mode!r}"
        )
    check_url("hub.topic", topic)
    if not challenge:
        raise LocalProtocolError("a verification needs a non-empty challenge")
    params = [("hub.mode", mode), ("hub.topic", topic), ("hub.challenge", challenge)]
    if mode == MODE_SUBSCRIBE:
        if lease_seconds is None or isinstance(lease_seconds, bool) or lease_seconds <= 0:
            # websub.rocks (commit ced53f5) answers 404 to a subscribe verification
            # without a lease, and REC §5.3 makes it REQUIRED.
            raise LocalProtocolError("a subscribe verification needs a positive lease_seconds")
        params.append(("hub.lease_seconds", str(lease_seconds)))
    elif lease_seconds is not None:
        raise LocalProtocolError("an unsubscribe verification carries no lease_seconds")
    return _append_query(callback, params)


@dataclass(frozen=True)
class VerificationOutcome:
    """Whether the subscriber confirmed; ``reason`` says why not, for logs and the UI."""

    verified: bool
    reason: str = ""


def check_verification_response(status: int, body: bytes, challenge: str) -> VerificationOutcome:
    """REC §5.3.1: success is a 2xx whose body is exactly the challenge."""
    if not 200 <= status < 300:
        if status == 404:
            return VerificationOutcome(False, "the subscriber refused (404)")
        return VerificationOutcome(False, f"the callback answered {status}, not 2xx")
    if not hmac.compare_digest(body, challenge.encode("utf-8")):
        shown = body[:40].decode("utf-8", "replace")
        return VerificationOutcome(
            False,
            f"the callback answered {status} but its body ({len(body)} bytes, {shown!r}…) "
            "is not the hub.challenge echoed exactly",
        )
    return VerificationOutcome(True)


@dataclass(frozen=True)
class VerificationRequest:
    """A verification GET as the subscriber's callback receives it."""

    mode: str
    topic: str
    challenge: str
    lease_seconds: int | None = None

    def __post_init__(self) -> None:
        if self.mode not in (MODE_SUBSCRIBE, MODE_UNSUBSCRIBE):
            raise LocalProtocolError(
                f"verification mode must be subscribe or unsubscribe, not {self.mode!r}"
            )
        if not self.challenge:
            raise LocalProtocolError("a verification needs a non-empty challenge")
        if self.mode == MODE_SUBSCRIBE and (self.lease_seconds is None or self.lease_seconds <= 0):
            raise LocalProtocolError("a subscribe verification needs a positive lease_seconds")

    def expect(self, *, mode: str, topic: str) -> str:
        """Check it against what we asked for; return the body to answer (the challenge).

        Raises :class:`RemoteProtocolError` with status 404, which REC §5.3.1 makes the
        subscriber's refusal (websub.rocks subscriber test 205: a wrong topic → 404).
        """
        if self.mode != mode:
            raise RemoteProtocolError(
                f"hub.mode is {self.mode!r} but this callback is waiting for {mode!r}",
                status_hint=404,
            )
        if self.topic != topic:
            raise RemoteProtocolError(
                f"hub.topic {self.topic!r} is not the topic this callback subscribed to "
                f"({topic!r})",
                status_hint=404,
            )
        return self.challenge


@dataclass(frozen=True)
class Denial:
    """REC §5.2: the hub refuses (or ends) a subscription."""

    topic: str
    reason: str | None = None

    def __post_init__(self) -> None:
        check_url("hub.topic", self.topic)


def build_denial_url(callback: str, *, topic: str, reason: str | None = None) -> str:
    params = [("hub.mode", MODE_DENIED), ("hub.topic", Denial(topic, reason).topic)]
    if reason:
        params.append(("hub.reason", reason))
    return _append_query(callback, params)


def parse_callback_request(params: Params) -> VerificationRequest | Denial:
    """A GET on the subscriber's callback: a verification (§5.3) or a denial (§5.2).

    Raises :class:`RemoteProtocolError` with status 404: REC §5.3.1 has the subscriber
    answer 404 to any verification it does not accept.
    """
    pairs = _pairs(params)
    try:
        return _callback_request(_collect(pairs))
    except LocalProtocolError as exc:
        raise RemoteProtocolError(exc.message, status_hint=404) from None


def _callback_request(got: dict[str, str]) -> VerificationRequest | Denial:
    mode = got.get("hub.mode")
    topic = got.get("hub.topic")
    if topic is None:
        raise LocalProtocolError("hub.topic is missing")
    if mode == MODE_DENIED:
        return Denial(topic=check_url("hub.topic", topic), reason=got.get("hub.reason") or None)
    if mode not in (MODE_SUBSCRIBE, MODE_UNSUBSCRIBE):
        raise LocalProtocolError(f"hub.mode {mode!r} is not subscribe, unsubscribe or denied")
    challenge = got.get("hub.challenge")
    if not challenge:
        raise LocalProtocolError("hub.challenge is missing or empty")
    lease: int | None = None
    raw_lease = got.get("hub.lease_seconds")
    if mode == MODE_SUBSCRIBE:
        if not raw_lease:
            raise LocalProtocolError(
                "hub.lease_seconds is missing; REC §5.3 requires it on subscribe"
            )
        lease = _parse_positive_int("hub.lease_seconds", raw_lease)
    return VerificationRequest(mode=mode, topic=topic, challenge=challenge, lease_seconds=lease)
