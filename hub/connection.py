"""One live connection, and the pacer that decides when connections write their frames.

Fan-out never awaits a send. It appends an already-encoded update to the connection's
outbox and marks the connection for the next flush round. The hub's single pacer runs
those rounds: it wakes each marked connection's writer task, which turns everything
pending into one frame. A slow browser therefore only delays itself.

The outbox keeps every update in log order while it is short; past ``MAX_PENDING`` it
keeps only the latest value of each field (the client converges on the current state
either way), so its size stays bounded by the fields the connection watches, whatever the
rate of changes. Its size in characters is bounded too (``queued_budget``, counting the
frame being sent): 256 updates of a 200,000-character text area are 50 MB, and a client
that never reads would keep them all. Past the budget the connection is closed as too
slow.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

from hub.backend import FieldRights, Viewer

# Close codes (hub/LIVE.md).
CLOSE_BAD_MESSAGES = 4400
CLOSE_SESSION_ENDED = 4401
CLOSE_FORBIDDEN_ORIGIN = 4403
CLOSE_TOO_SLOW = 4408
CLOSE_NO_HEARTBEAT = 4000
CLOSE_GOING_AWAY = 1001
CLOSE_INTERNAL_ERROR = 1011

log = logging.getLogger("fieldcast.hub")

MAX_CONTROL_BACKLOG = 256
# Unsent updates kept in full before superseded values of a field are dropped.
MAX_PENDING = 256

Send = Callable[[str], Awaitable[None]]
# (event, item, field, encoded update, tracker)
Pending = tuple[int, int, str, str, int]


def dumps(obj: Any) -> str:
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False)


class Pacer:
    """Runs flush rounds: at most one frame per connection per round.

    A round costs one frame per marked connection, and each frame costs a lock, a write
    and a drain in Hypercorn, so frames (not updates) are what a busy process spends its
    time on. A round starts as soon as something is marked, at most one per ``tick``.
    When the event loop is busy (saves come back to back), a round that took long holds the
    next one back until its frames have used no more than ``duty`` of the time: updates
    pile up meanwhile and share frames, and the saves that produce them keep their share
    of the CPU. When the process has been idle since the last round, nothing is waiting
    for the CPU, so holding back would only add latency, and the round starts at once.
    """

    # The loop counts as busy when its thread used this much of the time since the last
    # round. Its own thread only: Argon2 and SQLite work in other threads, and do not
    # compete for the loop.
    BUSY_SHARE = 0.75
    # How often a held-back round looks again whether the process is still busy.
    RECHECK = 0.005

    def __init__(self, tick: float, duty: float) -> None:
        if not 0 < duty <= 1:
            raise ValueError(f"frame duty must be in (0, 1], not {duty}")
        self.tick = tick
        self.duty = duty
        self.rounds = 0
        self.held_back = 0.0  # seconds rounds waited because the process was busy
        self._marked: list[Connection] = []
        self._wake = asyncio.Event()
        self._task = asyncio.create_task(self._run(), name="fieldcast-live-pacer")
        self._task.add_done_callback(_report_death)

    def mark(self, conn: Connection) -> None:
        self._marked.append(conn)
        self._wake.set()

    async def stop(self) -> None:
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task

    async def _run(self) -> None:
        started = ended = -1.0
        cpu_at_end = 0.0
        spent = 0.0
        while True:
            await self._wake.wait()
            earliest, paced = started + self.tick, started + spent / self.duty
            while True:
                now = time.monotonic()
                if now < earliest:
                    await asyncio.sleep(earliest - now)
                    continue
                if now >= paced:
                    break
                busy = (time.thread_time() - cpu_at_end) / max(now - ended, 1e-6)
                if busy < self.BUSY_SHARE:
                    break
                await asyncio.sleep(min(self.RECHECK, paced - now))
                self.held_back += time.monotonic() - now
            self._wake.clear()
            marked, self._marked = self._marked, []
            started = time.monotonic()
            for conn in marked:
                conn.flush()
            # The writers woken above run before this task does again: once it resumes,
            # every frame of the round has been handed to its socket (or is waiting on a
            # slow one), and the time since ``started`` is what the round cost.
            await asyncio.sleep(0)
            self.rounds += 1
            ended, cpu_at_end = time.monotonic(), time.thread_time()
            spent = ended - started


class Connection:
    def __init__(self, viewer: Viewer, send: Send, *, pacer: Pacer, now: float,
                 queued_budget: int = 4 * 2**20) -> None:
        self.viewer = viewer
        self._send = send
        self._pacer = pacer
        # item id -> tracker id, for every item this connection subscribed to.
        self.items: dict[int, int] = {}
        # item id -> the rights last announced (for "fields" frames).
        self.announced: dict[int, FieldRights] = {}
        # item id -> the position the client has for it: events at or below it are not
        # sent. Per item: subscribing to one item must not hide another's updates.
        self.floors: dict[int, int] = {}
        # tracker id -> the rights last announced, for every tracker subscribed to: its
        # items' updates and creations reach this connection too.
        self.trackers: dict[int, FieldRights] = {}
        # tracker id -> events at or below it are not sent for that tracker's items.
        self.tracker_floors: dict[int, int] = {}
        # While a catch-up is read from the log, live updates wait here, in order.
        self.holding: list[Pending] | None = None
        self._pending: list[Pending] = []
        self._in_order = True  # whether _pending is sorted by event
        self._collapse_at = MAX_PENDING
        self._controls: list[str] = []
        # Characters waiting in _pending and _controls, and in the frame being sent.
        self.queued = 0
        self._taken = 0  # of ``queued``: taken by the writer, not sent yet
        self._budget = queued_budget
        self._marked = False
        self._go = asyncio.Event()
        self.sending_since: float | None = None
        self.last_received = now
        self.last_ping = now
        self.sent_frames = 0
        self.closed: asyncio.Future[tuple[int, str]] = (
            asyncio.get_running_loop().create_future()
        )
        self._writer = asyncio.create_task(self._write_loop(), name="fieldcast-live-writer")

    # ---- filled by the hub (synchronous: never awaits) ----------------------------------

    def push_entry(self, entry: Pending) -> None:
        """Queue one update; the hub shares one entry among all its readers."""
        event, item, tracker = entry[0], entry[1], entry[4]
        # Sent if the client lacks it through one of the ways it watches: the item, or
        # the item's tracker.
        if self.closed.done() or not (
                (item in self.items and event > self.floors.get(item, 0))
                or (tracker in self.trackers and event > self.tracker_floors.get(tracker, 0))):
            return
        if self.holding is not None:
            self.holding.append(entry)
            return
        pending = self._pending
        if pending and event < pending[-1][0]:
            self._in_order = False  # a catch-up for a newly subscribed item
        pending.append(entry)
        self.queued += len(entry[3])
        if len(pending) > self._collapse_at or self.queued > self._budget:
            self._collapse()
            # Collapse again only when the backlog has doubled: one connection watching
            # more fields than the bound must not sort its whole backlog on every update.
            self._collapse_at = max(MAX_PENDING, 2 * len(self._pending))
            if self._over_budget():
                return
        if not self._marked:
            self._marked = True
            self._pacer.mark(self)

    def push_control(self, message: dict[str, Any]) -> None:
        if self.closed.done():
            return  # nothing more goes out; queuing would only hold memory
        if len(self._controls) >= MAX_CONTROL_BACKLOG:
            self.close(CLOSE_TOO_SLOW, "too many unsent messages; reload and reconnect")
            return
        frame = dumps(message)
        self._controls.append(frame)
        self.queued += len(frame)
        if self.queued > self._budget:
            self._collapse()
            if self._over_budget():
                return
        if not self._marked:
            self._marked = True
            self._pacer.mark(self)

    def _collapse(self) -> None:
        self._pending = _latest_per_field(self._pending)
        self._in_order = True
        self._recount()

    def _recount(self) -> None:
        self.queued = (self._taken + sum(len(e[3]) for e in self._pending)
                       + sum(len(c) for c in self._controls))

    def _over_budget(self) -> bool:
        if self.queued <= self._budget:
            return False
        self.close(CLOSE_TOO_SLOW, f"more than {self._budget} characters waited to be sent; "
                   "reload and reconnect")
        return True

    def release_holding(self) -> None:
        held, self.holding = self.holding or [], None
        for entry in held:
            self.push_entry(entry)

    def forget(self, item: int, readable: frozenset[str]) -> None:
        """Drop queued updates of ``item`` whose field is not in ``readable`` any more."""
        self._pending = [e for e in self._pending if e[1] != item or e[2] in readable]
        self._recount()
        if self.holding is not None:
            self.holding = [e for e in self.holding if e[1] != item or e[2] in readable]

    def forget_tracker(self, tracker: int, readable: frozenset[str]) -> None:
        """Drop queued updates of ``tracker``'s items whose field is not in ``readable``."""
        self._pending = [e for e in self._pending if e[4] != tracker or e[2] in readable]
        self._recount()
        if self.holding is not None:
            self.holding = [e for e in self.holding if e[4] != tracker or e[2] in readable]

    def flush(self) -> None:
        """Called by the pacer: write what is pending now."""
        self._marked = False
        self._go.set()

    @property
    def backlog(self) -> int:
        return len(self._pending) + len(self._controls)

    def close(self, code: int, reason: str) -> None:
        if not self.closed.done():
            self.closed.set_result((code, reason))
        self._writer.cancel()

    # ---- the writer ---------------------------------------------------------------------

    async def _write_loop(self) -> None:
        try:
            await self._write_frames()
        except asyncio.CancelledError:
            raise
        except Exception:
            # Whatever failed (an encode, the server's send), this socket gets no further
            # frame: a socket left open would look live to its client and miss every
            # update from here on. Close it, and say why.
            log.exception("a live writer failed; closing its socket with %d",
                          CLOSE_INTERNAL_ERROR)
            if not self.closed.done():
                self.closed.set_result((CLOSE_INTERNAL_ERROR,
                                        "the server failed to send; reconnect"))

    async def _write_frames(self) -> None:
        while True:
            await self._go.wait()
            self._go.clear()
            updates, self._pending = self._pending, []
            controls, self._controls = self._controls, []
            # Still counted in ``queued`` until sent: a frame stuck on a socket that is
            # not read is memory just like the outbox.
            self._taken = self.queued
            if not self._in_order:
                updates.sort()  # positions only grow within a frame (hub/LIVE.md)
                self._in_order = True
            self._collapse_at = MAX_PENDING
            if updates:
                texts = [u[3] for u in updates]
                await self._timed_send(
                    '{"type":"updates","updates":[' + ",".join(texts) + "]}",
                    sum(map(len, texts)))
            for frame in controls:
                await self._timed_send(frame, len(frame))

    async def _timed_send(self, frame: str, size: int) -> None:
        self.sending_since = time.monotonic()
        try:
            await self._send(frame)
        finally:
            self.sending_since = None
        self._taken -= size
        self.queued -= size
        self.sent_frames += 1


def _report_death(task: asyncio.Task[None]) -> None:
    # Without its pacer no socket of this process gets another frame: say so loudly.
    if not task.cancelled() and task.exception() is not None:
        log.error("the live pacer died; live updates have stopped in this process",
                  exc_info=task.exception())


def _latest_per_field(pending: list[Pending]) -> list[Pending]:
    latest: dict[tuple[int, str], Pending] = {}
    for entry in pending:
        latest[(entry[1], entry[2])] = entry
    # Events are unique, so this is log order.
    return sorted(latest.values())
