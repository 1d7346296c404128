"""The per-process hub: reads the change log in order and fans it out to connections.

The broker only wakes the hub up; what to send always comes from the log, read from the
hub's own cursor. Event ids are gap-free and in commit order, so reading ``id > cursor``
yields every change exactly once and in order: a lost, late or duplicated wake-up, or a
broker reconnect, costs latency and never an update. A slow poll covers wake-ups that
never come (a change made by the CLI, a broker outage).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from hub.backend import FieldRights, LiveBackend, Viewer
from hub.broker import SHARDS
from hub.changes import Appended, Change, ChangeKind
from hub.connection import (
    CLOSE_GOING_AWAY,
    CLOSE_NO_HEARTBEAT,
    CLOSE_SESSION_ENDED,
    CLOSE_TOO_SLOW,
    Connection,
    Pacer,
    Pending,
    Send,
    dumps,
)
from protocol.timestamps import format_timestamp

log = logging.getLogger("fieldcast.hub")
NO_RIGHTS = FieldRights()


class Broker(Protocol):
    """Carries wake-ups between processes. See hub/broker.py."""

    async def start(self, wake: Any) -> None: ...
    async def publish(self, events: list[Appended]) -> None: ...
    def watch(self, item: int) -> None: ...
    def unwatch(self, item: int) -> None: ...
    async def close(self) -> None: ...


@dataclass(frozen=True)
class HubConfig:
    # The least time between two flush rounds (one frame per connection each); updates
    # arriving meanwhile share the next frame.
    tick: float = 0.02
    # The most of the time that flush rounds may take while the process is busy: a long
    # round (many sockets) delays the next one, so saves keep the CPU they need and more
    # updates share each frame. 0.3 beat the bare broadcast baseline at 1000 sockets in
    # bench/fanout.py; an idle process never waits (see Pacer).
    frame_duty: float = 0.3
    # How often the log is read when no wake-up came.
    poll_interval: float = 1.0
    heartbeat: float = 25.0
    # A send that has not finished after this long marks the client as too slow.
    send_timeout: float = 10.0
    # The most characters of frames one connection may have waiting (its outbox and the
    # frame being sent); past it, superseded values are dropped, then the connection is
    # closed as too slow. The largest single update (a 200,000-character text area,
    # escaped) fits several times.
    queued_budget: int = 4 * 2**20
    # How long closing a socket may wait for its close frame to be sent; after that the
    # endpoint drops the TCP connection (a client that does not read never takes it).
    close_grace: float = 2.0
    # The most log rows a catch-up may replay before it answers recovered: false.
    replay_limit: int = 5000
    read_batch: int = 1000
    max_items: int = 500
    max_trackers: int = 20


class Hub:
    def __init__(self, backend: LiveBackend, broker: Broker | None = None,
                 config: HubConfig | None = None) -> None:
        self.backend = backend
        self.broker = broker
        self.config = config or HubConfig()
        self.cursor = 0
        self.connections: set[Connection] = set()
        self._watchers: dict[int, set[Connection]] = defaultdict(set)
        self._tracker_watchers: dict[int, set[Connection]] = defaultdict(set)
        self._watching_everything = False
        # (user, tracker) -> that user's rights on that tracker's fields.
        self._rights: dict[tuple[int | None, int], FieldRights] = {}
        self._rights_generation = 0  # counts rights events read
        self._wake = asyncio.Event()
        self._to_publish: list[Appended] = []
        self._publish_wake = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self._pacer: Pacer | None = None
        self.delivered = 0
        # Set by `drain`: the server is going away, new sockets are closed at once.
        self._draining = False
        self._drained = asyncio.Event()

    # ---- life cycle ---------------------------------------------------------------------

    async def start(self) -> None:
        self.cursor = await self.backend.head()
        self._pacer = Pacer(self.config.tick, self.config.frame_duty)
        if self.broker is not None:
            await self.broker.start(self.wake)
        self._tasks = [
            asyncio.create_task(self._read_loop(), name="fieldcast-hub-read"),
            asyncio.create_task(self._housekeeping(), name="fieldcast-hub-housekeeping"),
        ]
        if self.broker is not None:
            self._tasks.append(
                asyncio.create_task(self._publish_loop(), name="fieldcast-hub-publish"))

    async def drain(self, grace: float) -> None:
        """Close every socket as going away (1001) and wait, at most ``grace`` seconds, until
        their endpoints have let go of them; sockets that open from now on are closed
        at once.

        For the server to call when it starts to shut down, before it waits for open
        connections to end: the server does not tell a WebSocket handler it is stopping,
        so a socket left open would hold the shutdown for the server's whole grace
        period and then be cancelled (a 1011 for the client, a traceback in the log).
        """
        self._draining = True
        for conn in list(self.connections):
            conn.close(CLOSE_GOING_AWAY, "the server is shutting down")
        if self.connections:
            self._drained.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._drained.wait(), grace)

    async def stop(self) -> None:
        for conn in list(self.connections):
            conn.close(CLOSE_GOING_AWAY, "the server is shutting down")
        if self._pacer is not None:
            await self._pacer.stop()
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        if self.broker is not None:
            await self.broker.close()

    def wake(self) -> None:
        self._wake.set()

    def committed(self, events: Sequence[Appended]) -> None:
        """A change-log listener (``ChangeLog.on_commit``): a commit appended ``events``.

        Wakes this process's reader at once. The wake-up for other processes goes out
        from a task of its own, so a slow broker never delays the request that saved.
        """
        self.wake()
        if self.broker is not None:
            self._to_publish.extend(events)
            self._publish_wake.set()

    async def _publish_loop(self) -> None:
        assert self.broker is not None
        while True:
            await self._publish_wake.wait()
            self._publish_wake.clear()
            # Commits that came while a publish was under way go out as one: a wake-up
            # names the newest event, and readers read everything up to it.
            events, self._to_publish = self._to_publish, []
            if events:
                await self.broker.publish(events)

    # ---- connections --------------------------------------------------------------------

    def connect(self, viewer: Viewer, send: Send) -> Connection:
        assert self._pacer is not None, "the hub is started before it takes connections"
        conn = Connection(viewer, send, pacer=self._pacer, now=time.monotonic(),
                          queued_budget=self.config.queued_budget)
        self.connections.add(conn)
        if self._draining:
            conn.close(CLOSE_GOING_AWAY, "the server is shutting down")
        return conn

    def disconnect(self, conn: Connection) -> None:
        conn.close(CLOSE_GOING_AWAY, "disconnected")
        self.connections.discard(conn)
        self._drop_items(conn, list(conn.items))
        self.unsubscribe_trackers(conn, list(conn.trackers))
        if self._draining and not self.connections:
            self._drained.set()

    def _drop_items(self, conn: Connection, items: Iterable[int]) -> None:
        for item in items:
            conn.items.pop(item, None)
            conn.announced.pop(item, None)
            watchers = self._watchers.get(item)
            if watchers is not None:
                watchers.discard(conn)
                if not watchers:
                    del self._watchers[item]
                    if self.broker is not None:
                        self.broker.unwatch(item)

    def unsubscribe(self, conn: Connection, items: Iterable[int]) -> None:
        self._drop_items(conn, items)

    def unsubscribe_trackers(self, conn: Connection, trackers: Iterable[int]) -> None:
        for tracker in trackers:
            conn.trackers.pop(tracker, None)
            conn.tracker_floors.pop(tracker, None)
            watchers = self._tracker_watchers.get(tracker)
            if watchers is not None:
                watchers.discard(conn)
                if not watchers:
                    del self._tracker_watchers[tracker]
        self._watch_everything(bool(self._tracker_watchers))

    def _watch_everything(self, on: bool) -> None:
        """A tracker's items are any items: while a socket here watches a tracker, this
        process hears the broker's wake-ups for every item (every shard of the Redis
        broker; watching items 0..SHARDS-1 is watching each shard once)."""
        if on == self._watching_everything or self.broker is None:
            return
        self._watching_everything = on
        for item in range(SHARDS):
            (self.broker.watch if on else self.broker.unwatch)(item)

    async def subscribe_trackers(self, conn: Connection, trackers: list[int]
                                 ) -> list[dict[str, Any]]:
        """Start sending the updates of every item of these trackers (of the fields the
        user may read), and ``created`` frames for their new items, from now on.

        No catch-up: a tracker page reloads its rows after a reconnect. Like items, a
        tracker that does not exist is accepted with no rights, so the answer does not
        tell which ids exist. Returns each tracker's rights, for the ``subscribed`` answer.
        """
        new = [t for t in dict.fromkeys(trackers) if t not in conn.trackers]
        if len(conn.trackers) + len(new) > self.config.max_trackers:
            raise ValueError(f"at most {self.config.max_trackers} trackers per connection")
        user = conn.viewer.user_id
        await self._ensure_rights(user, set(new))
        # From now: also past what this process has read, as for items without position.
        floor = max(self.cursor, await self.backend.head())
        out = []
        for tracker in dict.fromkeys(trackers):
            rights = conn.trackers.get(tracker) or self._rights.get((user, tracker), NO_RIGHTS)
            if tracker in new:
                conn.trackers[tracker] = rights
                conn.tracker_floors[tracker] = floor
                self._tracker_watchers[tracker].add(conn)
                self._watch_everything(True)
            out.append({"tracker": tracker, "readable": sorted(rights.readable),
                        "editable": sorted(rights.editable)})
        return out

    async def subscribe(self, conn: Connection, items: list[int],
                        position: tuple[str, int] | None) -> dict[str, Any]:
        """Start sending these items' updates, after replaying what the client missed.

        Catch-up and live updates do not overlap: live updates that arrive while the log
        is read wait in ``conn.holding`` and follow the replayed ones; each item's floor
        keeps anything the client already has from being sent again. The answer carries
        the current rights on each new item, so a client that reconnects learns of rights
        that changed while it was away.
        """
        new = [i for i in dict.fromkeys(items) if i not in conn.items]
        if len(conn.items) + len(new) > self.config.max_items:
            raise ValueError(f"at most {self.config.max_items} items per connection")
        had_items = bool(conn.items)
        user = conn.viewer.user_id
        trackers = await self.backend.trackers_of(new)
        await self._ensure_rights(user, set(trackers.values()))
        conn.holding = []
        try:
            snapshot = self.cursor
            added, fields = [], []
            for item in new:
                # Items that do not exist, and items the user may read nothing of, are
                # accepted silently, with no rights, and not kept: the answer, and every
                # later one (the catch-up, the item count, the offset), must not reveal
                # which ids exist. They never produce updates.
                tracker = trackers.get(item)
                rights = NO_RIGHTS if tracker is None else self._rights[(user, tracker)]
                if not rights.readable:
                    tracker, rights = None, NO_RIGHTS
                fields.append({"item": item, "readable": sorted(rights.readable),
                               "editable": sorted(rights.editable)})
                if tracker is None:
                    continue
                added.append(item)
                conn.items[item] = tracker
                conn.announced[item] = rights
                if not self._watchers[item] and self.broker is not None:
                    self.broker.watch(item)
                self._watchers[item].add(conn)
            recovered: bool | None = None
            floor: int | None = None
            if position is not None:
                epoch, offset = position
                recovered = await self._replay(conn, added, epoch, offset, snapshot)
                if recovered:
                    floor = offset
            if floor is None:
                # From now (no position, or a gap that cannot be replayed and that the
                # client reloads instead): even where this process has not read the log
                # that far yet. Read while live updates are held, so every later event
                # still reaches it.
                floor = max(snapshot, await self.backend.head())
            for item in added:
                conn.floors[item] = max(conn.floors.get(item, 0), floor)
        finally:
            conn.release_holding()
        # The client keeps one position per connection: an offset past what this process
        # has read could make it skip, after a reconnect, events of the items it already
        # watched that are still on their way.
        offset_now = snapshot if had_items else max(snapshot, floor)
        return {"type": "subscribed", "items": items, "recovered": recovered,
                "epoch": self.backend.epoch, "offset": offset_now, "fields": fields}

    async def _replay(self, conn: Connection, items: list[int], epoch: str, offset: int,
                      snapshot: int) -> bool:
        if epoch != self.backend.epoch or offset < 0:
            return False
        if offset >= snapshot or not items:
            return True
        if snapshot - offset > self.config.replay_limit:
            return False
        rows = await self.backend.replay(offset, snapshot, items, self.config.replay_limit)
        if rows is None:
            return False
        # A rights event read meanwhile empties the rights cache: fill it again, then
        # filter without awaiting. Rights are the user's rights now, not when the change
        # was made. All or nothing: the whole replay is built before any of it is queued.
        user = conn.viewer.user_id
        await self._ensure_rights(user, {conn.items[i] for i in items if i in conn.items})
        replay = []
        for rec in rows:
            if rec.item is None or rec.field is None or rec.tracker is None:
                continue
            if rec.field in self._rights.get((user, rec.tracker), NO_RIGHTS).readable:
                replay.append((rec.event, rec.item, rec.field, self._encode(rec), rec.tracker))
        assert conn.holding is not None
        conn.holding[:0] = replay
        return True

    async def _ensure_rights(self, user_id: int | None, trackers: set[int]) -> None:
        while missing := {t for t in trackers if (user_id, t) not in self._rights}:
            generation = self._rights_generation
            answer = await self.backend.field_rights(user_id, missing)
            if generation != self._rights_generation:
                # A rights event was read while we asked: the answer may predate it, and
                # nothing would ask again. Ask again now.
                continue
            for tracker in missing:
                rights = answer.get(tracker, NO_RIGHTS)
                self._rights[(user_id, tracker)] = rights

    # ---- reading the log ----------------------------------------------------------------

    async def _read_loop(self) -> None:
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self.config.poll_interval)
            self._wake.clear()
            try:
                while True:
                    rows = await self.backend.read(self.cursor, self.config.read_batch)
                    for rec in rows:
                        await self._apply(rec)
                        self.cursor = rec.event
                    if len(rows) < self.config.read_batch:
                        break
            except asyncio.CancelledError:
                raise
            except Exception:
                # The database may be restarting; the next wake-up or poll tries again
                # from the same cursor, so nothing is skipped.
                log.exception("reading the change log failed; retrying")
                await asyncio.sleep(self.config.poll_interval)

    async def _apply(self, rec: Change) -> None:
        if rec.kind is ChangeKind.VALUE:
            self._fan_out(rec)
        elif rec.kind is ChangeKind.CREATED:
            self._item_created(rec)
        elif rec.kind is ChangeKind.ITEM_DELETED and rec.item is not None:
            self._item_deleted(rec.item, rec.tracker)
        elif rec.kind in (ChangeKind.RIGHTS, ChangeKind.FIELD_DELETED):
            # A deleted field is no longer readable by anyone: the same as a rights change.
            await self._rights_changed()
        elif rec.kind is ChangeKind.SESSION and rec.subject is not None:
            await self._sessions_changed(rec.subject)

    def _encode(self, rec: Change) -> str:
        return dumps({"item": rec.item, "field": rec.field, "value": rec.value,
                      "version": rec.version, "by": rec.by, "at": format_timestamp(rec.at),
                      "event": rec.event, "epoch": self.backend.epoch})

    def _fan_out(self, rec: Change) -> None:
        item, field, tracker = rec.item, rec.field, rec.tracker
        if item is None or field is None or tracker is None:
            return
        watchers: set[Connection] | None = self._watchers.get(item)
        by_tracker = self._tracker_watchers.get(tracker)
        if by_tracker:
            # A socket watching the item and its tracker gets the update once.
            watchers = by_tracker if not watchers else watchers | by_tracker
        if not watchers:
            return
        # Once per change, shared by every reader: the encoded update, its outbox entry,
        # and the answer to "may this user read it" (many sockets share a user).
        entry: Pending | None = None
        allowed: dict[int | None, bool] = {}
        rights = self._rights
        delivered = 0
        for conn in watchers:
            user = conn.viewer.user_id
            ok = allowed.get(user)
            if ok is None:
                ok = allowed[user] = field in rights.get((user, tracker), NO_RIGHTS).readable
            if not ok:
                continue
            if entry is None:
                entry = (rec.event, item, field, self._encode(rec), tracker)
            conn.push_entry(entry)
            delivered += 1
        self.delivered += delivered

    def _item_created(self, rec: Change) -> None:
        if rec.tracker is None or rec.item is None:
            return
        for conn in self._tracker_watchers.get(rec.tracker, ()):
            # Only a user who may read something of the tracker learns of the new item.
            if (rec.event > conn.tracker_floors.get(rec.tracker, 0) and self._rights.get(
                    (conn.viewer.user_id, rec.tracker), NO_RIGHTS).readable):
                conn.push_control({"type": "created", "item": rec.item, "tracker": rec.tracker,
                                   "event": rec.event, "epoch": self.backend.epoch})

    def _item_deleted(self, item: int, tracker: int | None = None) -> None:
        watching = self._watchers.get(item, set())
        if tracker is not None:
            for conn in self._tracker_watchers.get(tracker, ()):
                if conn not in watching and self._rights.get(
                        (conn.viewer.user_id, tracker), NO_RIGHTS).readable:
                    conn.push_control({"type": "deleted", "item": item})
        for conn in list(self._watchers.get(item, ())):
            tracker = conn.items.get(item)
            # Only a user who could see something of the item learns it is gone.
            if tracker is not None and self._rights.get(
                    (conn.viewer.user_id, tracker), NO_RIGHTS).readable:
                conn.push_control({"type": "deleted", "item": item})
            self._drop_items(conn, [item])

    async def _rights_changed(self) -> None:
        # Any rights event may change any answer: ask again for every watched tracker
        # before the next update is fanned out.
        self._rights_generation += 1
        self._rights.clear()
        needed: dict[int | None, set[int]] = defaultdict(set)
        for conn in self.connections:
            needed[conn.viewer.user_id].update(conn.items.values())
            needed[conn.viewer.user_id].update(conn.trackers)
        for user_id, trackers in needed.items():
            await self._ensure_rights(user_id, trackers)
        for conn in self.connections:
            for item, tracker in conn.items.items():
                # A socket that subscribed during the awaits above filled its own entry;
                # a missing one reads as nothing rather than failing the whole pass.
                now = self._rights.get((conn.viewer.user_id, tracker), NO_RIGHTS)
                before = conn.announced.get(item)
                if now != before:
                    if before is None or not now.readable >= before.readable:
                        # Queued but unsent values of a field the user may no longer
                        # read must not go out after this point of the log either.
                        conn.forget(item, now.readable)
                    conn.announced[item] = now
                    conn.push_control({"type": "fields", "item": item,
                                       "readable": sorted(now.readable),
                                       "editable": sorted(now.editable)})
            for tracker, before in list(conn.trackers.items()):
                now = self._rights.get((conn.viewer.user_id, tracker), NO_RIGHTS)
                if now != before:
                    if not now.readable >= before.readable:
                        conn.forget_tracker(tracker, now.readable)
                    conn.trackers[tracker] = now
                    conn.push_control({"type": "fields", "tracker": tracker,
                                       "readable": sorted(now.readable),
                                       "editable": sorted(now.editable)})

    async def _sessions_changed(self, user_id: int) -> None:
        for conn in [c for c in self.connections if c.viewer.user_id == user_id]:
            if not await self.backend.still_valid(conn.viewer):
                conn.close(CLOSE_SESSION_ENDED, "your session ended; log in again")

    # ---- heartbeats, slow and expired clients -------------------------------------------

    async def _housekeeping(self) -> None:
        cfg = self.config
        while True:
            await asyncio.sleep(min(1.0, cfg.heartbeat / 2))
            now, wall = time.monotonic(), time.time()
            for conn in list(self.connections):
                if conn.sending_since is not None and now - conn.sending_since > cfg.send_timeout:
                    conn.close(CLOSE_TOO_SLOW, "could not keep up; reload and reconnect")
                elif now - conn.last_received > 3 * cfg.heartbeat:
                    conn.close(CLOSE_NO_HEARTBEAT, "no message for three heartbeats")
                elif (conn.viewer.expires_at is not None
                      and conn.viewer.expires_at.timestamp() <= wall):
                    conn.close(CLOSE_SESSION_ENDED, "your session expired; log in again")
                elif now - conn.last_ping >= cfg.heartbeat:
                    conn.last_ping = now
                    conn.push_control({"type": "ping"})
