"""One entry point for HTTP request signatures, whatever the profile.

The instance's HTTP layer calls :func:`sign_request` before sending and
:func:`verify_request` on arrival; this module picks the profile, then applies the
replay rule that both profiles share.

Profiles (see PROTOCOL.md, "Signatures"):

* ``rfc9421-ed25519`` - RFC 9421 with Ed25519, between fieldcast instances (default);
* ``cavage-rsa-sha256`` - draft-cavage-12 ``rsa-sha256``, for fediverse-style peers.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass

from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from protocol import cavage, rfc9421
from protocol.digest import Headers, header_pairs, header_value
from protocol.errors import LocalProtocolError, RemoteProtocolError
from protocol.replay import ReplayCache
from protocol.rfc9421 import HmacSecret
from protocol.verification import DEFAULT_SKEW, KeyLookup

__all__ = [
    "CAVAGE_RSA_SHA256",
    "PROFILES",
    "RFC9421_ED25519",
    "HmacSecret",
    "SigningKey",
    "VerifiedSignature",
    "detect_profile",
    "sign_request",
    "verify_request",
]

RFC9421_ED25519 = rfc9421.PROFILE
CAVAGE_RSA_SHA256 = cavage.PROFILE
#: In order of preference: a sender uses the first one the receiver accepts.
PROFILES: tuple[str, ...] = (RFC9421_ED25519, CAVAGE_RSA_SHA256)

SigningKey = Ed25519PrivateKey | rsa.RSAPrivateKey | HmacSecret


@dataclass(frozen=True)
class VerifiedSignature:
    """Who signed the request, under which profile and algorithm."""

    key_id: str
    profile: str
    algorithm: str

    def __post_init__(self) -> None:
        if self.profile not in PROFILES:
            raise LocalProtocolError(f"unknown signature profile {self.profile!r}")


def detect_profile(headers: Headers) -> str:
    """Which profile signed this request: ``Signature-Input`` means RFC 9421,
    a ``Signature`` with ``keyId=`` means draft-cavage."""
    pairs = header_pairs(headers)
    if header_value(pairs, "signature-input") is not None:
        return RFC9421_ED25519
    signature = header_value(pairs, "signature")
    if signature is not None and "keyid=" in signature.lower():
        return CAVAGE_RSA_SHA256
    if signature is not None:
        raise RemoteProtocolError(
            "Signature header has neither a Signature-Input companion (RFC 9421) nor a "
            "keyId= parameter (draft-cavage)",
            status_hint=400,
        )
    raise RemoteProtocolError(
        "request is not signed: send Signature-Input and Signature (RFC 9421, "
        f"{RFC9421_ED25519}) or Signature with keyId= ({CAVAGE_RSA_SHA256})",
        status_hint=401,
    )


def sign_request(
    profile: str,
    method: str,
    url: str,
    headers: Headers,
    body: bytes,
    key: SigningKey,
    key_id: str,
    now: float,
) -> dict[str, str]:
    """Sign a request under *profile*; return the headers to add to it.

    The returned headers replace any of the same name already in *headers*.
    """
    if profile == RFC9421_ED25519:
        if not isinstance(key, Ed25519PrivateKey | HmacSecret):
            raise LocalProtocolError(
                f"{profile} needs an Ed25519PrivateKey or HmacSecret, not {type(key).__name__}"
            )
        return rfc9421.sign(method, url, headers, body, key=key, key_id=key_id, now=now)
    if profile == CAVAGE_RSA_SHA256:
        if not isinstance(key, rsa.RSAPrivateKey):
            raise LocalProtocolError(f"{profile} needs an RSAPrivateKey, not {type(key).__name__}")
        return cavage.sign(method, url, headers, body, key=key, key_id=key_id, now=now)
    raise LocalProtocolError(f"unknown signature profile {profile!r}; known: {', '.join(PROFILES)}")


def verify_request(
    method: str,
    url: str,
    headers: Headers,
    body: bytes,
    *,
    resolve_key: KeyLookup,
    now: float,
    replay_cache: ReplayCache | None,
    skew: int = DEFAULT_SKEW,
    accepted_profiles: Collection[str] = PROFILES,
) -> VerifiedSignature:
    """Verify a signed request or raise :class:`RemoteProtocolError` (answer its
    ``status_hint``).

    *url* is the absolute URL as the client addressed it, raw path and query included.
    *replay_cache* is required on purpose: pass ``None`` only where replays are
    harmless (tests, idempotent reads you accept twice).
    """
    unknown = set(accepted_profiles) - set(PROFILES)
    if unknown:
        raise LocalProtocolError(f"unknown signature profiles configured: {sorted(unknown)}")
    pairs = header_pairs(headers)
    profile = detect_profile(pairs)
    if profile not in accepted_profiles:
        raise RemoteProtocolError(
            f"this endpoint does not accept {profile} signatures; accepted: "
            f"{', '.join(p for p in PROFILES if p in accepted_profiles)}",
            status_hint=401,
        )
    result: rfc9421.VerifiedRFC9421 | cavage.VerifiedCavage
    if profile == RFC9421_ED25519:
        result = rfc9421.verify(
            method, url, pairs, body, resolve_key=resolve_key, now=now, skew=skew
        )
    else:
        result = cavage.verify(
            method, url, pairs, body, resolve_key=resolve_key, now=now, skew=skew
        )
    # Only after the signature verified: see protocol.replay on why the order matters.
    if replay_cache is not None:
        replay_cache.check_and_remember(
            result.key_id, result.signature, valid_until=result.valid_until, now=now
        )
    return VerifiedSignature(key_id=result.key_id, profile=profile, algorithm=result.algorithm)
