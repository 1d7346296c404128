"""The federation projector: the change log's second reader, beside the live hub.

It reads the log from a **durable** cursor, asks the instance (through
:class:`ProjectorStore`, no SQL here) which subscriptions may see which fields, and
hands the store one coalesced :class:`Owed` per (subscription, topic) together with the
new cursor, which the store writes in ONE transaction: a crash between reading and
queueing re-reads the same changes (at-least-once), never skips one. The store applies
the batch only if the cursor is still where this reader found it, so two processes
reading the same log queue each change once.

Woken by a change-log listener (:meth:`Projector.committed`) and by a slow poll, like
``hub.hub.Hub._read_loop``: the wake-up carries nothing, the log is the truth.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Protocol

from hub.changes import Appended, Change, ChangeKind
from hub.worker import RoundWorker

log = logging.getLogger("fieldcast.hub.projector")


@dataclass(frozen=True, slots=True)
class Audience:
    """One active subscription and the field names it may see now.

    An item topic's has ``item_id`` and its item's tracker as ``tracker_id`` (what a
    re-check is keyed by); a tracker feed's has no ``item_id``, only ``tracker_id`` (and
    sees the tracker's public fields, of every item).
    """

    subscription_id: int
    topic: str
    item_id: int | None
    visible: frozenset[str]
    tracker_id: int | None = None


@dataclass(slots=True)
class Owed:
    """The notification owed to one subscription for one topic, coalesced over a batch."""

    subscription_id: int
    topic: str
    item_id: int | None  # None for a feed, which has ``tracker_id``
    event_id: int
    #: The version the topic answers after these changes: the host's newest event the
    #: subscriber may see of the item (its exported values, its tracker's export
    #: settings), so a hidden edit never moves it. 0 for a feed: it spans items.
    item_version: int
    fields: set[str] = field(default_factory=set)
    tracker_id: int | None = None


@dataclass(frozen=True, slots=True)
class Ending:
    """A subscription left with nothing it may see: end it with a denial (REC §5.2)."""

    subscription_id: int
    reason: str


class ProjectorStore(Protocol):
    async def cursor(self) -> int:
        """The durable position: every change up to it is queued."""

    async def read(self, after: int, limit: int) -> list[Change]:
        """Change-log rows after ``after``, in order."""

    async def audience(self, items: dict[int, int | None]) -> list[Audience]:
        """Active subscriptions to these items ({item: tracker, None if unknown}) and to
        the feeds of their trackers, and what each may see now."""

    async def tracker_audience(self, tracker: int | None) -> list[Audience]:
        """Active subscriptions to the items and the feed of ``tracker`` (None: of
        every tracker)."""

    async def commit(self, owed: Sequence[Owed], endings: Sequence[Ending], before: int,
                     after: int, now: datetime) -> bool:
        """In one transaction: upsert the deliveries, end the subscriptions, move the
        cursor from ``before`` to ``after``. False (and nothing written) if the cursor
        was not at ``before`` any more (another process got there first)."""


@dataclass(frozen=True)
class ProjectorConfig:
    #: Seconds between looks at the log when no commit woke the projector (another
    #: process wrote, or a listener call was lost).
    poll_interval: float = 2.0
    batch: int = 500
    #: A batch that owes nobody anything moves the cursor in memory only, written down
    #: at most this often (and at stop): otherwise every save would cost a second write
    #: transaction, which on SQLite queues behind and beside the saves themselves
    #: (bench/writes.py: 58 -> 37 saves/s with one client). Re-reading such a batch
    #: after a crash owes nothing again, or a refresh ping to a newer subscriber.
    cursor_flush: float = 1.0
    #: Seconds between rounds at least while commits come faster: one round (a read
    #: of the changed items' subscriptions) then serves the commits of that while,
    #: not each its own (bench/writes.py: with one client, a round after every save
    #: cost a third of the save). After a quiet while a commit is read at once.
    gather: float = 0.05


def _utcnow() -> datetime:
    return datetime.now(UTC)


#: Change kinds after which a subscription may see less than before.
_RECHECK = frozenset({ChangeKind.EXPORT, ChangeKind.FIELD_DELETED, ChangeKind.RIGHTS})
#: Of those, the ones after which a subscriber may hold a field it no longer gets: each
#: subscription of the tracker that still sees something is owed a re-check ping.
_PING_ON_RECHECK = frozenset({ChangeKind.EXPORT, ChangeKind.FIELD_DELETED})


def _feed_tracker(a: Audience) -> int | None:
    """A delivery names its target once: the item, or (for a feed) the tracker."""
    return a.tracker_id if a.item_id is None else None


def project(changes: Sequence[Change], audience: Sequence[Audience],
            rechecked: Sequence[Audience]) -> tuple[list[Owed], list[Ending]]:
    """The pure step: what a batch of changes owes to whom.

    ``audience`` are the subscriptions of the batch's items and of their trackers'
    feeds, ``rechecked`` those of the trackers whose export settings changed. A VALUE
    change is owed to every subscription that may see the field: of its item's topic,
    and of its tracker's feed when the field is public; the union of field names and the
    newest event is kept per (subscription, topic), and is an item topic's version (what
    its topic answers right after; instance/federation/exports.py). ITEM_DELETED is
    owed to every subscription of the topic, with no field names: the last notification,
    after which the topic answers 410; and to the tracker's feed, which drops the item.
    An EXPORT or FIELD_DELETED change is owed, with no field names and its own event as
    the version, to every subscription of that tracker that still sees something: a
    re-check, after which the subscriber fetches and clears what it no longer gets
    (PROTOCOL.md, "The callback"). One that sees nothing is ended.
    """
    by_item: dict[int, list[Audience]] = {}
    by_tracker: dict[int, list[Audience]] = {}
    for a in audience:
        if a.item_id is not None:
            by_item.setdefault(a.item_id, []).append(a)
        elif a.tracker_id is not None:
            by_tracker.setdefault(a.tracker_id, []).append(a)
    owed: dict[tuple[int, str], Owed] = {}
    for change in changes:
        if change.item is None or change.kind not in (ChangeKind.VALUE, ChangeKind.ITEM_DELETED):
            continue
        feeds = by_tracker.get(change.tracker, []) if change.tracker is not None else []
        for a in [*by_item.get(change.item, ()), *feeds]:
            if change.kind is ChangeKind.VALUE and change.field not in a.visible:
                continue
            entry = owed.get((a.subscription_id, a.topic))
            version = change.event if a.item_id is not None else 0
            if entry is None:
                entry = owed[(a.subscription_id, a.topic)] = Owed(
                    a.subscription_id, a.topic, a.item_id, change.event, version,
                    tracker_id=_feed_tracker(a))
            entry.event_id = max(entry.event_id, change.event)
            entry.item_version = max(entry.item_version, version)
            if change.kind is ChangeKind.VALUE and change.field is not None:
                entry.fields.add(change.field)
    recheck_at: dict[int | None, int] = {}
    for change in changes:
        if change.kind in _PING_ON_RECHECK:
            recheck_at[change.tracker] = max(recheck_at.get(change.tracker, 0), change.event)
    for a in rechecked:
        event = recheck_at.get(a.tracker_id)
        if not a.visible or event is None:
            continue
        version = event if a.item_id is not None else 0
        entry = owed.get((a.subscription_id, a.topic))
        if entry is None:
            owed[(a.subscription_id, a.topic)] = Owed(a.subscription_id, a.topic, a.item_id,
                                                      event, version,
                                                      tracker_id=_feed_tracker(a))
        else:
            entry.event_id = max(entry.event_id, event)
            entry.item_version = max(entry.item_version, version)
    endings = [Ending(a.subscription_id, "the topic no longer exports anything to this "
                      "subscriber") for a in rechecked if not a.visible]
    return list(owed.values()), endings


class Projector(RoundWorker):
    name = "projector"

    def __init__(self, store: ProjectorStore, config: ProjectorConfig | None = None, *,
                 on_queued: Callable[[], None] = lambda: None,
                 clock: Callable[[], datetime] = _utcnow) -> None:
        self.store = store
        self.config = config or ProjectorConfig()
        self.on_queued = on_queued
        self.clock = clock
        super().__init__(self.config.poll_interval, gather=self.config.gather)
        # The durable cursor as last read or written, and the position in memory, which
        # may be ahead of it by batches that owed nobody anything.
        self._durable: int | None = None
        self._position: int | None = None
        self._written_at = time.monotonic()

    def committed(self, appended: Sequence[Appended]) -> None:
        """The change-log listener: something was committed, read the log."""
        self.wake()

    async def round(self) -> None:
        while await self.run_once():
            pass

    async def stop(self) -> None:
        await super().stop()
        with contextlib.suppress(Exception):
            await self._write_position()

    async def _write_position(self) -> None:
        """Write down the in-memory position, if it is ahead of the durable one."""
        if self._durable is None or self._position is None or self._position <= self._durable:
            return
        if await self.store.commit((), (), self._durable, self._position, self.clock()):
            self._durable = self._position
        else:
            self._durable = self._position = None  # another reader moved it: read it anew
        self._written_at = time.monotonic()

    async def run_once(self) -> bool:
        """Project one batch; True if there may be more to read."""
        if self._durable is None or self._position is None:
            self._durable = self._position = await self.store.cursor()
        before = self._position
        changes = await self.store.read(before, self.config.batch)
        if not changes:
            if time.monotonic() - self._written_at >= self.config.cursor_flush:
                await self._write_position()
            return False
        items: dict[int, int | None] = {}
        for c in changes:
            if c.item is not None and c.kind in (ChangeKind.VALUE, ChangeKind.ITEM_DELETED):
                items[c.item] = c.tracker
        audience = await self.store.audience(items) if items else []
        rechecked: list[Audience] = []
        recheck = {c.tracker if c.kind is not ChangeKind.RIGHTS else None
                   for c in changes if c.kind in _RECHECK}
        if None in recheck:
            rechecked = await self.store.tracker_audience(None)
        else:
            for tracker in recheck:
                rechecked += await self.store.tracker_audience(tracker)
        owed, endings = project(changes, audience, rechecked)
        after = changes[-1].event
        if not owed and not endings:
            self._position = after
            if time.monotonic() - self._written_at >= self.config.cursor_flush:
                await self._write_position()
            return len(changes) == self.config.batch
        # The durable cursor moves over the batches that owed nothing too: they were
        # projected from the same position.
        if await self.store.commit(owed, endings, self._durable, after, self.clock()):
            self._durable = self._position = after
            self._written_at = time.monotonic()
            self.on_queued()
        else:
            log.info("another reader moved the federation cursor past %d first",
                     self._durable)
            self._durable = self._position = None
        return len(changes) == self.config.batch
