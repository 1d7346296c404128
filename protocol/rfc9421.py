"""Profile ``rfc9421-ed25519``: RFC 9421 HTTP Message Signatures, fieldcast's default.

Signature bases are built and checked by the ``http-message-signatures`` package; this
module adds what that package leaves to the caller:

* the algorithm is pinned from the key the resolver returns, never taken from the
  peer's ``alg`` parameter (an Ed25519 key only ever verifies Ed25519);
* ``created``/``expires`` are checked against an injected clock (the package reads the
  wall clock, which a sans-IO function must not);
* the covered components are checked against fieldcast's policy before anything else;
* ``Content-Digest`` is recomputed from the body we actually received.
"""

from __future__ import annotations

import base64
import datetime
import re
import secrets
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import http_sf
from cryptography.exceptions import InvalidSignature as CryptoInvalidSignature
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.asymmetric.ed25519 import (
    Ed25519PrivateKey,
    Ed25519PublicKey,
)
from http_message_signatures import (
    HTTPMessageSignaturesException,
    HTTPMessageSigner,
    HTTPMessageVerifier,
    HTTPSignatureKeyResolver,
    PreparedSignature,
    algorithms,
)

from protocol.digest import (
    Headers,
    content_digest,
    header_pairs,
    header_value,
    parse_dictionary,
    verify_content_digest,
)
from protocol.errors import LocalProtocolError, RemoteProtocolError
from protocol.verification import DEFAULT_SKEW, KeyLookup

__all__ = [
    "DEFAULT_LABEL",
    "DEFAULT_VALIDITY",
    "PROFILE",
    "HmacSecret",
    "SignatureInput",
    "VerifiedRFC9421",
    "parse_signature_input",
    "required_components",
    "sign",
    "signature_base",
    "verify",
]

PROFILE = "rfc9421-ed25519"
#: ``expires`` = ``created`` + this, so a captured request is useless after 5 minutes.
DEFAULT_VALIDITY = 300
#: The label is not covered by the signature; any name works, this one is conventional.
DEFAULT_LABEL = "sig1"

_SIGNATURE_HEADERS = frozenset({"signature", "signature-input"})
_ALLOWED_PARAMS = frozenset({"created", "expires", "keyid", "alg", "nonce", "tag"})

# The fast signing path (see _fast_prepare) takes only inputs whose serialization is
# certain; anything else goes through the package, which then decides (or refuses).
# An absolute http(s) URL of RFC 3986 characters, no user info, no fragment, no IPv6
# literal: the package's @target-uri of it is the URL itself, "/" for an empty path.
_URL_CHAR = r"(?:[A-Za-z0-9._~!$&'()*+,;=:@/\-]|%[0-9A-Fa-f]{2})"
_FAST_URL = re.compile(
    r"(?P<origin>https?://[A-Za-z0-9._~!$&'()*+,;=-]+(?::[0-9]*)?)"
    rf"(?P<path>/{_URL_CHAR}*)?(?P<query>\?(?:{_URL_CHAR}|\?)*)?"
)
# An sf-string (RFC 8941 section 3.3.3) holds printable ASCII only; '"' and '\\' are
# escaped. A field value in the base is printable ASCII, internal tabs allowed.
_SF_STRING = re.compile(r"[\x20-\x7e]*")
_FIELD_VALUE = re.compile(r"[\x20-\x7e\t]*")
_SF_KEY = re.compile(r"[a-z*][a-z0-9_\-.*]*")
# RFC 8941 section 3.3.1: at most 15 digits. Below year 10000 for datetime, too, and
# not 0 (the package leaves out an ``expires`` that is 0).
_MAX_TIME = 253_402_300_799


@dataclass(frozen=True)
class HmacSecret:
    """A shared secret for ``hmac-sha256``.

    A distinct type instead of bare ``bytes`` so that a public key in PEM bytes can
    never be mistaken for an HMAC secret (the algorithm-confusion attack: whoever
    knows the public key could then "sign").
    """

    value: bytes = field(repr=False)

    def __post_init__(self) -> None:
        if not isinstance(self.value, bytes):
            raise LocalProtocolError("HmacSecret value must be bytes")
        # RFC 2104 section 3: keys shorter than the hash output weaken HMAC.
        if len(self.value) < 32:
            raise LocalProtocolError(
                f"HMAC secret is {len(self.value)} bytes; hmac-sha256 needs at least 32"
            )


