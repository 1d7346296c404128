"""Resolver and key-file edge cases: shared fetches, published expiry, fetch failures,
bounded bookkeeping, strict parsing of a foreign instance's documents, symlinks, and two
instances' keys checked with `cryptography` alone (no signature library involved)."""

from __future__ import annotations

import asyncio
import copy
import os
from pathlib import Path
from typing import Any

import pytest
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ed25519, padding, rsa

from keys.publish import key_document, parse_key, parse_well_known, well_known_document
from keys.resolver import KeyResolver
from keys.store import KeyStore, KeyStoreError
from protocol.errors import RemoteProtocolError

A, B = "https://a.example", "https://b.example"
NOW = 1_800_000_000.0


@pytest.fixture
def stores(tmp_path: Path) -> dict[str, KeyStore]:
    out = {}
    for base in (A, B):
        store = KeyStore(tmp_path / base.split("//")[1])
        store.generate(NOW)
        out[base] = store
    return out


class Peer:
    """Serves published documents; counts fetches; can be slowed down or broken."""

    def __init__(self, stores: dict[str, KeyStore]) -> None:
        self.stores = stores
        self.docs = {
            base: well_known_document(store, name=base[8:], base_url=base, now=NOW)
            for base, store in stores.items()
        }
        self.fetched: list[str] = []
        self.gate: asyncio.Event | None = None
        self.error: Exception | None = None
        self.clock = 0.0
        self.wall = NOW

    async def fetch(self, url: str) -> tuple[int, Any]:
        self.fetched.append(url)
        if self.gate is not None:
            await self.gate.wait()
        if self.error is not None:
            raise self.error
        doc = self.docs.get(url.split("/.well-known")[0])
        return (200, copy.deepcopy(doc)) if doc else (404, None)

    def resolver(self, **kwargs: Any) -> KeyResolver:
        return KeyResolver(
            self.fetch, clock=lambda: self.clock, wall_clock=lambda: self.wall, **kwargs
        )

    def kid(self, base: str, alg: str = "ed25519") -> str:
        return next(k["id"] for k in self.docs[base]["keys"] if k["algorithm"] == alg)


async def test_concurrent_cold_resolutions_share_one_fetch(stores: dict[str, KeyStore]) -> None:
    peer = Peer(stores)
    peer.gate = asyncio.Event()
    resolver = peer.resolver()
    kid = peer.kid(A)
    tasks = [asyncio.create_task(resolver.resolve(kid)) for _ in range(5)]
    await asyncio.sleep(0)
    peer.gate.set()
    keys = await asyncio.gather(*tasks)
    # Without sharing, the 2nd..5th would hit the rate limit and see "unknown key".
    assert all(k is not None and k.key_id == kid for k in keys)
    assert len(peer.fetched) == 1


async def test_a_cancelled_waiter_does_not_cancel_the_shared_fetch(
    stores: dict[str, KeyStore],
) -> None:
    peer = Peer(stores)
    peer.gate = asyncio.Event()
    resolver = peer.resolver()
    first = asyncio.create_task(resolver.resolve(peer.kid(A)))
    second = asyncio.create_task(resolver.resolve(peer.kid(A)))
    await asyncio.sleep(0)
    first.cancel()
    peer.gate.set()
    assert (await second) is not None
    with pytest.raises(asyncio.CancelledError):
        await first


async def test_previous_key_refused_after_its_published_expiry_even_when_cached(
    stores: dict[str, KeyStore],
) -> None:
    old_kid = stores[A].current("ed25519").record.kid
    stores[A].rotate("ed25519", now=NOW, overlap=600)
    peer = Peer(stores)
    resolver = peer.resolver(ttl=3600, refetch_interval=60)
    old = f"{A}/.well-known/fieldcast/keys/{old_kid}"
    key = await resolver.resolve(old)
    assert key is not None and key.expires == NOW + 600  # inside the overlap: accepted
    peer.clock += 30
    peer.wall = NOW + 601
    assert await resolver.resolve(old) is None  # the cache is warm, but the overlap is over
    assert len(peer.fetched) == 1
    # A document that still lists an expired key (stale proxy cache) does not revive it.
    peer.clock += 61
    assert await resolver.resolve(old, refresh=True) is None
    assert len(peer.fetched) == 2


