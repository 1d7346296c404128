"""WebSub messages, sans-IO (W3C WebSub Recommendation, 2018-01-23).

Everything here takes decoded form parameters, header values, bytes and a challenge,
and returns value objects, URLs or header values. The caller does the HTTP.

* Hub side: :func:`parse_hub_request` (subscribe / unsubscribe / publish, REC §5.1, §6),
  :func:`build_verification_url` (§5.3), :func:`check_verification_response` (§5.3.1),
  :func:`build_denial_url` (§5.2), :func:`sign_body` (§7.1).
* Subscriber side: :func:`parse_callback_request` and :meth:`VerificationRequest.expect`
  (§5.3, websub.rocks subscriber test 205), :func:`verify_hub_signature` (§7.1.2),
  :func:`parse_link_header` / :func:`discover` (§4, RFC 8288).
* State: :func:`transition` over :data:`SUBSCRIPTION_TRANSITIONS` and
  :data:`DELIVERY_TRANSITIONS` (explicit tables, as h11's ``_state.py``).
"""

from __future__ import annotations

import hmac
import secrets
import string
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, Final
from urllib.parse import parse_qsl, urlencode, urljoin, urlsplit

from protocol.errors import LocalProtocolError, ProtocolError, RemoteProtocolError

__all__ = [
    "DEFAULT_LEASE",
    "DELIVERY_TRANSITIONS",
    "SIGNATURE_METHODS",
    "SUBSCRIPTION_TRANSITIONS",
    "DeliveryEvent",
    "DeliveryState",
    "Denial",
    "Discovery",
    "LeasePolicy",
    "Link",
    "PublishRequest",
    "SubscribeRequest",
    "SubscriptionEvent",
    "SubscriptionState",
    "UnsubscribeRequest",
    "VerificationOutcome",
    "VerificationRequest",
    "build_denial_url",
    "build_link_header",
    "build_verification_url",
    "check_verification_response",
    "decode_form",
    "discover",
    "new_challenge",
    "parse_callback_request",
    "parse_hub_request",
    "parse_link_header",
    "sign_body",
    "transition",
    "verify_hub_signature",
]

MODE_SUBSCRIBE: Final = "subscribe"
MODE_UNSUBSCRIBE: Final = "unsubscribe"
MODE_PUBLISH: Final = "publish"
MODE_DENIED: Final = "denied"

#: REC §5.1: hub.secret "MUST be less than 200 bytes in length".
SECRET_MAX_BYTES: Final = 199
#: REC §7.1.1, strongest first; :func:`sign_body` defaults to sha256 (REC §8.3 prefers
#: sha256 or better over sha1).
SIGNATURE_METHODS: Final = ("sha512", "sha384", "sha256", "sha1")

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
            return [(k, v) for k in params for v in getlist(k)]
        out: list[tuple[str, str]] = []
        for key, value in params.items():
            if isinstance(value, str):
                out.append((key, value))
            else:
                out.extend((key, v) for v in value)
        return out
    return [(k, v) for k, v in params]


def _collect(params: Params, error: type[ProtocolError], status: int) -> dict[str, str]:
    """The known ``hub.*`` parameters, each at most once."""
    seen: dict[str, str] = {}
    for key, value in _pairs(params):
        if not isinstance(key, str) or not isinstance(value, str):
            raise LocalProtocolError("form parameters must be decoded to str before parsing")
        if key not in _KNOWN_PARAMS:
            continue
        if key in seen:
            # Two hub.topic values would make "which one did we verify?" ambiguous.
            raise error(f"{key} is given more than once; send it exactly once", status_hint=status)
        seen[key] = value
    return seen


def _check_url(
    name: str,
    value: str,
    error: type[ProtocolError],
    status: int = 400,
) -> str:
    if not value:
        raise error(
            f"{name} is empty; it must be an absolute http or https URL", status_hint=status
        )
    if any(c.isspace() or ord(c) < 0x20 or ord(c) == 0x7F for c in value):
        raise error(
            f"{name} contains whitespace or control characters: {value!r}", status_hint=status
        )
    try:
        parts = urlsplit(value)
        parts.port  # noqa: B018 - raises ValueError on a malformed port
    except ValueError as exc:
        raise error(f"{name} is not a valid URL ({exc}): {value!r}", status_hint=status) from exc
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise error(
            f"{name} must be an absolute http or https URL with a host, got {value!r}",
            status_hint=status,
        )
    if "#" in value:
        # A fragment never reaches the server, so two callbacks differing only in their
        # fragment would be the same endpoint under two subscription keys.
        raise error(f"{name} must not contain a fragment (#...): {value!r}", status_hint=status)
    return value


