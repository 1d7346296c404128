"""RoundWorker's gathering: while wake-ups come faster than ``gather``, rounds are at
least that far apart and serve what came meanwhile; after a quiet while a wake-up is
served at once."""

from __future__ import annotations

import asyncio

from hub.worker import RoundWorker


class Counting(RoundWorker):
    name = "counting"

    def __init__(self, gather: float) -> None:
        super().__init__(poll_interval=60, gather=gather)
        self.rounds: list[float] = []

    async def round(self) -> None:
        self.rounds.append(asyncio.get_running_loop().time())


async def test_rounds_gather_fast_wake_ups_and_serve_a_lone_one_at_once() -> None:
    worker = Counting(gather=0.2)
    await worker.start()
    try:
        loop = asyncio.get_running_loop()
        await asyncio.sleep(0.3)  # the round at start, then quiet
        assert len(worker.rounds) == 1
        woken = loop.time()
        worker.wake()
        await asyncio.sleep(0.05)
        assert len(worker.rounds) == 2 and worker.rounds[1] - woken < 0.05  # at once
        for _ in range(10):  # a burst, faster than gather
            worker.wake()
            await asyncio.sleep(0.01)
        await asyncio.sleep(0.35)
        # The whole burst served by one round, gather after the one before it.
        assert len(worker.rounds) == 3, worker.rounds
        assert worker.rounds[2] - worker.rounds[1] >= 0.2
    finally:
        await worker.stop()