async def test_fetch_failure_is_a_clear_401_and_still_rate_limited(
    stores: dict[str, KeyStore],
) -> None:
    peer = Peer(stores)
    peer.error = ConnectionRefusedError("connection refused")
    resolver = peer.resolver(refetch_interval=60)
    with pytest.raises(RemoteProtocolError, match=r"could not fetch https://a\.example/") as info:
        await resolver.resolve(peer.kid(A))
    assert info.value.status_hint == 401
    assert "ConnectionRefusedError" in info.value.message
    peer.error = None
    assert await resolver.resolve(peer.kid(A)) is None  # within the minute: no new fetch
    assert len(peer.fetched) == 1
    peer.clock += 61
    assert await resolver.resolve(peer.kid(A)) is not None


async def test_key_from_another_origin_than_the_sender(stores: dict[str, KeyStore]) -> None:
    peer = Peer(stores)
    resolver = peer.resolver()
    with pytest.raises(RemoteProtocolError, match="not to the sending instance") as info:
        await resolver.resolve(peer.kid(A), expected_origin=B + "/some/path")
    assert info.value.status_hint == 403
    assert peer.fetched == []  # refused before any fetch
    assert await resolver.resolve(peer.kid(A), expected_origin=A + "/") is not None


async def test_fetch_bookkeeping_is_bounded(stores: dict[str, KeyStore]) -> None:
    peer = Peer(stores)
    resolver = peer.resolver(max_origins=3, refetch_interval=60)
    for n in range(10):
        with pytest.raises(RemoteProtocolError, match="answered 404"):
            await resolver.resolve(f"https://h{n}.example/.well-known/fieldcast/keys/x")
    assert len(resolver._last_fetch) <= 3
    assert len(peer.fetched) == 10


# ------------------------------------------------------ strict foreign-document parsing


def _doc(stores: dict[str, KeyStore], **changes: Any) -> dict[str, Any]:
    doc = well_known_document(stores[A], name="a", base_url=A, now=NOW)
    doc.update(changes)
    return doc


def test_hub_is_published_and_parsed(stores: dict[str, KeyStore]) -> None:
    doc = well_known_document(stores[A], name="a", base_url=A, now=NOW, hub=A + "/hub")
    parsed = parse_well_known(doc)
    assert parsed.hub == A + "/hub"
    assert parse_well_known(_doc(stores)).hub is None


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"name": "  "}, "'name' must not be empty"),
        ({"name": 7}, "'name' must be str"),
        ({"base_url": "a.example"}, "'base_url' must be an absolute"),
        ({"hub": "ftp://a.example/hub"}, "'hub' must be an absolute"),
        ({"hub": 5}, "'hub' must be null or a URL"),
        ({"signature_profiles": ["rfc9421-ed25519", 3]}, "list of strings"),
        ({"fieldcast": True}, "'fieldcast' must be int"),
        ({"keys": {}}, "'keys' must be list"),
    ],
)
def test_well_known_member_errors(
    stores: dict[str, KeyStore], changes: dict[str, Any], message: str
) -> None:
    with pytest.raises(RemoteProtocolError, match=message) as info:
        parse_well_known(_doc(stores, **changes))
    assert info.value.status_hint == 502


def test_duplicate_key_ids_are_refused(stores: dict[str, KeyStore]) -> None:
    doc = _doc(stores)
    doc["keys"].append({**doc["keys"][1], "id": doc["keys"][0]["id"], "algorithm": "rsa"})
    with pytest.raises(RemoteProtocolError, match="more than once"):
        parse_well_known(doc)


@pytest.mark.parametrize(
    ("member", "value", "message"),
    [
        ("expires", 12345, "'expires' must be null or an RFC 3339"),
        ("expires", "next week", "RFC 3339"),
        ("public_key_pem", "not a pem", "not a PEM public key"),
        ("id", "/relative/key", "'id' must be an absolute"),
    ],
)
def test_key_document_member_errors(
    stores: dict[str, KeyStore], member: str, value: Any, message: str
) -> None:
    doc = key_document(stores[A].current("ed25519"), A)
    doc[member] = value
    with pytest.raises(RemoteProtocolError, match=message):
        parse_key(doc)