def _parse_positive_int(name: str, value: str, error: type[ProtocolError], status: int) -> int:
    # int() would accept " 7", "+7", "7_000" and non-ASCII digits; the REC asks for a
    # positive integer, so accept plain ASCII digits only.
    if not value.isascii() or not value.isdigit():
        raise error(f"{name} must be a positive integer, got {value!r}", status_hint=status)
    if len(value) > _MAX_LEASE_DIGITS:
        raise error(f"{name} is too large ({len(value)} digits)", status_hint=status)
    number = int(value)
    if number <= 0:
        raise error(f"{name} must be a positive integer, got {value!r}", status_hint=status)
    return number


def _check_secret(secret: str, error: type[ProtocolError]) -> None:
    size = len(secret.encode("utf-8"))
    if size > SECRET_MAX_BYTES:
        raise error(
            f"hub.secret is {size} bytes; WebSub requires less than 200 bytes (REC §5.1)",
            status_hint=400,
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
        _check_url("hub.topic", self.topic, LocalProtocolError)
        _check_url("hub.callback", self.callback, LocalProtocolError)
        if isinstance(self.lease_seconds, bool) or self.lease_seconds <= 0:
            raise LocalProtocolError(f"lease_seconds must be positive, got {self.lease_seconds}")
        if self.secret is not None:
            if not self.secret:
                raise LocalProtocolError("secret must be None or non-empty")
            _check_secret(self.secret, LocalProtocolError)

    @property
    def mode(self) -> str:
        return MODE_SUBSCRIBE


@dataclass(frozen=True)
class UnsubscribeRequest:
    topic: str
    callback: str

    def __post_init__(self) -> None:
        _check_url("hub.topic", self.topic, LocalProtocolError)
        _check_url("hub.callback", self.callback, LocalProtocolError)

    @property
    def mode(self) -> str:
        return MODE_UNSUBSCRIBE


@dataclass(frozen=True)
class PublishRequest:
    """A publisher's ping (REC §6 leaves it open; ``hub.topic`` or ``hub.url``)."""

    topic: str

    def __post_init__(self) -> None:
        _check_url("hub.topic", self.topic, LocalProtocolError)

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
    got = _collect(params, RemoteProtocolError, 400)
    mode = got.get("hub.mode")
    if mode is None:
        raise RemoteProtocolError(
            "hub.mode is missing; send subscribe, unsubscribe or publish", status_hint=400
        )
    if mode == MODE_PUBLISH:
        return _parse_publish(got)
    if mode not in (MODE_SUBSCRIBE, MODE_UNSUBSCRIBE):
        raise RemoteProtocolError(
            f"hub.mode {mode!r} is not supported; send subscribe, unsubscribe or publish",
            status_hint=400,
        )
    for name in ("hub.topic", "hub.callback"):
        if name not in got:
            raise RemoteProtocolError(f"{name} is missing (REC §5.1)", status_hint=400)
    topic = _check_url("hub.topic", got["hub.topic"], RemoteProtocolError)
    callback = _check_url("hub.callback", got["hub.callback"], RemoteProtocolError)
    if mode == MODE_UNSUBSCRIBE:
        return UnsubscribeRequest(topic=topic, callback=callback)
    requested: int | None = None
    if got.get("hub.lease_seconds"):
        requested = _parse_positive_int(
            "hub.lease_seconds", got["hub.lease_seconds"], RemoteProtocolError, 400
        )
    secret = got.get("hub.secret") or None
    if secret is not None:
        _check_secret(secret, RemoteProtocolError)
    return SubscribeRequest(
        topic=topic, callback=callback, lease_seconds=lease.clamp(requested), secret=secret
    )


def _parse_publish(got: dict[str, str]) -> PublishRequest:
    # Google's and Superfeedr's hubs use hub.url, websub.rocks and Switchboard hub.topic
    # (notes/websub.md pitfall 2): accept either, refuse two different ones.
    topic = got.get("hub.topic")
    url = got.get("hub.url")
    if topic is None and url is None:
        raise RemoteProtocolError("publish needs hub.topic (or hub.url)", status_hint=400)
    if topic is not None and url is not None and topic != url:
        raise RemoteProtocolError(
            "publish names two different topics in hub.topic and hub.url; send one",
            status_hint=400,
        )
    value = topic if topic is not None else url
    assert value is not None
    name = "hub.topic" if topic is not None else "hub.url"
    return PublishRequest(topic=_check_url(name, value, RemoteProtocolError))


# ------------------------------------------------------- verification of intent (§5.3)


def new_challenge(nbytes: int = 32) -> str:
    """A random single-use challenge (REC §8.2); URL-safe so it survives any query."""
    if nbytes < 16:
        raise LocalProtocolError("a challenge needs at least 16 random bytes")
    return secrets.token_urlsafe(nbytes)


def _append_query(callback: str, params: list[tuple[str, str]]) -> str:
    # REC §5.1.1: preserve the callback's query string and append with "&".
    _check_url("hub.callback", callback, LocalProtocolError)
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
    _check_url("hub.topic", topic, LocalProtocolError)
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
        _check_url("hub.topic", self.topic, LocalProtocolError)


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
    got = _collect(params, RemoteProtocolError, 404)
    mode = got.get("hub.mode")
    topic = got.get("hub.topic")
    if topic is None:
        raise RemoteProtocolError("hub.topic is missing", status_hint=404)
    if mode == MODE_DENIED:
        return Denial(
            topic=_check_url("hub.topic", topic, RemoteProtocolError, 404),
            reason=got.get("hub.reason") or None,
        )
    if mode not in (MODE_SUBSCRIBE, MODE_UNSUBSCRIBE):
        raise RemoteProtocolError(
            f"hub.mode {mode!r} is not subscribe, unsubscribe or denied", status_hint=404
        )
    challenge = got.get("hub.challenge")
    if not challenge:
        raise RemoteProtocolError("hub.challenge is missing or empty", status_hint=404)
    lease: int | None = None
    raw_lease = got.get("hub.lease_seconds")
    if mode == MODE_SUBSCRIBE:
        if not raw_lease:
            raise RemoteProtocolError(
                "hub.lease_seconds is missing; REC §5.3 requires it on subscribe",
                status_hint=404,
            )
        lease = _parse_positive_int("hub.lease_seconds", raw_lease, RemoteProtocolError, 404)
    return VerificationRequest(mode=mode, topic=topic, challenge=challenge, lease_seconds=lease)


# ------------------------------------------------------------- X-Hub-Signature (§7.1)


def _key(secret: str | bytes) -> bytes:
    key = secret.encode("utf-8") if isinstance(secret, str) else secret
    if not key:
        raise LocalProtocolError("an X-Hub-Signature needs a non-empty secret")
    return key


def sign_body(body: bytes, secret: str | bytes, method: str = "sha256") -> str:
    """``X-Hub-Signature`` value: ``method=<lowercase hex HMAC of the exact body>``.

    Call it with the very bytes that go on the wire (notes/websub.md pitfall 6), and
    only when the subscriber gave a secret (pitfall 7, websub.rocks hub test 100).
    """
    if method not in SIGNATURE_METHODS:
        raise LocalProtocolError(f"X-Hub-Signature method must be one of {SIGNATURE_METHODS}")
    return f"{method}={hmac.new(_key(secret), body, method).hexdigest()}"


def verify_hub_signature(header: str | None, body: bytes, secret: str | bytes) -> str:
    """Check ``X-Hub-Signature``; return the method. Any failure raises (status 403).

    REC §7.1.2: the subscriber MUST ignore the content of a distribution that fails
    this check (it MAY still answer 2xx; websub.rocks test 302 expects non-2xx for a
    missing signature, which ``status_hint`` gives).
    """
    key = _key(secret)
    if header is None or not header.strip():
        raise RemoteProtocolError(
            "X-Hub-Signature is missing, but this subscription has a secret; "
            "the content is ignored",
            status_hint=403,
        )
    method, sep, hexsig = header.strip().partition("=")
    method = method.strip().lower()
    if not sep:
        raise RemoteProtocolError(
            "X-Hub-Signature must be method=hexsignature (e.g. sha256=…)", status_hint=403
        )
    if method not in SIGNATURE_METHODS:
        raise RemoteProtocolError(
            f"X-Hub-Signature method {method!r} is not one of sha1, sha256, sha384, sha512",
            status_hint=403,
        )
    try:
        given = bytes.fromhex(hexsig.strip())
    except ValueError as exc:
        raise RemoteProtocolError(
            "X-Hub-Signature value is not hexadecimal", status_hint=403
        ) from exc
    expected = hmac.new(key, body, method).digest()
    # Constant-time: a timing leak would let an attacker forge the HMAC byte by byte.
    if not hmac.compare_digest(given, expected):
        raise RemoteProtocolError(
            f"X-Hub-Signature does not match the body ({method} HMAC over the exact bytes "
            "received, keyed with hub.secret); the content is ignored",
            status_hint=403,
        )
    return method


# ----------------------------------------------------------- Link headers (§4, RFC 8288)


@dataclass(frozen=True)
class Link:
    """One link-value: the target and its parameters (names lower-cased)."""

    target: str
    params: tuple[tuple[str, str], ...] = ()

    @property
    def rels(self) -> tuple[str, ...]:
        # RFC 8288 §3.3: rel is a space-separated list, compared case-insensitively;
        # occurrences after the first MUST be ignored.
        for name, value in self.params:
            if name == "rel":
                return tuple(r.lower() for r in value.split())
        return ()

    def param(self, name: str) -> str | None:
        for key, value in self.params:
            if key == name.lower():
                return value
        return None


def _quote(value: str) -> str:
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def build_link_header(*, hub: str | Sequence[str], self_url: str) -> str:
    """One combined ``Link`` value with every hub and the self URL (REC §7: SHOULD combine)."""
    hubs = [hub] if isinstance(hub, str) else list(hub)
    if not hubs:
        raise LocalProtocolError("a Link header needs at least one hub (REC §4)")
    for url in [*hubs, self_url]:
        _check_url("link target", url, LocalProtocolError)
        if ">" in url or "<" in url:
            raise LocalProtocolError(f"link target must not contain < or >: {url!r}")
    parts = [f"<{url}>; rel={_quote('hub')}" for url in hubs]
    parts.append(f"<{self_url}>; rel={_quote('self')}")
    return ", ".join(parts)


# RFC 9110 §5.6.2 tchar.
_TOKEN_CHARS: Final = frozenset(string.ascii_letters + string.digits + "!#$%&'*+-.^_`|~")


class _LinkParser:
    def __init__(self, text: str) -> None:
        self.text = text
        self.pos = 0

    def fail(self, what: str) -> RemoteProtocolError:
        # 502: the header came from the server we fetched, and it is that server's bug.
        return RemoteProtocolError(
            f"malformed Link header at character {self.pos}: {what} in {self.text!r}",
            status_hint=502,
        )

    def skip_ws(self) -> None:
        while self.pos < len(self.text) and self.text[self.pos] in " \t":
            self.pos += 1

    def peek(self) -> str:
        return self.text[self.pos] if self.pos < len(self.text) else ""

    def token(self) -> str:
        start = self.pos
        while self.pos < len(self.text) and self.text[self.pos] in _TOKEN_CHARS:
            self.pos += 1
        if start == self.pos:
            raise self.fail("expected a token")
        return self.text[start : self.pos]

    def quoted(self) -> str:
        self.pos += 1  # opening quote
        out = []
        while self.pos < len(self.text):
            char = self.text[self.pos]
            if char == "\\":
                if self.pos + 1 >= len(self.text):
                    break
                out.append(self.text[self.pos + 1])
                self.pos += 2
            elif char == '"':
                self.pos += 1
                return "".join(out)
            else:
                out.append(char)
                self.pos += 1
        raise self.fail("unterminated quoted string")

    def links(self) -> list[Link]:
        result: list[Link] = []
        while True:
            self.skip_ws()
            if self.pos >= len(self.text):
                return result
            if self.peek() == ",":  # RFC 9110 #rule: empty list elements are allowed
                self.pos += 1
                continue
            result.append(self.link())
            self.skip_ws()
            if self.pos < len(self.text):
                if self.peek() != ",":
                    raise self.fail("expected ',' between links")
                self.pos += 1

    def link(self) -> Link:
        if self.peek() != "<":
            raise self.fail("expected '<'")
        end = self.text.find(">", self.pos)
        if end < 0:
            raise self.fail("missing '>'")
        target = self.text[self.pos + 1 : end].strip()
        self.pos = end + 1
        params: list[tuple[str, str]] = []
        while True:
            self.skip_ws()
            if self.peek() != ";":
                return Link(target, tuple(params))
            self.pos += 1
            self.skip_ws()
            if self.peek() in (",", ""):  # a stray trailing ';'
                return Link(target, tuple(params))
            name = self.token().lower()
            self.skip_ws()
            value = ""
            if self.peek() == "=":
                self.pos += 1
                self.skip_ws()
                value = self.quoted() if self.peek() == '"' else self.token()
            params.append((name, value))


def parse_link_header(values: str | Iterable[str], *, base_url: str | None = None) -> list[Link]:
    """Parse one or more ``Link`` header values (RFC 8288 §3) into links, in order.

    Relative targets are resolved against ``base_url`` (RFC 8288 §3.2) when given.
    """
    texts = [values] if isinstance(values, str) else list(values)
    links: list[Link] = []
    for text in texts:
        links.extend(_LinkParser(text).links())
    if base_url is not None:
        links = [Link(urljoin(base_url, link.target), link.params) for link in links]
    return links


@dataclass(frozen=True)
class Discovery:
    """Hubs (in header order) and the self URL from a topic's ``Link`` headers."""

    hubs: tuple[str, ...]
    self_url: str | None


def discover(values: str | Iterable[str], *, base_url: str | None = None) -> Discovery:
    """REC §4 discovery from HTTP ``Link`` headers; more than one ``rel=self`` is refused."""
    hubs: list[str] = []
    selves: list[str] = []
    for link in parse_link_header(values, base_url=base_url):
        if "hub" in link.rels:
            hubs.append(link.target)
        if "self" in link.rels:
            selves.append(link.target)
    if len(set(selves)) > 1:
        raise RemoteProtocolError(
            f"the topic advertises {len(selves)} different rel=self URLs; WebSub allows one",
            status_hint=502,
        )
    return Discovery(tuple(hubs), selves[0] if selves else None)


# ------------------------------------------------------------- state tables (h11 style)


class SubscriptionState(StrEnum):
    PENDING_VERIFICATION = "pending_verification"
    ACTIVE = "active"
    EXPIRED = "expired"
    DENIED = "denied"
    UNSUBSCRIBED = "unsubscribed"


class SubscriptionEvent(StrEnum):
    SUBSCRIBE_REQUESTED = "subscribe_requested"
    VERIFIED = "verified"
    VERIFICATION_FAILED = "verification_failed"
    DENIED = "denied"
    UNSUBSCRIBE_REQUESTED = "unsubscribe_requested"
    UNSUBSCRIBE_VERIFIED = "unsubscribe_verified"
    LEASE_EXPIRED = "lease_expired"
    CALLBACK_GONE = "callback_gone"


_S = SubscriptionState
_SE = SubscriptionEvent

#: (state, event) -> next state, for one (topic, callback) pair. Anything absent is a bug.
SUBSCRIPTION_TRANSITIONS: Final[
    Mapping[tuple[SubscriptionState, SubscriptionEvent], SubscriptionState]
] = {
    # A repeated request before verification replaces the pending one (new challenge).
    (_S.PENDING_VERIFICATION, _SE.SUBSCRIBE_REQUESTED): _S.PENDING_VERIFICATION,
    (_S.PENDING_VERIFICATION, _SE.VERIFIED): _S.ACTIVE,
    # The subscriber did not confirm: the subscription never came into being.
    (_S.PENDING_VERIFICATION, _SE.VERIFICATION_FAILED): _S.DENIED,
    (_S.PENDING_VERIFICATION, _SE.DENIED): _S.DENIED,
    (_S.PENDING_VERIFICATION, _SE.UNSUBSCRIBE_VERIFIED): _S.UNSUBSCRIBED,
    # REC §5.1: a re-request overrides the state "only once the action is verified";
    # a failed re-verification leaves the active subscription as it was (hub test 103).
    (_S.ACTIVE, _SE.SUBSCRIBE_REQUESTED): _S.ACTIVE,
    (_S.ACTIVE, _SE.VERIFIED): _S.ACTIVE,  # lease renewed
    (_S.ACTIVE, _SE.VERIFICATION_FAILED): _S.ACTIVE,
    (_S.ACTIVE, _SE.UNSUBSCRIBE_REQUESTED): _S.ACTIVE,
    (_S.ACTIVE, _SE.UNSUBSCRIBE_VERIFIED): _S.UNSUBSCRIBED,
    (_S.ACTIVE, _SE.LEASE_EXPIRED): _S.EXPIRED,  # REC §5.3.1: MUST enforce leases
    (_S.ACTIVE, _SE.DENIED): _S.DENIED,  # REC §5.2: a denial may come at any time
    (_S.ACTIVE, _SE.CALLBACK_GONE): _S.UNSUBSCRIBED,  # REC §7: 410 Gone
    # Re-subscribe after the end of a subscription starts over.
    (_S.EXPIRED, _SE.SUBSCRIBE_REQUESTED): _S.PENDING_VERIFICATION,
    (_S.DENIED, _SE.SUBSCRIBE_REQUESTED): _S.PENDING_VERIFICATION,
    (_S.UNSUBSCRIBED, _SE.SUBSCRIBE_REQUESTED): _S.PENDING_VERIFICATION,
}


class DeliveryState(StrEnum):
    PENDING = "pending"
    IN_FLIGHT = "in_flight"
    DONE = "done"
    RETRY = "retry"
    DEAD = "dead"


class DeliveryEvent(StrEnum):
    CLAIMED = "claimed"  # a worker took it
    SUCCEEDED = "succeeded"  # 2xx
    FAILED = "failed"  # other status, timeout, connection error: retry later
    RELEASED = "released"  # the worker died or its claim timed out
    GONE = "gone"  # 410: the subscriber deleted the subscription
    GAVE_UP = "gave_up"  # retry limit reached, or the subscription ended


_D = DeliveryState
_DE = DeliveryEvent

DELIVERY_TRANSITIONS: Final[Mapping[tuple[DeliveryState, DeliveryEvent], DeliveryState]] = {
    (_D.PENDING, _DE.CLAIMED): _D.IN_FLIGHT,
    (_D.PENDING, _DE.GAVE_UP): _D.DEAD,
    (_D.IN_FLIGHT, _DE.SUCCEEDED): _D.DONE,
    (_D.IN_FLIGHT, _DE.FAILED): _D.RETRY,
    # A crashed worker must not lose the delivery (DESIGN.md: nothing lost on restart).
    (_D.IN_FLIGHT, _DE.RELEASED): _D.PENDING,
    (_D.IN_FLIGHT, _DE.GONE): _D.DEAD,
    (_D.IN_FLIGHT, _DE.GAVE_UP): _D.DEAD,
    (_D.RETRY, _DE.CLAIMED): _D.IN_FLIGHT,
    (_D.RETRY, _DE.GAVE_UP): _D.DEAD,
}


def transition(
    state: SubscriptionState | DeliveryState, event: SubscriptionEvent | DeliveryEvent
) -> SubscriptionState | DeliveryState:
    """The next state, or :class:`LocalProtocolError` if the tables forbid the move."""
    table: Mapping[Any, Any]
    if isinstance(state, SubscriptionState) and isinstance(event, SubscriptionEvent):
        table = SUBSCRIPTION_TRANSITIONS
    elif isinstance(state, DeliveryState) and isinstance(event, DeliveryEvent):
        table = DELIVERY_TRANSITIONS
    else:
        raise LocalProtocolError(
            f"event {event!r} does not belong to the state machine of {state!r}"
        )
    try:
        return table[(state, event)]
    except KeyError:
        raise LocalProtocolError(
            f"{type(state).__name__} {state.value!r} does not allow event {event.value!r}"
        ) from None
