"""The foreign-key resolver with an injected fetch and clock, and verification of two
instances' worth of keys in both signature profiles."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest

from keys.publish import well_known_document
from keys.resolver import KeyResolver, verify_signed
from keys.store import KeyStore
from protocol.errors import RemoteProtocolError
from protocol.replay import ReplayCache
from protocol.signatures import CAVAGE_RSA_SHA256, RFC9421_ED25519, sign_request

A, B = "https://a.example", "https://b.example"
NOW = 1_800_000_000.0


class World:
    """Instances' published documents, served to the resolver by a fake fetch."""

    def __init__(self, tmp_path: Path) -> None:
        self.stores = {}
        for base in (A, B):
            store = KeyStore(tmp_path / base.split("//")[1])
            store.generate(NOW)
            self.stores[base] = store
        self.docs: dict[str, Any] = {}
        self.requests: list[str] = []
        self.clock = 0.0
        self.publish(A)
        self.publish(B)

    def publish(self, base: str, *, name: str | None = None, now: float = NOW) -> None:
        self.docs[base] = well_known_document(self.stores[base], name=name or base[8:],
                                              base_url=base, now=now)

    async def fetch(self, url: str) -> tuple[int, Any]:
        self.requests.append(url)
        base = url.split("/.well-known")[0]
        doc = self.docs.get(base)
        return (200, copy.deepcopy(doc)) if doc else (404, None)

    def resolver(self, **kwargs: Any) -> KeyResolver:
        # The wall clock moves with the fake monotonic one, from the instances' NOW.
        kwargs.setdefault("wall_clock", lambda: NOW + self.clock)
        return KeyResolver(self.fetch, clock=lambda: self.clock, **kwargs)

    def signed(self, base: str, profile: str, body: bytes = b'{"x":1}',
               url: str = "https://b.example/callback") -> tuple[str, str, dict[str, str], bytes]:
        store = self.stores[base]
        alg = "ed25519" if profile == RFC9421_ED25519 else "rsa"
        key = store.current(alg)
        kid = f"{base}/.well-known/fieldcast/keys/{key.record.kid}"
        headers = {"Content-Type": "application/json", "Host": "b.example"}
        headers.update(sign_request(profile, "POST", url, headers, body, key.private, kid, NOW))
        return "POST", url, headers, body


@pytest.fixture
def world(tmp_path: Path) -> World:
    return World(tmp_path)


@pytest.mark.parametrize("profile", [RFC9421_ED25519, CAVAGE_RSA_SHA256])
async def test_each_instance_verifies_the_others_requests(world: World, profile: str) -> None:
    for signer, verifier_origin in ((A, B), (B, A)):
        resolver = world.resolver()
        method, url, headers, body = world.signed(signer, profile)
        verified = await verify_signed(resolver, method, url, headers, body, now=NOW,
                                       replay_cache=ReplayCache(), expected_origin=signer)
        assert verified.key_id.startswith(signer) and verified.profile == profile
        assert verifier_origin != signer


async def test_refusals(world: World) -> None:
    resolver = world.resolver()
    cache = ReplayCache()
    method, url, headers, body = world.signed(A, RFC9421_ED25519)
    # Tampered body and tampered header.
    with pytest.raises(RemoteProtocolError) as info:
        await verify_signed(resolver, method, url, headers, b'{"x":2}', now=NOW,
                            replay_cache=cache)
    assert info.value.status_hint == 401
    bad = {**headers, "Content-Type": "text/plain"}
    with pytest.raises(RemoteProtocolError):
        await verify_signed(resolver, method, url, bad, body, now=NOW, replay_cache=cache)
    # A key of A presented for a request claiming to come from B.
    with pytest.raises(RemoteProtocolError, match="not to the sending instance") as info:
        await verify_signed(resolver, method, url, headers, body, now=NOW,
                            replay_cache=cache, expected_origin=B)
    assert info.value.status_hint == 403
    # Expired and replayed.
    with pytest.raises(RemoteProtocolError):
        await verify_signed(resolver, method, url, headers, body, now=NOW + 3600,
                            replay_cache=cache)
    await verify_signed(resolver, method, url, headers, body, now=NOW, replay_cache=cache)
    with pytest.raises(RemoteProtocolError, match="replay"):
        await verify_signed(resolver, method, url, headers, body, now=NOW, replay_cache=cache)
    # Signed with a key the instance does not publish (wrong key).
    other = KeyStore(world.stores[A].directory.parent / "stranger")
    other.generate(NOW)
    world.stores[A], real = other, world.stores[A]
    method, url, headers, body = world.signed(A, RFC9421_ED25519)
    world.stores[A] = real
    world.clock += 120
    with pytest.raises(RemoteProtocolError) as info:
        await verify_signed(resolver, method, url, headers, body, now=NOW, replay_cache=cache)
    assert info.value.status_hint == 401


