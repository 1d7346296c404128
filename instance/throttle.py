"""Login throttling: guessing passwords gets slow, a real user is not locked out for long.

Three limits, all on failed logins, kept in this process's memory:

- per (account, address) pair: three failures are free, then each one doubles the wait
  before the next attempt (1 s, 2 s, 4 s, … up to 15 minutes). A correct password resets
  the pair. This is what an attacker at one address meets first.
- per address, over all accounts: a bucket of 30 failures refilled at one per 10 s. It
  stops one address trying one password against many accounts. Only that address waits.
- per account, over all addresses: a bucket of 50 failures refilled at one per 6 s. Once
  it is empty, an address that has failed for this account waits for the refill; an
  address that has not (the real user's, or an attacker's fresh one) still gets one
  attempt per second for the account, so a real user waits at most a second, and many
  addresses together cannot guess faster than that.

Every table is bounded (oldest entries go first), so made-up usernames and addresses
cannot grow memory without end. Several processes throttle independently: with
``workers = N`` an attacker gets up to N times these rates.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from instance.errors import ApiError


@dataclass(frozen=True)
class ThrottleConfig:
    free_failures: int = 3  # per pair, before any wait
    max_pair_wait: float = 900.0  # seconds
    pair_memory: float = 3600.0  # a pair's failures are forgotten after this quiet time
    address_burst: int = 30
    address_refill: float = 10.0  # seconds per failure allowed again
    account_burst: int = 50
    account_refill: float = 6.0
    clean_interval: float = 1.0  # one attempt per this from addresses not failing
    max_entries: int = 100_000  # per table


class _Bucket:
    """Failures allowed: ``burst`` at once, then one per ``refill`` seconds."""

    __slots__ = ("at", "level")

    def __init__(self, now: float) -> None:
        self.level = 0.0  # failures counted, drained over time
        self.at = now

    def drain(self, now: float, refill: float) -> None:
        self.level = max(0.0, self.level - (now - self.at) / refill)
        self.at = now

    def wait(self, burst: int, refill: float) -> float:
        """Seconds until one more failure fits."""
        return max(0.0, (self.level + 1 - burst) * refill)


@dataclass
class _Pair:
    failures: int
    last: float


class LoginThrottle:
    def __init__(self, config: ThrottleConfig | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.config = config or ThrottleConfig()
        self._clock = clock
        self._pairs: dict[tuple[str, str], _Pair] = {}
        self._addresses: dict[str, _Bucket] = {}
        self._accounts: dict[str, _Bucket] = {}
        self._clean_next: dict[str, float] = {}  # account -> next attempt for clean addresses

    def check(self, account: str, address: str) -> None:
        """Before a login is tried: ApiError 429 with Retry-After when it must wait."""
        cfg, now = self.config, self._clock()
        waits = [0.0]
        pair = self._pairs.get((account, address))
        if pair is not None and now - pair.last > cfg.pair_memory:
            del self._pairs[(account, address)]
            pair = None
        if pair is not None and pair.failures >= cfg.free_failures:
            delay = min(2.0 ** (pair.failures - cfg.free_failures), cfg.max_pair_wait)
            waits.append(pair.last + delay - now)
        if (bucket := self._addresses.get(address)) is not None:
            bucket.drain(now, cfg.address_refill)
            waits.append(bucket.wait(cfg.address_burst, cfg.address_refill))
        if (bucket := self._accounts.get(account)) is not None:
            bucket.drain(now, cfg.account_refill)
            account_wait = bucket.wait(cfg.account_burst, cfg.account_refill)
            if account_wait > 0:
                if pair is not None:
                    waits.append(account_wait)
                else:
                    next_clean = self._clean_next.get(account, 0.0)
                    waits.append(next_clean - now)
                    if next_clean <= now:
                        self._remember(self._clean_next, account, now + cfg.clean_interval)
        wait = max(waits)
        if wait > 0:
            seconds = max(1, math.ceil(wait))
            raise ApiError(429, "too_many_attempts",
                           f"too many failed logins; try again in {seconds} s",
                           retry_after=seconds, headers={"Retry-After": str(seconds)})

    def failed(self, account: str, address: str) -> None:
        cfg, now = self.config, self._clock()
        pair = self._pairs.get((account, address))
        if pair is None:
            pair = _Pair(0, now)
            self._remember(self._pairs, (account, address), pair)
        pair.failures += 1
        pair.last = now
        for table, key, refill in ((self._addresses, address, cfg.address_refill),
                                   (self._accounts, account, cfg.account_refill)):
            bucket = table.get(key)
            if bucket is None:
                bucket = _Bucket(now)
                self._remember(table, key, bucket)
            bucket.drain(now, refill)
            bucket.level += 1

    def succeeded(self, account: str, address: str) -> None:
        self._pairs.pop((account, address), None)

    def _remember(self, table: dict[Any, Any], key: object, value: object) -> None:
        if key not in table and len(table) >= self.config.max_entries:
            del table[next(iter(table))]  # the oldest
        table[key] = value
