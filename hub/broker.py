"""Wake-ups between processes.

A broker message says only "the log grew, up to event N, touching item I": the hub then
reads the log itself. So a message is a few bytes whatever the value's size, and a lost
message costs latency, not data.

PostgreSQL LISTEN/NOTIFY (no Redis needed): the change log is the outbox and a NOTIFY
is only the wake-up, so payloads stay far below PostgreSQL's 8000-byte cap.

Redis pub/sub uses one channel per shard of items. A process subscribes only to the
shards of items its connections watch (and to one control channel for rights and session
events), so it is not woken by changes nobody on it watches.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import Counter
from collections.abc import Callable
from typing import Any

log = logging.getLogger("fieldcast.broker")

SHARDS = 64


class InProcessBroker:
    """One process: the hub is woken directly by the commit, nothing to carry."""

    async def start(self, wake: Callable[[], None]) -> None:
        pass

    async def publish(self, events: list[tuple[int, int | None]]) -> None:
        pass

    def watch(self, item: int) -> None:
        pass

    def unwatch(self, item: int) -> None:
        pass

    async def close(self) -> None:
        pass


class RedisBroker:
    def __init__(self, url: str, prefix: str) -> None:
        import redis.asyncio as redis

        self._redis = redis.from_url(url)
        self._prefix = prefix
        self._wanted: Counter[int] = Counter()  # shard -> items watched here
        self._changed = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._wake: Callable[[], None] = lambda: None
        self.reconnects = 0

    def _channel(self, shard: int | None) -> str:
        return f"{self._prefix}:ctl" if shard is None else f"{self._prefix}:s{shard}"

    async def start(self, wake: Callable[[], None]) -> None:
        self._wake = wake
        self._task = asyncio.create_task(self._listen(), name="fieldcast-redis-broker")

    async def publish(self, events: list[tuple[int, int | None]]) -> None:
        shards = {None if item is None else item % SHARDS for _, item in events}
        last = str(max(event for event, _ in events))
        try:
            async with self._redis.pipeline(transaction=False) as pipe:
                for shard in shards:
                    pipe.publish(self._channel(shard), last)
                await pipe.execute()
        except Exception:  # the change is committed; pollers will find it
            log.warning("could not publish a wake-up to Redis; other processes will poll")

    def watch(self, item: int) -> None:
        self._wanted[item % SHARDS] += 1
        self._changed.set()

    def unwatch(self, item: int) -> None:
        shard = item % SHARDS
        self._wanted[shard] -= 1
        if self._wanted[shard] <= 0:
            del self._wanted[shard]
        self._changed.set()

    async def _listen(self) -> None:
        delay = 0.5
        first = True
        while True:
            pubsub = self._redis.pubsub()
            try:
                subscribed: set[str] = {self._channel(None)}
                await pubsub.subscribe(*subscribed)
                self._changed.set()  # (re)subscribe to the shards watched now
                if not first:
                    # Whatever was published while we were away is in the log: read it.
                    self._wake()
                first = False
                delay = 0.5
                while True:
                    if self._changed.is_set():
                        self._changed.clear()
                        wanted = {self._channel(None)} | {self._channel(s) for s in self._wanted}
                        if wanted - subscribed:
                            await pubsub.subscribe(*(wanted - subscribed))
                            # A change committed before the subscription was active
                            # published a wake-up nobody heard: read the log now.
                            self._wake()
                        if subscribed - wanted:
                            await pubsub.unsubscribe(*(subscribed - wanted))
                        subscribed = wanted
                    message = await pubsub.get_message(ignore_subscribe_messages=True,
                                                       timeout=0.05)
                    if message is not None:
                        self._wake()
            except asyncio.CancelledError:
                raise
            except Exception:  # any Redis failure: back off and resubscribe
                self.reconnects += 1
                log.warning("Redis broker connection lost; reconnecting in %.1fs", delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 10.0)
            finally:
                with contextlib.suppress(Exception):
                    # redis-py leaves PubSub.aclose unannotated.
                    await pubsub.aclose()  # type: ignore[no-untyped-call]

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        await self._redis.aclose()


class PostgresBroker:
    """Wake-ups through PostgreSQL's LISTEN/NOTIFY on one channel per database.

    Every process listens on the one channel: a NOTIFY is a few bytes, and the log read
    it triggers is one indexed query per process.
    """

    def __init__(self, dsn: str, channel: str) -> None:
        self._dsn = dsn
        self._channel = channel
        self._listener: Any = None
        self._sender: Any = None
        self._task: asyncio.Task[None] | None = None
        self._wake: Callable[[], None] = lambda: None
        self._lost = asyncio.Event()
        self.reconnects = 0

    async def start(self, wake: Callable[[], None]) -> None:
        self._wake = wake
        self._task = asyncio.create_task(self._listen(), name="fieldcast-pg-broker")

    async def publish(self, events: list[tuple[int, int | None]]) -> None:
        import asyncpg

        try:
            if self._sender is None or self._sender.is_closed():
                self._sender = await asyncpg.connect(self._dsn)
            last = max(event for event, _ in events)
            await self._sender.execute("SELECT pg_notify($1, $2)", self._channel, str(last))
        except (OSError, asyncpg.PostgresError):
            log.warning("could not NOTIFY a wake-up; other processes will poll")

    def watch(self, item: int) -> None:
        pass

    def unwatch(self, item: int) -> None:
        pass

    async def _listen(self) -> None:
        import asyncpg

        delay = 0.5
        first = True
        while True:
            try:
                self._lost.clear()
                conn = await asyncpg.connect(self._dsn)
                conn.add_termination_listener(lambda _c: self._lost.set())
                await conn.add_listener(self._channel, lambda *_: self._wake())
                if not first:
                    self._wake()  # catch up on what was committed while we were away
                first, delay = False, 0.5
                try:
                    await self._lost.wait()
                finally:
                    with contextlib.suppress(Exception):
                        await conn.close(timeout=2)
                raise ConnectionError("listener connection lost")
            except asyncio.CancelledError:
                raise
            except Exception:  # any PostgreSQL failure: back off and listen again
                self.reconnects += 1
                log.warning("PostgreSQL listener lost; reconnecting in %.1fs", delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 10.0)

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if self._sender is not None:
            with contextlib.suppress(Exception):
                await self._sender.close(timeout=2)