class _HeaderLines:
    """Read-only header view in the shape ``http-message-signatures`` reads.

    Repeated lines stay separate; the package joins them as RFC 9421 section 2.1 says.
    Never written to: we add Content-Digest ourselves and serialize the signature
    headers ourselves.
    """

    def __init__(self, pairs: list[tuple[str, str]]) -> None:
        self._pairs = pairs

    def items(self) -> list[tuple[str, str]]:
        return list(self._pairs)

    def __iter__(self) -> Iterator[str]:
        return iter(dict.fromkeys(name for name, _ in self._pairs))

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and any(n.lower() == name.lower() for n, _ in self._pairs)


@dataclass
class _LibRequest:
    """The request shape the package's component resolver expects; no HTTP library."""

    method: str
    url: str
    headers: _HeaderLines


class _SingleKey(HTTPSignatureKeyResolver):
    """Hands the package exactly the key we already resolved and type-checked."""

    def __init__(self, key_id: str, key: Any) -> None:
        self._key_id = key_id
        self._key = key

    def resolve_public_key(self, key_id: str) -> Any:
        return self._key if key_id == self._key_id else None


class _InjectedClockVerifier(HTTPMessageVerifier):
    def validate_created_and_expires(self, sig_input: Any, max_age: Any = None) -> None:
        # The package compares against datetime.now(); verify() has already checked
        # created/expires against the caller's clock, which is what tests and
        # replay windows depend on.
        return None


@dataclass(frozen=True)
class SignatureInput:
    """One signature from ``Signature-Input`` + ``Signature``, validated at construction."""

    label: str
    components: tuple[str, ...]
    key_id: str
    created: int
    signature: bytes
    expires: int | None = None
    alg: str | None = None
    nonce: str | None = None

    def __post_init__(self) -> None:
        if not self.key_id:
            raise RemoteProtocolError(
                f"signature {self.label!r} has an empty keyid", status_hint=400
            )
        if self.expires is not None and self.expires < self.created:
            raise RemoteProtocolError(
                f"signature {self.label!r} expires ({self.expires}) before it was "
                f"created ({self.created})",
                status_hint=400,
            )
        if len(set(self.components)) != len(self.components):
            raise RemoteProtocolError(
                f"signature {self.label!r} lists a component twice", status_hint=400
            )


@dataclass(frozen=True)
class VerifiedRFC9421:
    """What a successful verification established."""

    key_id: str
    algorithm: str
    label: str
    created: int
    expires: int | None
    signature: bytes
    covered: tuple[str, ...]
    #: After this instant the time checks would refuse the signature anyway, so a
    #: replay cache need not remember it longer.
    valid_until: float


def _key_kind(key: object) -> str:
    if isinstance(key, Ed25519PublicKey | Ed25519PrivateKey):
        return "ed25519"
    if isinstance(key, rsa.RSAPublicKey | rsa.RSAPrivateKey):
        return "RSA"
    if isinstance(key, ec.EllipticCurvePublicKey | ec.EllipticCurvePrivateKey):
        return "EC"
    return type(key).__name__


def _pinned_algorithm(key: object, key_id: str) -> type[algorithms.HTTPSignatureAlgorithm]:
    """The only algorithm *key* may verify with (RFC 9421 section 3.3.7: from the key)."""
    if isinstance(key, Ed25519PublicKey):
        return algorithms.ED25519
    if isinstance(key, HmacSecret):
        return algorithms.HMAC_SHA256
    if isinstance(key, bytes | bytearray | str):
        raise LocalProtocolError(
            f"key resolver returned raw {type(key).__name__} for {key_id!r}; return a "
            "cryptography public key object, or HmacSecret for a shared secret"
        )
    raise RemoteProtocolError(
        f"key {key_id!r} is a {_key_kind(key)} key; profile {PROFILE} verifies ed25519 "
        "keys (and hmac-sha256 shared secrets) only",
        status_hint=401,
    )


