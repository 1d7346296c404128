"""The documents an instance publishes about itself and its keys, and strict parsers for
a foreign instance's copies of them."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519, rsa

from keys.store import KeyStore, LiveKey, PublicKey, key_url
from protocol.errors import RemoteProtocolError
from protocol.signatures import PROFILES
from protocol.timestamps import format_timestamp, parse_timestamp

PROTOCOL_VERSION = 1


def _iso(ts: float | None) -> str | None:
    return None if ts is None else format_timestamp(datetime.fromtimestamp(ts, UTC))


def key_document(key: LiveKey, base_url: str) -> dict[str, Any]:
    return {
        "id": key_url(base_url, key.record.kid),
        "owner": base_url,
        "algorithm": key.record.alg,
        "public_key_pem": key.public_pem(),
        "state": key.record.state.value,
        "expires": _iso(key.record.valid_until),
    }


def well_known_document(store: KeyStore, *, name: str, base_url: str, now: float,
                        hub: str | None = None) -> dict[str, Any]:
    """``/.well-known/fieldcast``: who this instance is and which keys verify for it.

    ``hub`` is the WebSub hub URL, or None (published as null) while none is served.
    """
    return {
        "fieldcast": PROTOCOL_VERSION,
        "name": name,
        "base_url": base_url,
        "hub": hub,
        "signature_profiles": list(PROFILES),
        "keys": [key_document(k, base_url) for k in store.verification_keys(now)],
    }


@dataclass(frozen=True)
class ForeignKey:
    key_id: str
    owner: str
    algorithm: str
    public_key: PublicKey
    # Unix time after which the owner no longer accepts it (a previous key's overlap);
    # None for a current key. A cached copy must not outlive it.
    expires: float | None = None


@dataclass(frozen=True)
class ForeignInstance:
    name: str
    base_url: str
    profiles: tuple[str, ...]
    keys: tuple[ForeignKey, ...]
    hub: str | None = None


def origin(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}".lower()


def _member(doc: dict[str, Any], name: str, kind: type, where: str) -> Any:
    if name not in doc:
        raise RemoteProtocolError(f"{where} lacks member {name!r}", status_hint=502)
    value = doc[name]
    if not isinstance(value, kind) or (isinstance(value, bool) and kind is not bool):
        raise RemoteProtocolError(
            f"{where} member {name!r} must be {kind.__name__}, got {type(value).__name__}",
            status_hint=502,
        )
    return value


def parse_key(doc: Any, where: str = "key document") -> ForeignKey:
    if not isinstance(doc, dict):
        raise RemoteProtocolError(f"{where} must be a JSON object", status_hint=502)
    key_id = _member(doc, "id", str, where)
    owner = _member(doc, "owner", str, where)
    algorithm = _member(doc, "algorithm", str, where)
    pem = _member(doc, "public_key_pem", str, where)
    try:
        public = serialization.load_pem_public_key(pem.encode())
    except ValueError:
        raise RemoteProtocolError(f"{where}: public_key_pem is not a PEM public key",
                                  status_hint=502) from None
    key: PublicKey
    if algorithm == "ed25519" and isinstance(public, ed25519.Ed25519PublicKey):
        key = public
    elif algorithm == "rsa" and isinstance(public, rsa.RSAPublicKey):
        key = public
    else:
        raise RemoteProtocolError(
            f"{where}: algorithm {algorithm!r} does not match the key it publishes",
            status_hint=502,
        )
    _check_url(key_id, f"{where} member 'id'")
    _check_url(owner, f"{where} member 'owner'")
    if origin(key_id) != origin(owner):
        raise RemoteProtocolError(
            f"{where}: key {key_id} is not served from its owner {owner}", status_hint=403
        )
    expires = doc.get("expires")
    if expires is not None:
        if not isinstance(expires, str):
            raise RemoteProtocolError(
                f"{where} member 'expires' must be null or an RFC 3339 string", status_hint=502
            )
        try:
            expires_at = parse_timestamp(expires, "expires").timestamp()
        except RemoteProtocolError as exc:
            raise RemoteProtocolError(f"{where}: {exc.message}", status_hint=502) from None
    else:
        expires_at = None
    return ForeignKey(key_id, owner, algorithm, key, expires_at)


def _check_url(value: str, what: str) -> str:
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.netloc or "#" in value:
        raise RemoteProtocolError(
            f"{what} must be an absolute http(s) URL without fragment, got {value!r}",
            status_hint=502,
        )
    return value


def parse_well_known(doc: Any) -> ForeignInstance:
    where = "/.well-known/fieldcast"
    if not isinstance(doc, dict):
        raise RemoteProtocolError(f"{where} must be a JSON object", status_hint=502)
    version = _member(doc, "fieldcast", int, where)
    if version != PROTOCOL_VERSION:
        raise RemoteProtocolError(
            f"{where} speaks protocol version {version}; this instance speaks "
            f"{PROTOCOL_VERSION}", status_hint=502,
        )
    keys = tuple(
        parse_key(k, f"{where} keys[{i}]")
        for i, k in enumerate(_member(doc, "keys", list, where))
    )
    ids = [k.key_id for k in keys]
    if len(set(ids)) != len(ids):
        # Two different PEMs under one keyId would make "which key verifies?" ambiguous.
        raise RemoteProtocolError(f"{where} lists a key id more than once", status_hint=502)
    name = _member(doc, "name", str, where)
    if not name.strip():
        raise RemoteProtocolError(f"{where} member 'name' must not be empty", status_hint=502)
    profiles = _member(doc, "signature_profiles", list, where)
    if not all(isinstance(p, str) for p in profiles):
        raise RemoteProtocolError(
            f"{where} member 'signature_profiles' must be a list of strings", status_hint=502
        )
    hub = doc.get("hub")
    if hub is not None:
        if not isinstance(hub, str):
            raise RemoteProtocolError(f"{where} member 'hub' must be null or a URL string",
                                      status_hint=502)
        _check_url(hub, f"{where} member 'hub'")
    return ForeignInstance(
        name=name,
        base_url=_check_url(_member(doc, "base_url", str, where), f"{where} member 'base_url'"),
        profiles=tuple(profiles),
        keys=keys,
        hub=hub,
    )
