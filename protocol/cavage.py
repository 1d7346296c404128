"""Profile ``cavage-rsa-sha256``: draft-cavage-http-signatures-12, as the fediverse uses it.

Header ``Signature: keyId="…",algorithm="rsa-sha256",signature="…",headers="…"`` over
``(request-target) host date digest content-type`` - what Mastodon sends and expects.

Signing uses ``cryptography`` (about 5x faster than httpsig's pycryptodome) and produces
the same bytes as ``httpsig.HeaderSigner(..., sign_header='signature')``; the tests prove
it and that httpsig's ``HeaderVerifier`` accepts our output. httpsig 1.3.0 (unmaintained
since 2018) is kept as an optional signing backend and a test oracle, behind
:func:`load_httpsig`, because verifying through it would inherit its gaps:

* it builds its verifier from the algorithm the *client* names, so ``hmac-sha256`` with
  our RSA public key PEM as the HMAC secret verifies (algorithm confusion): here the
  algorithm is pinned from the key, RSA -> ``rsa-sha256``/``hs2019`` only;
* it checks neither ``Date`` nor ``Digest``: here both are checked;
* its signer formats the header with ``%``, so a keyId containing ``%`` crashes it;
* it parses ``Signature`` leniently (duplicates silently overwrite): here duplicated,
  missing or malformed parameters are refused.
"""

from __future__ import annotations

import base64
import binascii
import datetime
import email.utils
import importlib
import re
from collections.abc import Sequence
from dataclasses import dataclass
from types import ModuleType
from typing import Literal
from urllib.parse import urlsplit

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from protocol.digest import (
    Headers,
    header_pairs,
    header_value,
    legacy_digest,
    verify_legacy_digest,
)
from protocol.errors import LocalProtocolError, ProtocolError, RemoteProtocolError
from protocol.verification import DEFAULT_SKEW, KeyLookup

__all__ = [
    "MIN_RSA_BITS",
    "PROFILE",
    "SignatureParams",
    "VerifiedCavage",
    "load_httpsig",
    "parse_signature_header",
    "required_headers",
    "sign",
    "signature_header",
    "signing_string",
    "verify",
]

PROFILE = "cavage-rsa-sha256"
#: Smaller RSA keys are refused (403): 1024-bit RSA is within reach of a determined
#: attacker. Only the draft's Appendix C test key is that small.
MIN_RSA_BITS = 2048

# What an RSA key may be verified as. hs2019 is verified as RSASSA-PKCS1-v1_5/SHA-256,
# like Mastodon does, because that is what fediverse senders mean by it in practice.
_ACCEPTED_ALGORITHMS = frozenset({"rsa-sha256", "hs2019"})
# Names the draft and its implementations define: "known but not allowed" (401) is a
# different message from "not an algorithm at all" (400).
_KNOWN_ALGORITHMS = frozenset(
    {
        "hs2019",
        "rsa-sha1",
        "rsa-sha256",
        "rsa-sha512",
        "hmac-sha1",
        "hmac-sha256",
        "hmac-sha512",
        "ecdsa-sha256",
        "ecdsa-sha512",
        "ed25519",
        "ed25519-sha512",
    }
)
_PARAM_NAMES = {
    "keyid": "keyId",
    "algorithm": "algorithm",
    "headers": "headers",
    "signature": "signature",
    "created": "created",
    "expires": "expires",
}
# name="quoted" or name=digits (created/expires are integers); no escapes - keyIds are
# URLs and none of the draft's values needs a quote inside.
_PARAM = re.compile(r'[ \t]*([A-Za-z]+)=(?:"([^"\\]*)"|([0-9]+))[ \t]*')
_KEY_ID_OK = re.compile(r"[\x21\x23-\x5b\x5d-\x7e]+")  # visible ASCII minus '"' and '\'

Backend = Literal["cryptography", "httpsig"]