def _signing_algorithm(key: object) -> type[algorithms.HTTPSignatureAlgorithm]:
    if isinstance(key, Ed25519PrivateKey):
        return algorithms.ED25519
    if isinstance(key, HmacSecret):
        return algorithms.HMAC_SHA256
    raise LocalProtocolError(
        f"profile {PROFILE} signs with an Ed25519PrivateKey or an HmacSecret, "
        f"not {type(key).__name__}"
    )


def _lib_key(key: object) -> Any:
    return key.value if isinstance(key, HmacSecret) else key


def _utc(timestamp: int) -> datetime.datetime:
    return datetime.datetime.fromtimestamp(timestamp, tz=datetime.UTC)


def _validate_method_url(method: str, url: str, error: type[Exception]) -> None:
    if not method or not method.isascii() or not method.isalpha() or method != method.upper():
        raise error(f"HTTP method {method!r} must be an upper-case token such as POST")
    if "://" not in url:
        raise error(f"URL {url!r} must be absolute (scheme://host/path), as @target-uri is")


def required_components(pairs: Sequence[tuple[str, str]], body: bytes) -> tuple[str, ...]:
    """fieldcast's policy: what a signature on this request must cover.

    ``@method`` and ``@target-uri`` always (which resource, which action);
    ``content-digest`` when there is a body (the signature covers the body only through
    it); ``content-type`` when present (the same bytes mean something else as another
    type).
    """
    required = ["@method", "@target-uri"]
    if body or header_value(pairs, "content-digest") is not None:
        required.append("content-digest")
    if header_value(pairs, "content-type") is not None:
        required.append("content-type")
    return tuple(required)


def _prepare(
    method: str,
    url: str,
    pairs: list[tuple[str, str]],
    *,
    algorithm: type[algorithms.HTTPSignatureAlgorithm],
    components: Sequence[str],
    created: int,
    key_id: str,
    include_alg: bool,
    expires: int | None,
    nonce: str | None,
    label: str = DEFAULT_LABEL,
) -> PreparedSignature:
    message = _LibRequest(method, url, _HeaderLines(pairs))
    try:
        return HTTPMessageSigner(signature_algorithm=algorithm).prepare(
            message,
            key_id=key_id,
            created=_utc(created),
            expires=_utc(expires) if expires is not None else None,
            nonce=nonce,
            label=label,
            include_alg=include_alg,
            covered_component_ids=tuple(components),
            use_existing_digest="content-digest" in message.headers,
        )
    except HTTPMessageSignaturesException as exc:
        raise LocalProtocolError(f"cannot build the signature base: {exc}") from exc


