"""The background workers' common life: rounds run at start, on a wake-up, and by poll.

Every federation worker (verifier, projector, delivery, fetcher) keeps its work durable
in the database and does it in rounds: something was queued (``wake``) or the poll
interval passed, so look for due work and do it. A round that fails (the database is
restarting, a bug) is logged and tried again at the next wake-up or poll; nothing is
lost because the work is still in the database.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

log = logging.getLogger("fieldcast.hub.worker")


class RoundWorker:
    #: Names the asyncio task and the log line of a failed round.
    name = "worker"

    def __init__(self, poll_interval: float, *, gather: float = 0.0) -> None:
        self.poll_interval = poll_interval
        #: Seconds from one round's start to the next's at least, when wake-ups come
        #: faster: what is queued meanwhile shares a round. A wake-up after a quiet
        #: while starts a round at once (0: always at once).
        self.gather = gather
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    async def round(self) -> None:
        """Do the work that is due now."""
        raise NotImplementedError

    async def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name=f"fieldcast-{self.name}")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    def wake(self) -> None:
        """Something was queued: look now rather than at the next poll."""
        self._wake.set()

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            self._wake.clear()
            started = loop.time()
            try:
                await self.round()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("the %s failed a round; its work is kept, trying later",
                              self.name)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self.poll_interval)
            wait = started + self.gather - loop.time()
            if wait > 0 and self._wake.is_set():
                await asyncio.sleep(wait)