def load_httpsig() -> ModuleType:
    """Import httpsig 1.3.0, or say clearly why it cannot be imported.

    Its ``__init__`` imports ``pkg_resources``, which setuptools 82 removed and which
    Python 3.12+ venvs no longer ship. Only the optional httpsig signing backend and
    the tests need it; verification and default signing do not.
    """
    try:
        # Through importlib: httpsig has no type information, and the module is all
        # this function hands back.
        return importlib.import_module("httpsig")
    except ImportError as exc:
        raise LocalProtocolError(
            f"httpsig cannot be imported ({exc}); httpsig 1.3.0 imports pkg_resources: "
            "install 'setuptools<82' next to it, or use the default 'cryptography' backend"
        ) from exc


@dataclass(frozen=True)
class SignatureParams:
    """A parsed ``Signature`` header, validated at construction."""

    key_id: str
    signature: bytes
    headers: tuple[str, ...] = ("date",)
    algorithm: str | None = None
    created: int | None = None
    expires: int | None = None

    def __post_init__(self) -> None:
        if not self.key_id:
            raise RemoteProtocolError("Signature keyId is empty", status_hint=400)
        if not self.headers or any(not name for name in self.headers):
            raise RemoteProtocolError("Signature headers parameter is empty", status_hint=400)
        if len(set(self.headers)) != len(self.headers):
            raise RemoteProtocolError(
                f"Signature headers lists a header twice: {' '.join(self.headers)}",
                status_hint=400,
            )
        pseudo = {"(created)", "(expires)"} & set(self.headers)
        if pseudo and self.algorithm not in (None, "hs2019"):
            # Draft section 2.3: (created)/(expires) with an rsa-/hmac-/ecdsa- algorithm
            # MUST produce an error (the draft's own C.3 header breaks this rule).
            raise RemoteProtocolError(
                f"{' and '.join(sorted(pseudo))} may not be signed with algorithm "
                f"{self.algorithm} (draft-cavage-12 section 2.3); use hs2019 or sign date",
                status_hint=400,
            )
        for name, param in (("(created)", self.created), ("(expires)", self.expires)):
            if name in self.headers and param is None:
                raise RemoteProtocolError(
                    f"Signature covers {name} but has no {name[1:-1]} parameter",
                    status_hint=400,
                )

    @property
    def effective_algorithm(self) -> str:
        # Draft section 2.1.3 / Mastodon: no algorithm means "derive from the key" (hs2019).
        return self.algorithm or "hs2019"


def parse_signature_header(value: str) -> SignatureParams:
    """Parse a ``Signature`` header value strictly; raise ``RemoteProtocolError(400)``."""
    found: dict[str, str] = {}
    pos = 0
    while True:
        match = _PARAM.match(value, pos)
        if match is None:
            raise RemoteProtocolError(
                f'Signature header is malformed at offset {pos}: expected name="value" '
                f"pairs separated by commas, got {value[pos : pos + 40]!r}",
                status_hint=400,
            )
        raw_name, quoted, number = match.groups()
        name = raw_name.lower()
        # Case-insensitive, so keyId and keyid cannot mean two things to two parsers.
        if name in found:
            raise RemoteProtocolError(
                f"Signature parameter {raw_name} appears twice (draft-cavage-12 section 2.2)",
                status_hint=400,
            )
        found[name] = quoted if quoted is not None else number
        pos = match.end()
        if pos == len(value):
            break
        if value[pos] != ",":
            raise RemoteProtocolError(
                f"Signature header is malformed at offset {pos}: expected ','",
                status_hint=400,
            )
        pos += 1
    for required in ("keyid", "signature"):
        if not found.get(required):
            raise RemoteProtocolError(
                f"Signature header has no {_PARAM_NAMES[required]} parameter; "
                'send keyId="…" and signature="…"',
                status_hint=400,
            )
    try:
        signature = base64.b64decode(found["signature"], validate=True)
    except (binascii.Error, ValueError) as exc:
        raise RemoteProtocolError("Signature signature is not base64", status_hint=400) from exc
    algorithm = found.get("algorithm")
    if algorithm is not None and algorithm.lower() not in _KNOWN_ALGORITHMS:
        raise RemoteProtocolError(
            f"Signature algorithm {algorithm!r} is not a draft-cavage algorithm",
            status_hint=400,
        )
    return SignatureParams(
        key_id=found["keyid"],
        signature=signature,
        headers=tuple(found["headers"].lower().split(" ")) if "headers" in found else ("date",),
        algorithm=algorithm.lower() if algorithm is not None else None,
        created=_int_param(found, "created"),
        expires=_int_param(found, "expires"),
    )


