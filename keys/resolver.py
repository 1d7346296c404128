"""Foreign keys: fetched from the signer's instance, cached, re-fetched sparingly, pinned.

Rules:
- A keyId is the URL of the key; it is fetched from the origin it names, through the
  origin's ``/.well-known/fieldcast`` (one request gives every key and the identity).
- A key whose origin differs from the instance the request claims to come from is
  refused (403).
- Cached keys live ``ttl`` seconds. An unknown keyId, or a signature that fails with a
  cached key (the signer rotated), triggers one re-fetch - but never more than one fetch
  per ``refetch_interval`` per origin, so forged requests cannot make us hammer a peer.
- The first identity seen for an origin (its name and base URL) is pinned; a document
  that changes it is refused until an operator forgets the pin.
- The cache is bounded (least recently used keys are dropped), and so is the record of
  recent fetches per origin.
- A previous key is cached no longer than the ``expires`` its owner published: after the
  overlap it is refused even while the cache is warm.
- Concurrent resolutions for one origin share a single fetch, so a burst of requests
  from a peer we have not seen yet neither fetches N times nor finds the key "unknown"
  because another request's fetch is still running.
"""

from __future__ import annotations

import asyncio
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Collection, MutableMapping
from typing import Any

from keys.publish import ForeignInstance, ForeignKey, origin, parse_well_known
from protocol import cavage, rfc9421
from protocol.digest import Headers, header_pairs, header_value
from protocol.errors import RemoteProtocolError
from protocol.replay import ReplayCache
from protocol.signatures import (
    PROFILES,
    RFC9421_ED25519,
    VerifiedSignature,
    detect_profile,
    verify_request,
)
from protocol.verification import DEFAULT_SKEW

# url -> (HTTP status, parsed JSON body or None)
Fetch = Callable[[str], Awaitable[tuple[int, Any]]]


class KeyResolver:
    def __init__(self, fetch: Fetch, *, clock: Callable[[], float] = time.monotonic,
                 ttl: float = 3600.0, refetch_interval: float = 60.0,
                 max_keys: int = 10_000, max_origins: int = 10_000,
                 pins: MutableMapping[str, tuple[str, str]] | None = None,
                 wall_clock: Callable[[], float] = time.time) -> None:
        self._fetch = fetch
        self._clock = clock  # monotonic: TTL and rate limit
        self._wall_clock = wall_clock  # Unix time: the owner's published key expiry
        self.ttl = ttl
        self.refetch_interval = refetch_interval
        self.max_keys = max_keys
        self.max_origins = max_origins
        self._keys: OrderedDict[str, tuple[ForeignKey, float]] = OrderedDict()
        # Pass a keys.pins.PinFile to keep pins across restarts.
        self._identity: MutableMapping[str, tuple[str, str]] = {} if pins is None else pins
        self._last_fetch: OrderedDict[str, float] = OrderedDict()
        self._inflight: dict[str, asyncio.Future[None]] = {}
        self.fetches = 0

    def forget_identity(self, origin_url: str) -> None:
        """An operator accepts that the instance at this origin changed identity."""
        self._identity.pop(origin(origin_url), None)

    async def resolve(self, key_id: str, *, expected_origin: str | None = None,
                      refresh: bool = False) -> ForeignKey | None:
        """The key, or None when its instance does not (or no longer) publish it."""
        if not key_id.startswith(("https://", "http://")):
            raise RemoteProtocolError(f"keyId {key_id!r} is not a URL", status_hint=401)
        key_origin = origin(key_id)
        if expected_origin is not None and key_origin != origin(expected_origin):
            raise RemoteProtocolError(
                f"key {key_id} belongs to {key_origin}, not to the sending instance "
                f"{origin(expected_origin)}", status_hint=403,
            )
        now = self._clock()
        cached = self._keys.get(key_id)
        if cached is not None and not refresh and now - cached[1] < self.ttl:
            self._keys.move_to_end(key_id)
            return self._unexpired(key_id)
        pending = self._inflight.get(key_origin)
        if pending is None:
            last = self._last_fetch.get(key_origin)
            if last is not None and now - last < self.refetch_interval:
                # Rate limited: answer from what we have, even if stale.
                return self._unexpired(key_id)
            self._note_fetch(key_origin, now)
            pending = asyncio.ensure_future(self._refresh(key_origin, now))
            self._inflight[key_origin] = pending
            pending.add_done_callback(lambda _: self._inflight.pop(key_origin, None))
        # Shielded: one caller giving up (cancelled) must not cancel the others' fetch.
        await asyncio.shield(pending)
        return self._unexpired(key_id)

    def _unexpired(self, key_id: str) -> ForeignKey | None:
        found = self._keys.get(key_id)
        if found is None:
            return None
        key = found[0]
        if key.expires is not None and key.expires <= self._wall_clock():
            # Its owner retired it (overlap over): refuse it, and no fetch can revive it.
            del self._keys[key_id]
            return None
        return key

    def _note_fetch(self, key_origin: str, now: float) -> None:
        self._last_fetch.pop(key_origin, None)
        self._last_fetch[key_origin] = now
        # Entries older than the interval no longer limit anything; beyond max_origins
        # the oldest go too, so keyIds naming endless hosts cannot grow this forever.
        while self._last_fetch:
            oldest_origin, oldest = next(iter(self._last_fetch.items()))
            if now - oldest < self.refetch_interval and len(self._last_fetch) <= self.max_origins:
                break
            del self._last_fetch[oldest_origin]

    async def _refresh(self, key_origin: str, now: float) -> None:
        self.fetches += 1
        url = f"{key_origin}/.well-known/fieldcast"
        try:
            status, doc = await self._fetch(url)
        except Exception as exc:
            # Whatever the transport raised (DNS, TLS, timeout, bad JSON), the verdict is
            # the same: we cannot see the signer's keys, so we cannot accept its request.
            raise RemoteProtocolError(
                f"could not fetch {url} to check the signature: {type(exc).__name__}: {exc}",
                status_hint=401,
            ) from exc
        if status != 200:
            raise RemoteProtocolError(f"{url} answered {status}; cannot check the signature",
                                      status_hint=401)
        instance: ForeignInstance = parse_well_known(doc)
        if origin(instance.base_url) != key_origin:
            raise RemoteProtocolError(
                f"{url} says it is {instance.base_url}, another origin", status_hint=403
            )
        identity = (instance.name, instance.base_url)
        pinned = self._identity.setdefault(key_origin, identity)
        if pinned != identity:
            raise RemoteProtocolError(
                f"the instance at {key_origin} was {pinned[0]!r} ({pinned[1]}) and now "
                f"says it is {identity[0]!r} ({identity[1]}); refused until an operator "
                "accepts the change", status_hint=403,
            )
        for kid in [k for k in self._keys if origin(k) == key_origin]:
            del self._keys[kid]
        wall = self._wall_clock()
        for key in instance.keys:
            if origin(key.key_id) == key_origin and (key.expires is None or key.expires > wall):
                self._keys[key.key_id] = (key, now)
        while len(self._keys) > self.max_keys:
            self._keys.popitem(last=False)


