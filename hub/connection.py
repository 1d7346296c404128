"""One live connection: what it watches, what it still has to send, and its writer.

Fan-out never awaits a send. It drops an already-encoded update into the connection's
outbox (keyed by item and field, so a newer value replaces an unsent older one) and wakes
the connection's own writer task, which batches everything pending into one frame.
A slow browser therefore only delays itself, and its backlog is bounded by the number of
fields it watches, whatever the rate of changes.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Awaitable, Callable
from typing import Any

from hub.backend import Viewer

# Close codes (hub/LIVE.md).
CLOSE_BAD_MESSAGES = 4400
CLOSE_SESSION_ENDED = 4401
CLOSE_FORBIDDEN_ORIGIN = 4403
CLOSE_TOO_SLOW = 4408
CLOSE_NO_HEARTBEAT = 4000
CLOSE_GOING_AWAY = 1001

MAX_CONTROL_BACKLOG = 256

Send = Callable[[str], Awaitable[None]]


def dumps(obj: Any) -> str:
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False)


class Connection:
    def __init__(self, viewer: Viewer, send: Send, *, tick: float, now: float) -> None:
        self.viewer = viewer
        self._send = send
        self._tick = tick
        # item id -> tracker id, for every item this connection subscribed to.
        self.items: dict[int, int] = {}
        # item id -> the field names last announced as readable (for "fields" frames).
        self.announced: dict[int, frozenset[str]] = {}
        # Events at or below the floor are not sent: the client has them already.
        self.floor = 0
        # While a catch-up is read from the log, live updates wait here, in order.
        self.holding: list[tuple[int, str, int, str]] | None = None
        self._pending: dict[tuple[int, str], tuple[int, str]] = {}
        self._controls: list[str] = []
        self._wakeup = asyncio.Event()
        self.sending_since: float | None = None
        self.last_received = now
        self.last_ping = now
        self.sent_frames = 0
        self.closed: asyncio.Future[tuple[int, str]] = (
            asyncio.get_running_loop().create_future()
        )
        self._writer = asyncio.create_task(self._write_loop(), name="fieldcast-live-writer")

    # ---- filled by the hub (synchronous: never awaits) ----------------------------------

    def push_update(self, item: int, field: str, event: int, encoded: str) -> None:
        if event <= self.floor:
            return
        if self.holding is not None:
            self.holding.append((item, field, event, encoded))
            return
        self._pending[(item, field)] = (event, encoded)
        self._wakeup.set()

    def push_control(self, message: dict[str, Any]) -> None:
        if len(self._controls) >= MAX_CONTROL_BACKLOG:
            self.close(CLOSE_TOO_SLOW, "too many unsent messages; reload and reconnect")
            return
        self._controls.append(dumps(message))
        self._wakeup.set()

    def release_holding(self) -> None:
        held, self.holding = self.holding or [], None
        for item, field, event, encoded in held:
            self.push_update(item, field, event, encoded)

    @property
    def backlog(self) -> int:
        return len(self._pending) + len(self._controls)

    def close(self, code: int, reason: str) -> None:
        if not self.closed.done():
            self.closed.set_result((code, reason))
        self._writer.cancel()

    # ---- the writer ---------------------------------------------------------------------

    async def _write_loop(self) -> None:
        last_sent = 0.0
        while True:
            await self._wakeup.wait()
            # At most one frame per tick: the first update after a quiet spell goes out at
            # once (one pass of the log is fanned out without yielding, so it is all here),
            # and under load what arrives meanwhile shares the next frame. Each frame costs
            # a lock, a write and a drain in Hypercorn and a signal in Quart, so batching
            # is what lets a busy hub keep up. No timer unless one is needed.
            wait = last_sent + self._tick - time.monotonic()
            if wait > 0:
                await asyncio.sleep(wait)
            self._wakeup.clear()
            updates, self._pending = self._pending, {}
            controls, self._controls = self._controls, []
            if updates:
                # Positions only grow within a frame, whatever order they were replaced in.
                parts = sorted(updates.values())
                await self._timed_send(
                    '{"type":"updates","updates":[' + ",".join(p for _, p in parts) + "]}"
                )
            for frame in controls:
                await self._timed_send(frame)
            last_sent = time.monotonic()

    async def _timed_send(self, frame: str) -> None:
        self.sending_since = time.monotonic()
        try:
            await self._send(frame)
        finally:
            self.sending_since = None
        self.sent_frames += 1