def _int_param(found: dict[str, str], name: str) -> int | None:
    raw = found.get(name)
    if raw is None:
        return None
    if not raw.isdigit():
        raise RemoteProtocolError(f"Signature {name} must be an integer", status_hint=400)
    return int(raw)


def _request_target(method: str, url: str) -> str:
    parts = urlsplit(url)
    target = parts.path or "/"
    if parts.query:
        target = f"{target}?{parts.query}"
    return f"{method.lower()} {target}"


def signing_string(
    names: Sequence[str],
    *,
    method: str,
    url: str,
    headers: Headers,
    created: int | None = None,
    expires: int | None = None,
    error: type[ProtocolError] = RemoteProtocolError,
) -> bytes:
    """Build the draft's signing string (section 2.3) for the covered *names*.

    ``host`` falls back to the URL's authority when there is no Host header (HTTP/2
    requests carry ``:authority`` instead).
    """
    pairs = header_pairs(headers)
    lines = []
    for name in names:
        if name == "(request-target)":
            value: str | None = _request_target(method, url)
        elif name == "(created)":
            value = None if created is None else str(created)
        elif name == "(expires)":
            value = None if expires is None else str(expires)
        elif name == "host":
            value = header_value(pairs, "host") or urlsplit(url).netloc or None
        else:
            value = header_value(pairs, name)
        if value is None:
            raise error(
                f"signature covers {name} but the request has no {name} header",
                status_hint=401,
            )
        if "\n" in value or "\r" in value:
            # A line break would let one header forge further lines of the string.
            raise error(f"signed value of {name} contains a line break", status_hint=400)
        lines.append(f"{name}: {value}")
    text = "\n".join(lines)
    if not text.isascii():
        raise error("a signed header value is not ASCII; it cannot be signed", status_hint=400)
    return text.encode("ascii")


def signature_header(key_id: str, algorithm: str, signature: str, names: Sequence[str]) -> str:
    """The ``Signature`` value, parameters in the order httpsig 1.3.0 writes them."""
    return (
        f'keyId="{key_id}",algorithm="{algorithm}",signature="{signature}",'
        f'headers="{" ".join(names)}"'
    )


def required_headers(body: bytes) -> tuple[str, ...]:
    """What a signature must cover: which resource, which host, when, and the body."""
    required = ["(request-target)", "host", "date"]
    if body:
        required.append("digest")
    return tuple(required)