def _sf_string(value: str) -> str:
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _fast_prepare(
    method: str,
    url: str,
    pairs: list[tuple[str, str]],
    *,
    algorithm: type[algorithms.HTTPSignatureAlgorithm],
    components: Sequence[str],
    created: int,
    key_id: str,
    expires: int,
    nonce: str,
    label: str,
) -> PreparedSignature | None:
    """The signature base and ``@signature-params`` for what :func:`sign` covers, built
    without the package; ``None`` when an input is not one this path is sure of.

    Why: the package builds every base generically - component ids parsed as
    Structured Fields, the URL matched by a large regex, and every string serialized
    by ``http_sf`` one character at a time - about 80 % of signing (340 of 430 us,
    Ed25519 itself 85 us), on every ping the delivery worker sends. fieldcast signs one
    fixed shape: ``@method``, ``@target-uri``, ``content-digest`` (ours, computed in
    :func:`sign`), ``content-type``; ``created``, ``keyid``, ``alg``, ``expires``,
    ``nonce``. For that shape the serialization is a few string joins. Verification
    still goes through the package (:func:`verify`), so every signature we make is
    checked by an independent implementation in the tests, which also prove this
    output byte-identical to ``_prepare`` over random inputs
    (tests/protocol/test_rfc9421_fast.py) - the precedent is protocol/cavage.py.
    """
    match = _FAST_URL.fullmatch(url)
    # OPTIONS keeps an empty path as it is (RFC 9110 section 4.2.3): the package's case.
    if match is None or method == "OPTIONS" or not _SF_KEY.fullmatch(label):
        return None
    if not (_SF_STRING.fullmatch(key_id) and _SF_STRING.fullmatch(nonce)):
        return None
    if not (0 <= created <= _MAX_TIME and 0 < expires <= _MAX_TIME):
        return None
    lines = [f'"@method": {method}',
             f'"@target-uri": {match["origin"]}{match["path"] or "/"}{match["query"] or ""}']
    for name in components[2:]:  # the fields after @method and @target-uri
        values = [v for n, v in pairs if n.lower() == name]
        joined = ", ".join(v.strip(" \t") for v in values)
        if not values or not _FIELD_VALUE.fullmatch(joined):
            return None  # absent, or a value the package would unfold or refuse
        lines.append(f'"{name}": {joined}')
    covered = " ".join(f'"{c}"' for c in components)
    params = (f"({covered});created={created};keyid={_sf_string(key_id)};"
              f'alg="{algorithm.algorithm_id}";expires={expires};nonce={_sf_string(nonce)}')
    lines.append(f'"@signature-params": {params}')
    return PreparedSignature("\n".join(lines).encode("ascii"), params, label,
                             algorithm.algorithm_id)


def signature_base(
    method: str,
    url: str,
    headers: Headers,
    *,
    components: Sequence[str],
    created: int,
    key_id: str,
    alg: str | None = None,
    expires: int | None = None,
    nonce: str | None = None,
) -> bytes:
    """The exact bytes a signature with these parameters signs (section 2.5).

    Parameters are serialized in the order created, keyid, alg, expires, nonce. Useful
    to compare with a peer's base when its signatures do not verify.
    """
    _validate_method_url(method, url, LocalProtocolError)
    known = {a.algorithm_id: a for a in (algorithms.ED25519, algorithms.HMAC_SHA256)}
    if alg is not None and alg not in known:
        raise LocalProtocolError(f"alg {alg!r} is not one this profile signs with")
    prepared = _prepare(
        method,
        url,
        header_pairs(headers),
        algorithm=known[alg or "ed25519"],
        components=components,
        created=created,
        key_id=key_id,
        include_alg=alg is not None,
        expires=expires,
        nonce=nonce,
    )
    return prepared.signature_base


def sign(
    method: str,
    url: str,
    headers: Headers,
    body: bytes,
    *,
    key: Ed25519PrivateKey | HmacSecret,
    key_id: str,
    now: float,
    validity: int = DEFAULT_VALIDITY,
    label: str = DEFAULT_LABEL,
    nonce: str | None = None,
) -> dict[str, str]:
    """Sign a request; return the headers to add (they replace any of the same name).

    Covers ``@method``, ``@target-uri``, ``content-digest`` (added when *body* is not
    empty) and ``content-type`` (when present), with ``created``, ``expires``,
    ``keyid``, ``alg`` and a random ``nonce``. The nonce matters: Ed25519 is
    deterministic, so two identical GETs in the same second would otherwise carry the
    same signature and the second would be refused as a replay.
    """
    _validate_method_url(method, url, LocalProtocolError)
    if validity <= 0:
        raise LocalProtocolError(f"validity must be positive, got {validity}")
    algorithm = _signing_algorithm(key)
    pairs = [
        (name, value)
        for name, value in header_pairs(headers)
        if name.lower() not in _SIGNATURE_HEADERS and name.lower() != "content-digest"
    ]
    added: dict[str, str] = {}
    if body:
        added["Content-Digest"] = content_digest(body)
        pairs.append(("Content-Digest", added["Content-Digest"]))
    created = int(now)
    components = required_components(pairs, body)
    nonce = nonce if nonce is not None else secrets.token_urlsafe(16)
    prepared = _fast_prepare(
        method, url, pairs, algorithm=algorithm, components=components, created=created,
        key_id=key_id, expires=created + validity, nonce=nonce, label=label,
    ) or _prepare(
        method,
        url,
        pairs,
        algorithm=algorithm,
        components=components,
        created=created,
        key_id=key_id,
        include_alg=True,
        expires=created + validity,
        nonce=nonce,
        label=label,
    )
    # prepare() + our own serialization instead of the package's sign(): its apply()
    # rebuilds and compares the whole base a second time (half the signing cost), a
    # guard against the message changing during remote signing that we do not need.
    raw = algorithm(private_key=_lib_key(key)).sign(prepared.signature_base)
    added["Signature-Input"] = f"{prepared.label}={prepared.signature_params}"
    added["Signature"] = f"{prepared.label}=:{base64.b64encode(raw).decode('ascii')}:"
    return added


