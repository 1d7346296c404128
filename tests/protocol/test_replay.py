"""Replay cache: refusal, expiry with the window, LRU and per-key bounds."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from protocol.errors import LocalProtocolError, RemoteProtocolError
from protocol.replay import ReplayCache, ReplayedSignature

NOW = 1_000_000.0


def remember(
    cache: ReplayCache, key: str, sig: bytes, *, until: float = NOW + 300, now: float = NOW
) -> None:
    cache.check_and_remember(key, sig, valid_until=until, now=now)


def test_a_replay_is_refused_with_401() -> None:
    cache = ReplayCache()
    remember(cache, "k", b"sig")
    with pytest.raises(ReplayedSignature, match="replayed signature") as info:
        remember(cache, "k", b"sig", now=NOW + 299)
    assert isinstance(info.value, RemoteProtocolError)
    assert info.value.status_hint == 401


def test_keys_are_separate_namespaces() -> None:
    cache = ReplayCache()
    remember(cache, "a", b"sig")
    remember(cache, "b", b"sig")
    assert len(cache) == 2
    assert ("a", b"sig") in cache and ("b", b"sig") in cache and ("c", b"sig") not in cache


def test_entries_expire_with_their_window() -> None:
    cache = ReplayCache()
    remember(cache, "k", b"one", until=NOW + 10)
    remember(cache, "k", b"two", until=NOW + 20)
    assert cache.expire(NOW + 10) == 0  # valid_until is still an accepted instant
    assert cache.expire(NOW + 10.5) == 1
    assert len(cache) == 1 and ("k", b"one") not in cache
    # Once past its window the time checks refuse a repeat, so forgetting it is safe.
    remember(cache, "k", b"one", until=NOW + 30, now=NOW + 11)
    remember(cache, "other", b"x", now=NOW + 25)  # expiry also runs on every check
    assert ("k", b"two") not in cache
    assert cache.entries_for("k") == 1


def test_a_replay_at_the_last_accepted_instant_is_refused() -> None:
    cache = ReplayCache()
    remember(cache, "k", b"sig", until=NOW + 300)
    with pytest.raises(ReplayedSignature):
        remember(cache, "k", b"sig", until=NOW + 300, now=NOW + 300)


def test_already_expired_signatures_are_not_stored() -> None:
    cache = ReplayCache()
    remember(cache, "k", b"late", until=NOW - 1, now=NOW)
    assert len(cache) == 0
    remember(cache, "k", b"last second", until=NOW, now=NOW)
    assert len(cache) == 1


def test_global_bound_evicts_least_recently_seen() -> None:
    cache = ReplayCache(max_entries=3, max_per_key=3)
    for index, key in enumerate("abc"):
        remember(cache, key, b"s", now=NOW + index)
    with pytest.raises(ReplayedSignature):
        remember(cache, "a", b"s", now=NOW + 3)  # a replay refreshes "a"
    remember(cache, "d", b"s", now=NOW + 4)
    assert len(cache) == 3
    assert ("b", b"s") not in cache
    assert all((key, b"s") in cache for key in "acd")


def test_one_key_flooding_evicts_only_its_own_entries() -> None:
    cache = ReplayCache(max_entries=10, max_per_key=3)
    remember(cache, "victim", b"v1")
    remember(cache, "victim", b"v2")
    for index in range(50):
        remember(cache, "flooder", index.to_bytes(4, "big"))
    assert cache.entries_for("flooder") == 3
    assert cache.entries_for("victim") == 2
    assert ("flooder", (49).to_bytes(4, "big")) in cache
    assert ("flooder", (0).to_bytes(4, "big")) not in cache
    with pytest.raises(ReplayedSignature):
        remember(cache, "victim", b"v1")


def test_large_signatures_cost_a_fixed_size() -> None:
    cache = ReplayCache()
    remember(cache, "k", b"x" * 100_000)
    ((stored_key, digest),) = cache._entries
    assert (stored_key, len(digest)) == ("k", 32)


@pytest.mark.parametrize(("entries", "per_key"), [(0, 1), (1, 0), (-5, 10)])
def test_bounds_must_be_positive(entries: int, per_key: int) -> None:
    with pytest.raises(LocalProtocolError):
        ReplayCache(max_entries=entries, max_per_key=per_key)


operations = st.lists(
    st.tuples(
        st.sampled_from(["a", "b", "c", "d"]),  # key
        st.binary(min_size=1, max_size=3),  # signature
        st.integers(0, 50),  # time step
        st.integers(1, 40),  # window length
    ),
    max_size=120,
)


@given(operations, st.integers(1, 8), st.integers(1, 8))
def test_bounds_hold_and_live_replays_are_caught(
    ops: list[tuple[str, bytes, int, int]], max_entries: int, max_per_key: int
) -> None:
    cache = ReplayCache(max_entries=max_entries, max_per_key=max_per_key)
    now = NOW
    for key, signature, step, window in ops:
        now += step
        try:
            remember(cache, key, signature, until=now + window, now=now)
        except ReplayedSignature:
            pass
        assert len(cache) <= max_entries
        assert cache.entries_for(key) <= min(max_per_key, max_entries)
        # Whatever was just accepted or refused is now remembered, so a repeat within
        # the window is refused.
        with pytest.raises(ReplayedSignature):
            remember(cache, key, signature, until=now + window, now=now)