def sign(
    method: str,
    url: str,
    headers: Headers,
    body: bytes,
    *,
    key: rsa.RSAPrivateKey,
    key_id: str,
    now: float,
    backend: Backend = "cryptography",
) -> dict[str, str]:
    """Sign a request; return the headers to add: ``Host`` (only if absent), ``Date``,
    ``Digest`` (with a body, and on every POST/PUT/PATCH), ``Signature``. They replace
    headers of the same name.
    """
    if not isinstance(key, rsa.RSAPrivateKey):
        raise LocalProtocolError(
            f"profile {PROFILE} signs with an RSAPrivateKey, not {type(key).__name__}"
        )
    if not _KEY_ID_OK.fullmatch(key_id):
        raise LocalProtocolError(
            f"keyId {key_id!r} must be visible ASCII without '\"' or '\\' "
            "(it is written inside a quoted string)"
        )
    replaced = {"signature", "date", "digest"}
    pairs = [(n, v) for n, v in header_pairs(headers) if n.lower() not in replaced]
    added: dict[str, str] = {}
    if header_value(pairs, "host") is None:
        added["Host"] = urlsplit(url).netloc
    added["Date"] = email.utils.formatdate(now, usegmt=True)
    names = ["(request-target)", "host", "date"]
    # Mastodon requires a signed digest on every POST, even an empty one.
    if body or method.upper() in {"POST", "PUT", "PATCH"}:
        added["Digest"] = legacy_digest(body)
        names.append("digest")
        if header_value(pairs, "content-type") is not None:
            names.append("content-type")
    pairs.extend(added.items())

    # httpsig fills its header template with '%', so a '%' in the keyId (a
    # percent-encoded URL) raises ValueError there; our path writes the same bytes.
    if backend == "httpsig" and "%" not in key_id:
        added["Signature"] = _httpsig_signature(key, key_id, names, method, url, pairs)
    else:
        message = signing_string(
            names, method=method, url=url, headers=pairs, error=LocalProtocolError
        )
        raw = key.sign(message, padding.PKCS1v15(), hashes.SHA256())
        added["Signature"] = signature_header(
            key_id, "rsa-sha256", base64.b64encode(raw).decode("ascii"), names
        )
    return added


def _httpsig_signature(
    key: rsa.RSAPrivateKey,
    key_id: str,
    names: Sequence[str],
    method: str,
    url: str,
    pairs: list[tuple[str, str]],
) -> str:
    httpsig = load_httpsig()
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.TraditionalOpenSSL,
        serialization.NoEncryption(),
    )
    signer = httpsig.HeaderSigner(
        key_id, pem, algorithm="rsa-sha256", headers=list(names), sign_header="signature"
    )
    # httpsig neither trims nor joins repeated fields; hand it what the draft signs.
    combined = {name.lower(): header_value(pairs, name) for name, _ in pairs}
    target = _request_target(method, url).split(" ", 1)[1]
    signed = signer.sign(combined, host=combined.get("host"), method=method, path=target)
    return str(signed["signature"])


@dataclass(frozen=True)
class VerifiedCavage:
    """What a successful verification established."""

    key_id: str
    algorithm: str
    signature: bytes
    covered: tuple[str, ...]
    date: float
    #: After this instant the Date check would refuse the request anyway.
    valid_until: float


def _parse_date(value: str | None) -> float:
    if value is None:
        raise RemoteProtocolError("Date header is missing; it is signed", status_hint=401)
    try:
        parsed = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError) as exc:
        raise RemoteProtocolError(
            f"Date {value!r} is not an HTTP date like 'Sun, 06 Nov 1994 08:49:37 GMT'",
            status_hint=400,
        ) from exc
    if parsed.tzinfo is None:  # "-0000": UTC by RFC 5322 section 3.3
        parsed = parsed.replace(tzinfo=datetime.UTC)
    return parsed.timestamp()


def _check_time(params: SignatureParams, date: float, now: float, skew: int) -> float:
    if now - date > skew:
        raise RemoteProtocolError(
            f"Date is {int(now - date)} s in the past; allowed skew is {skew} s "
            "(sign each request when it is sent, and check the sender's clock)",
            status_hint=401,
        )
    if date - now > skew:
        raise RemoteProtocolError(
            f"Date is {int(date - now)} s in the future; allowed skew is {skew} s "
            "(check the sender's clock)",
            status_hint=401,
        )
    valid_until = date + skew
    if params.created is not None:
        if params.created - now > skew:
            raise RemoteProtocolError(
                f"created is {int(params.created - now)} s in the future; allowed skew is {skew} s",
                status_hint=401,
            )
        valid_until = min(valid_until, params.created + skew)
    if params.expires is not None:
        # The sender's own limit, honoured without tolerance (as in protocol.rfc9421).
        if now > params.expires:
            raise RemoteProtocolError(
                f"signature expired {int(now - params.expires)} s ago (expires={params.expires})",
                status_hint=401,
            )
        valid_until = min(valid_until, params.expires)
    return float(valid_until)