def parse_signature_input(pairs: Sequence[tuple[str, str]]) -> SignatureInput:
    """Parse ``Signature-Input`` and ``Signature``; exactly one signature is accepted."""
    raw_input = header_value(pairs, "signature-input")
    raw_signature = header_value(pairs, "signature")
    if raw_input is None or raw_signature is None:
        missing = "Signature-Input" if raw_input is None else "Signature"
        raise RemoteProtocolError(
            f"{missing} header is missing; RFC 9421 needs both Signature-Input and Signature",
            status_hint=401,
        )
    inputs = parse_dictionary("Signature-Input", raw_input)
    signatures = parse_dictionary("Signature", raw_signature)
    if set(inputs) != set(signatures):
        raise RemoteProtocolError(
            f"Signature-Input labels {sorted(inputs)} differ from Signature labels "
            f"{sorted(signatures)}",
            status_hint=400,
        )
    if len(inputs) != 1:
        # The labels are not signed, so choosing among several by label would let a
        # proxy or attacker steer us; fieldcast peers send one.
        raise RemoteProtocolError(
            f"request carries {len(inputs)} signatures ({', '.join(sorted(inputs))}); "
            "send exactly one",
            status_hint=400,
        )
    (label,) = inputs
    members, params = inputs[label]
    signature = signatures[label][0]
    if not isinstance(members, list) or not all(isinstance(value, str) for value, _ in members):
        raise RemoteProtocolError(
            f"Signature-Input {label!r} must be an inner list of component names, "
            'like ("@method" "@target-uri")',
            status_hint=400,
        )
    if not isinstance(signature, bytes):
        raise RemoteProtocolError(
            f"Signature {label!r} must be a byte sequence, like {label}=:<base64>:",
            status_hint=400,
        )
    unknown = set(params) - _ALLOWED_PARAMS
    if unknown:
        raise RemoteProtocolError(
            f"signature {label!r} has unknown parameters {sorted(unknown)}", status_hint=400
        )
    key_id = params.get("keyid")
    if not isinstance(key_id, str):
        raise RemoteProtocolError(
            f'signature {label!r} has no keyid="…" parameter; we cannot tell who signed',
            status_hint=401,
        )
    created = params.get("created")
    if type(created) is not int:
        raise RemoteProtocolError(
            f"signature {label!r} has no integer created parameter; fieldcast requires it "
            "to bound the signature's age",
            status_hint=401,
        )
    expires = params.get("expires")
    if expires is not None and type(expires) is not int:
        raise RemoteProtocolError(
            f"signature {label!r} expires must be an integer", status_hint=400
        )
    alg = params.get("alg")
    nonce = params.get("nonce")
    if (alg is not None and not isinstance(alg, str)) or (
        nonce is not None and not isinstance(nonce, str)
    ):
        raise RemoteProtocolError(
            f"signature {label!r} alg and nonce must be strings", status_hint=400
        )
    return SignatureInput(
        label=label,
        components=tuple(http_sf.ser((value, item_params)) for value, item_params in members),
        key_id=key_id,
        created=created,
        signature=signature,
        expires=expires,
        alg=alg,
        nonce=nonce,
    )