def signer_key_id(headers: Headers) -> str:
    """The keyId a signed request names, whatever its profile (400/401 if none)."""
    pairs = header_pairs(headers)
    if detect_profile(pairs) == RFC9421_ED25519:
        return rfc9421.parse_signature_input(pairs).key_id
    value = header_value(pairs, "signature")
    assert value is not None  # detect_profile found it
    return cavage.parse_signature_header(value).key_id


async def verify_signed(
    resolver: KeyResolver, method: str, url: str, headers: Headers, body: bytes, *,
    now: float, replay_cache: ReplayCache | None, expected_origin: str | None = None,
    skew: int = DEFAULT_SKEW, accepted_profiles: Collection[str] = PROFILES,
) -> VerifiedSignature:
    """Verify a request signed by a foreign instance, fetching its key as needed.

    A signature that fails with a cached key is tried once more with a freshly fetched
    key: the signer may have rotated. The re-fetch is rate limited by the resolver.
    """
    key_id = signer_key_id(headers)

    async def attempt(key: ForeignKey | None) -> VerifiedSignature:
        def lookup(kid: str) -> object | None:
            return key.public_key if key is not None and kid == key.key_id else None

        return verify_request(method, url, headers, body, resolve_key=lookup, now=now,
                              replay_cache=replay_cache, skew=skew,
                              accepted_profiles=accepted_profiles)

    key = await _resolve(resolver, key_id, expected_origin)
    try:
        return await attempt(key)
    except RemoteProtocolError as exc:
        if exc.status_hint != 401:
            raise
        fresh = await _resolve(resolver, key_id, expected_origin, refresh=True)
        if fresh is None or fresh == key:
            raise
        return await attempt(fresh)


async def _resolve(resolver: KeyResolver, key_id: str, expected_origin: str | None, *,
                   refresh: bool = False) -> ForeignKey | None:
    """The signer's key; a signer whose key document is unusable is not authenticated.

    Parsing a foreign document hints 502 (the peer is broken), right for a client that
    fetched it on purpose. Here a signed request is being verified: whatever the signer
    publishes, the answer to that request is 401, never a 5xx it could provoke.
    """
    try:
        return await resolver.resolve(key_id, expected_origin=expected_origin, refresh=refresh)
    except RemoteProtocolError as exc:
        if exc.status_hint < 500:
            raise
        raise RemoteProtocolError(
            f"the signer's key could not be used: {exc.message}", status_hint=401) from None
