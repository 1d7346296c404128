"""Replay protection: refuse a signature that was already accepted.

A signed request stays valid for the whole skew window, so anyone who captures one (a
proxy log, a compromised hop) could send it again. The cache remembers every accepted
signature until the time checks would refuse it anyway (``valid_until``), then forgets
it: memory follows the request rate times the window, not the uptime.

Bounds, whatever the peers do:

* at most ``max_entries`` signatures in total; beyond that the least recently seen is
  dropped (LRU);
* at most ``max_per_key`` per key, so one busy or hostile peer evicts only its own
  entries and cannot reopen the replay window for everybody else;
* each entry is a fixed-size SHA-256 of the signature, not the signature itself.

Only signatures that verified are recorded (the caller checks the signature first):
recording unverified ones would let anyone who saw a valid signature in transit
"use it up" with a forged request and get the genuine one refused.

Sans-IO: the clock is an argument. Not thread-safe; use one cache per event loop or
guard it with a lock.
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict

from protocol.errors import LocalProtocolError, RemoteProtocolError

__all__ = ["DEFAULT_MAX_ENTRIES", "DEFAULT_MAX_PER_KEY", "ReplayCache", "ReplayedSignature"]

#: ~330 signed requests per second sustained over a 300 s window; each entry costs
#: about 200 bytes, so the default bound is ~20 MB.
DEFAULT_MAX_ENTRIES = 100_000
DEFAULT_MAX_PER_KEY = 20_000

_Entry = tuple[str, bytes]  # (key id, sha256 of the signature)


class ReplayedSignature(RemoteProtocolError):
    """The same signature by the same key was already accepted within its window."""


class ReplayCache:
    """Bounded memory of accepted signatures per key, expiring with their window."""

    def __init__(
        self, max_entries: int = DEFAULT_MAX_ENTRIES, max_per_key: int = DEFAULT_MAX_PER_KEY
    ) -> None:
        if max_entries < 1 or max_per_key < 1:
            raise LocalProtocolError("replay cache bounds must be at least 1")
        self.max_entries = max_entries
        self.max_per_key = min(max_per_key, max_entries)
        # Global recency order (oldest first) -> valid_until.
        self._entries: OrderedDict[_Entry, float] = OrderedDict()
        # Per key, the same entries in the same order, to find a key's oldest in O(1).
        self._per_key: dict[str, OrderedDict[bytes, None]] = {}

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, item: object) -> bool:
        if not (isinstance(item, tuple) and len(item) == 2):
            return False
        key_id, signature = item
        return (key_id, hashlib.sha256(signature).digest()) in self._entries

    def entries_for(self, key_id: str) -> int:
        """How many signatures of *key_id* are remembered."""
        return len(self._per_key.get(key_id, ()))

    def check_and_remember(
        self, key_id: str, signature: bytes, *, valid_until: float, now: float
    ) -> None:
        """Record a verified signature, or raise :class:`ReplayedSignature` (401)."""
        self.expire(now)
        entry = (key_id, hashlib.sha256(signature).digest())
        seen_until = self._entries.get(entry)
        if seen_until is not None:
            self._entries.move_to_end(entry)
            self._per_key[key_id].move_to_end(entry[1])
            raise ReplayedSignature(
                f"replayed signature: this signature by {key_id!r} was already accepted; "
                "sign every request anew (a fresh created/Date or nonce)",
                status_hint=401,
            )
        if valid_until < now:
            return  # already outside its window; the time checks refuse any repeat
        if self.entries_for(key_id) >= self.max_per_key:
            self._drop((key_id, next(iter(self._per_key[key_id]))))
        elif len(self._entries) >= self.max_entries:
            self._drop(next(iter(self._entries)))
        self._entries[entry] = valid_until
        self._per_key.setdefault(key_id, OrderedDict())[entry[1]] = None

    def expire(self, now: float) -> int:
        """Forget entries whose window has ended; return how many were dropped.

        Walks from the oldest and stops at the first live entry: entries are
        appended with nearly the same window length, so the expired ones gather at
        the front. A live entry ahead of dead ones only delays their removal; the
        bounds still hold.
        """
        dropped = 0
        while self._entries:
            entry, valid_until = next(iter(self._entries.items()))
            # valid_until is the last instant still accepted, so keep it until then.
            if valid_until >= now:
                break
            self._drop(entry)
            dropped += 1
        return dropped

    def _drop(self, entry: _Entry) -> None:
        del self._entries[entry]
        key_id, digest = entry
        bucket = self._per_key[key_id]
        del bucket[digest]
        if not bucket:
            del self._per_key[key_id]