def _check_time(sig: SignatureInput, now: float, skew: int) -> float:
    """Refuse stale, future or expired signatures; return when acceptance ends."""
    if now - sig.created > skew:
        raise RemoteProtocolError(
            f"signature was created {int(now - sig.created)} s ago; allowed skew is {skew} s "
            "(sign each request when it is sent, and check the sender's clock)",
            status_hint=401,
        )
    if sig.created - now > skew:
        raise RemoteProtocolError(
            f"signature created is {int(sig.created - now)} s in the future; allowed skew "
            f"is {skew} s (check the sender's clock)",
            status_hint=401,
        )
    valid_until = float(sig.created + skew)
    if sig.expires is not None:
        # No tolerance here: expires >= created, so "expires + skew" could never fire
        # once created passed. The sender chose the lifetime; it must leave room for
        # skew (fieldcast signs with DEFAULT_VALIDITY = 300 s).
        if now > sig.expires:
            raise RemoteProtocolError(
                f"signature expired {int(now - sig.expires)} s ago (expires={sig.expires}); "
                "sign each request when it is sent, with a longer expires if clocks differ",
                status_hint=401,
            )
        valid_until = min(valid_until, float(sig.expires))
    return valid_until


def _check_coverage(sig: SignatureInput, required: Sequence[str]) -> None:
    # Only bare identifiers count: '"content-digest";key="sha-512"' covers one member,
    # which is not the same promise as covering the field.
    covered = set(sig.components)
    for component in required:
        if http_sf.ser(component) not in covered:
            raise RemoteProtocolError(
                f"signature does not cover {component}; fieldcast requires "
                f"{', '.join(required)} for this request",
                status_hint=401,
            )


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
) -> VerifiedRFC9421:
    """Verify the request's RFC 9421 signature or raise :class:`RemoteProtocolError`.

    *url* is the absolute URL the client addressed (behind a reverse proxy: the public
    one). *required* overrides :func:`required_components` (for interop with peers
    that cover ``@authority``/``@path`` instead of ``@target-uri``). A resolver may
    raise ``RemoteProtocolError(status_hint=403)`` for a known but barred key; it
    propagates unchanged.
    """
    _validate_method_url(method, url, RemoteProtocolError)
    pairs = header_pairs(headers)
    sig = parse_signature_input(pairs)
    # Cheap checks first: a peer must not make us fetch keys or run crypto for a
    # request that is stale or does not cover what we need.
    valid_until = _check_time(sig, now, skew)
    _check_coverage(sig, required_components(pairs, body) if required is None else required)
    digest = header_value(pairs, "content-digest")
    if digest is not None or body:
        verify_content_digest(digest, body)

    key = resolve_key(sig.key_id)
    if key is None:
        raise RemoteProtocolError(
            f"unknown key {sig.key_id!r}: no public key is known under this keyid",
            status_hint=401,
        )
    algorithm = _pinned_algorithm(key, sig.key_id)
    if sig.alg is not None and sig.alg != algorithm.algorithm_id:
        raise RemoteProtocolError(
            f"signature claims alg={sig.alg} but key {sig.key_id!r} is a "
            f"{algorithm.algorithm_id} key; the algorithm is taken from the key",
            status_hint=401,
        )
    verifier = _InjectedClockVerifier(
        signature_algorithm=algorithm, key_resolver=_SingleKey(sig.key_id, _lib_key(key))
    )
    try:
        verifier.verify(_LibRequest(method, url, _HeaderLines(pairs)), max_age=None)
    except HTTPMessageSignaturesException as exc:
        if isinstance(exc.__cause__, CryptoInvalidSignature):
            raise RemoteProtocolError(
                f"signature by {sig.key_id!r} ({algorithm.algorithm_id}) does not verify: the "
                "key is not the one that signed, or a covered component "
                f"({' '.join(sig.components)}) changed in transit",
                status_hint=401,
            ) from exc
        raise RemoteProtocolError(
            f"signature by {sig.key_id!r} cannot be checked: {exc}", status_hint=401
        ) from exc
    return VerifiedRFC9421(
        key_id=sig.key_id,
        algorithm=algorithm.algorithm_id,
        label=sig.label,
        created=sig.created,
        expires=sig.expires,
        signature=sig.signature,
        covered=sig.components,
        valid_until=valid_until,
    )