def test_key_document_round_trip_keeps_expiry(stores: dict[str, KeyStore]) -> None:
    old = stores[A].current("rsa")
    stores[A].rotate("rsa", now=NOW, overlap=90.5)
    previous = stores[A].get(old.record.kid, NOW)
    assert previous is not None
    parsed = parse_key(key_document(previous, A))
    assert parsed.expires == pytest.approx(NOW + 90.5)
    assert parse_key(key_document(stores[A].current("rsa"), A)).expires is None


# -------------------------------------------------------------------------- key files


def test_symlinked_key_file_is_refused(tmp_path: Path) -> None:
    store = KeyStore(tmp_path / "keys")
    store.generate(NOW)
    victim = next(store.directory.glob("ed25519-*.pem"))
    target = tmp_path / "elsewhere.pem"
    victim.rename(target)
    os.symlink(target, victim)
    with pytest.raises(KeyStoreError, match=str(victim)):
        KeyStore(tmp_path / "keys").load()


def test_garbage_key_file_is_reported_by_name(tmp_path: Path) -> None:
    store = KeyStore(tmp_path / "keys")
    store.generate(NOW)
    victim = next(store.directory.glob("rsa-*.pem"))
    victim.write_bytes(b"not a key")
    with pytest.raises(KeyStoreError, match=f"{victim} is not an unencrypted PEM"):
        KeyStore(tmp_path / "keys").load()


def test_manifest_lists_id_algorithm_state_and_end_of_validity(tmp_path: Path) -> None:
    store = KeyStore(tmp_path / "keys")
    store.generate(NOW)
    store.rotate("ed25519", now=NOW + 10, overlap=100)
    records = {(r.alg, r.state): r for r in KeyStore(tmp_path / "keys").load().records()}
    assert set(records) == {("ed25519", "current"), ("ed25519", "previous"), ("rsa", "current")}
    assert records[("ed25519", "previous")].valid_until == NOW + 110
    assert records[("rsa", "current")].valid_until is None


# ---------------------------------------------- two instances, cryptography directly


async def test_two_instances_keys_verify_across_with_cryptography_only(
    stores: dict[str, KeyStore],
) -> None:
    peer = Peer(stores)
    resolver = peer.resolver()
    message = b"POST /callback\ncontent-digest: sha-256=:abc=:"
    for signer, other in ((A, B), (B, A)):
        ed_private = stores[signer].current("ed25519").private
        rsa_private = stores[signer].current("rsa").private
        assert isinstance(ed_private, ed25519.Ed25519PrivateKey)
        assert isinstance(rsa_private, rsa.RSAPrivateKey)
        ed_sig = ed_private.sign(message)
        rsa_sig = rsa_private.sign(message, padding.PKCS1v15(), hashes.SHA256())

        ed_key = await resolver.resolve(peer.kid(signer, "ed25519"), expected_origin=signer)
        rsa_key = await resolver.resolve(peer.kid(signer, "rsa"), expected_origin=signer)
        assert ed_key is not None and rsa_key is not None
        assert isinstance(ed_key.public_key, ed25519.Ed25519PublicKey)
        assert isinstance(rsa_key.public_key, rsa.RSAPublicKey)
        ed_key.public_key.verify(ed_sig, message)
        rsa_key.public_key.verify(rsa_sig, message, padding.PKCS1v15(), hashes.SHA256())

        # The other instance's published key does not verify this instance's signature.
        wrong = await resolver.resolve(peer.kid(other, "ed25519"), expected_origin=other)
        assert wrong is not None
        with pytest.raises(InvalidSignature):
            wrong.public_key.verify(ed_sig, message)  # type: ignore[call-arg]
        with pytest.raises(InvalidSignature):
            ed_key.public_key.verify(ed_sig, message + b"!")