async def test_cache_ttl_and_unknown_key_refetch_is_rate_limited(world: World) -> None:
    resolver = world.resolver(ttl=600, refetch_interval=60)
    kid = world.docs[A]["keys"][0]["id"]
    assert (await resolver.resolve(kid)) is not None
    assert (await resolver.resolve(kid)) is not None
    assert len(world.requests) == 1  # cached
    # Unknown keys from a forger: one fetch, then none within the minute.
    for n in range(20):
        assert await resolver.resolve(f"{A}/.well-known/fieldcast/keys/nope{n}") is None
    assert len(world.requests) == 1  # the first fetch was moments ago: rate limited
    world.clock += 61
    assert await resolver.resolve(f"{A}/.well-known/fieldcast/keys/nope") is None
    assert len(world.requests) == 2
    # TTL expiry re-fetches (once the rate limit allows).
    world.clock += 601
    assert await resolver.resolve(kid) is not None
    assert len(world.requests) == 3


async def test_rotation_is_followed_and_retired_keys_refused(world: World) -> None:
    resolver = world.resolver(refetch_interval=60)
    method, url, headers, body = world.signed(A, RFC9421_ED25519)
    await verify_signed(resolver, method, url, headers, body, now=NOW, replay_cache=None)
    old_store = world.stores[A]
    old_store.rotate("ed25519", now=NOW, overlap=3600)
    world.publish(A, now=NOW)
    # A request signed with the new key names an unknown kid: one re-fetch finds it.
    world.clock += 61
    method, url, headers2, body = world.signed(A, RFC9421_ED25519)
    await verify_signed(resolver, method, url, headers2, body, now=NOW, replay_cache=None)
    # The previous key still verifies during the overlap...
    await verify_signed(resolver, method, url, headers, body, now=NOW, replay_cache=None)
    # ...and once A retired it (no longer published), it is refused after a re-fetch.
    world.publish(A, now=NOW + 3601)
    world.clock += 3700
    with pytest.raises(RemoteProtocolError) as info:
        await verify_signed(resolver, method, url, headers, body, now=NOW, replay_cache=None)
    assert info.value.status_hint == 401


async def test_identity_is_pinned(world: World) -> None:
    resolver = world.resolver(refetch_interval=0)
    kid = world.docs[A]["keys"][0]["id"]
    await resolver.resolve(kid)
    world.publish(A, name="impostor")
    world.clock += 1
    with pytest.raises(RemoteProtocolError, match="refused until an operator") as info:
        await resolver.resolve(kid, refresh=True)
    assert info.value.status_hint == 403
    resolver.forget_identity(A)
    assert await resolver.resolve(kid, refresh=True) is not None


async def test_documents_from_the_wrong_origin_or_malformed_are_refused(world: World) -> None:
    resolver = world.resolver(refetch_interval=0)
    kid = world.docs[A]["keys"][0]["id"]
    world.docs[A]["base_url"] = B
    with pytest.raises(RemoteProtocolError, match="another origin"):
        await resolver.resolve(kid)
    world.publish(A)
    world.docs[A]["keys"][0]["id"] = f"{B}/.well-known/fieldcast/keys/x"
    with pytest.raises(RemoteProtocolError, match="not served from its owner"):
        await resolver.resolve(kid)
    world.publish(A)
    world.docs[A]["fieldcast"] = 2
    with pytest.raises(RemoteProtocolError, match="protocol version 2"):
        await resolver.resolve(kid)
    world.publish(A)
    del world.docs[A]["keys"]
    with pytest.raises(RemoteProtocolError, match="lacks member 'keys'"):
        await resolver.resolve(kid)
    world.publish(A)
    world.docs[A]["keys"][0]["algorithm"] = "rsa"
    with pytest.raises(RemoteProtocolError, match="does not match"):
        await resolver.resolve(kid)


async def test_cache_is_bounded(world: World) -> None:
    resolver = world.resolver(max_keys=1, refetch_interval=0)
    await resolver.resolve(world.docs[A]["keys"][0]["id"])
    await resolver.resolve(world.docs[B]["keys"][0]["id"])
    assert len(resolver._keys) == 1


async def test_identity_pins_survive_a_restart(world: World, tmp_path: Path) -> None:
    from keys.pins import PinFile

    kid = world.docs[A]["keys"][0]["id"]
    first = world.resolver(refetch_interval=0, pins=PinFile(tmp_path / "pins.json"))
    await first.resolve(kid)
    assert (tmp_path / "pins.json").stat().st_mode & 0o077 == 0
    world.publish(A, name="impostor")
    # A new resolver (the process restarted) reads the pins: the change is still refused.
    again = world.resolver(refetch_interval=0, pins=PinFile(tmp_path / "pins.json"))
    with pytest.raises(RemoteProtocolError, match="refused until an operator"):
        await again.resolve(kid)
    again.forget_identity(A)
    assert await again.resolve(kid) is not None
    assert PinFile(tmp_path / "pins.json")[A] == ("impostor", A)


@pytest.mark.parametrize("broken", [{"fieldcast": 99}, {"keys": {}}, {"base_url": 5}])
async def test_a_signer_with_an_unusable_key_document_gets_401_not_a_5xx(
    world: World, broken: dict[str, Any]
) -> None:
    # Whatever a signer publishes, the signed request it sends is answered 4xx: an
    # attacker's own instance must not be able to make us answer 5xx.
    world.docs[A] = {**world.docs[A], **broken}
    method, url, headers, body = world.signed(A, RFC9421_ED25519)
    with pytest.raises(RemoteProtocolError, match="the signer's key could not be used") as info:
        await verify_signed(world.resolver(), method, url, headers, body, now=NOW,
                            replay_cache=ReplayCache(), expected_origin=A)
    assert info.value.status_hint == 401