def verify(
    method: str,
    url: str,
    headers: Headers,
    body: bytes,
    *,
    resolve_key: KeyLookup,
    now: float,
    skew: int = DEFAULT_SKEW,
    required: Sequence[str] | None = None,
    min_rsa_bits: int = MIN_RSA_BITS,
) -> VerifiedCavage:
    """Verify the request's ``Signature`` header or raise :class:`RemoteProtocolError`.

    *url* is the absolute URL as the client addressed it, with the raw path and query
    (they go into ``(request-target)`` byte for byte). *required* overrides
    :func:`required_headers`, for the draft's test vectors.
    """
    pairs = header_pairs(headers)
    raw = header_value(pairs, "signature")
    if raw is None:
        hint = ""
        if (header_value(pairs, "authorization") or "").startswith("Signature "):
            hint = "; fieldcast reads the Signature header, not Authorization: Signature"
        raise RemoteProtocolError(f"request has no Signature header{hint}", status_hint=401)
    params = parse_signature_header(raw)
    algorithm = params.effective_algorithm
    if algorithm not in _ACCEPTED_ALGORITHMS:
        raise RemoteProtocolError(
            f"algorithm {algorithm} is not accepted: profile {PROFILE} takes the algorithm "
            "from the key (RSA -> rsa-sha256 or hs2019), never from the request",
            status_hint=401,
        )
    needed = required_headers(body) if required is None else tuple(required)
    for name in needed:
        if name not in params.headers:
            raise RemoteProtocolError(
                f"signature does not cover {name}; fieldcast requires "
                f"{' '.join(needed)} for this request",
                status_hint=401,
            )
    if "date" in params.headers:
        date = _parse_date(header_value(pairs, "date"))
        valid_until = _check_time(params, date, now, skew)
    elif params.created is not None:
        date = float(params.created)
        valid_until = _check_time(params, date, now, skew)
    else:
        raise RemoteProtocolError(
            "signature covers neither date nor (created); its age cannot be bounded",
            status_hint=401,
        )
    digest = header_value(pairs, "digest")
    if digest is not None or body:
        verify_legacy_digest(digest, body)

    key = resolve_key(params.key_id)
    if key is None:
        raise RemoteProtocolError(
            f"unknown key {params.key_id!r}: no public key is known under this keyId",
            status_hint=401,
        )
    if isinstance(key, bytes | bytearray | str):
        raise LocalProtocolError(
            f"key resolver returned raw {type(key).__name__} for {params.key_id!r}; "
            "return a cryptography RSAPublicKey"
        )
    if not isinstance(key, rsa.RSAPublicKey):
        raise RemoteProtocolError(
            f"key {params.key_id!r} is a {type(key).__name__} key; profile {PROFILE} "
            "verifies RSA keys only",
            status_hint=401,
        )
    if key.key_size < min_rsa_bits:
        raise RemoteProtocolError(
            f"key {params.key_id!r} is {key.key_size}-bit RSA; this instance requires at "
            f"least {min_rsa_bits} bits",
            status_hint=403,
        )
    message = signing_string(
        params.headers,
        method=method,
        url=url,
        headers=pairs,
        created=params.created,
        expires=params.expires,
    )
    try:
        key.verify(params.signature, message, padding.PKCS1v15(), hashes.SHA256())
    except InvalidSignature as exc:
        raise RemoteProtocolError(
            f"signature by {params.key_id!r} ({algorithm}) does not verify: the key is not "
            f"the one that signed, or a covered header ({' '.join(params.headers)}) "
            "changed in transit",
            status_hint=401,
        ) from exc
    return VerifiedCavage(
        key_id=params.key_id,
        algorithm=algorithm,
        signature=params.signature,
        covered=params.headers,
        date=date,
        valid_until=valid_until,
    )
