"""The change log, and its one owner.

Everything that appends to the log or reads it goes through this module:

- **Append**, inside the transaction that makes the change: ``LogConnection.append``
  takes the event id from the counter row (last, so ids are gap-free and in commit
  order) and inserts the row. Only a ``LogConnection`` may append: the sync connection
  ``ChangeLog.unit`` hands its work (the save path), or one a ``LogSession`` (what
  ``ChangeLog.write`` opens) lends to ``LogSession.sync``. Either keeps the list of what
  it appended in plain sight (``appended``).
- **After commit**, ``ChangeLog`` hands that list to every listener registered
  with ``ChangeLog.on_commit`` (the live hub, federation). Listeners are plain
  callables that must not block: the request that saved does not wait for a broker.
- **Read** after a cursor (``read``), **replay** a range for catch-up (``replay``), and
  the rows a caller may read (``visible``), the newest rows of some fields
  (``recent``), each as ``hub.changes.Change``.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections import deque
from collections.abc import AsyncIterator, Callable, Iterable, Sequence
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import replace
from datetime import datetime
from functools import partial
from itertools import islice
from typing import Any, TypeVar

from sqlalchemy import and_, bindparam, func, insert, or_, select, update
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Session

from hub.changes import Appended, Change, ChangeKind
from instance.clock import as_utc
from instance.db import Database, execute, run, savepoint
from instance.models import Base, EventCounter, Meta, Tracker, User
from instance.models import ChangeLog as ChangeLogRow
from instance.rights import FieldDef, Principal, load_fields

log = logging.getLogger("fieldcast.changelog")

Listener = Callable[[Sequence[Appended]], None]
T = TypeVar("T")


# ---- appending ---------------------------------------------------------------------------

# Typed as tables (a model's __table__ is only a FromClause to the type checker).
_counter = Base.metadata.tables[EventCounter.__tablename__]
_log = Base.metadata.tables[ChangeLogRow.__tablename__]
_users = Base.metadata.tables[User.__tablename__]
_meta = Base.metadata.tables[Meta.__tablename__]
_trackers = Base.metadata.tables[Tracker.__tablename__]
_USERNAME = select(_users.c.username).where(_users.c.id == bindparam("id"))
_LOOK_UP = object()
_NEXT_EVENT = (update(_counter).where(_counter.c.id == 1)
               .values(value=_counter.c.value + 1).returning(_counter.c.value))
_INSERT_EVENT = insert(_log)


class LogConnection:
    """A write transaction's sync connection, which may append to the change log.

    ``appended`` lists what it appended, in order, as the rows the log now holds; after
    the commit ``ChangeLog`` tells the listeners.
    """

    def __init__(self, conn: Connection, appended: list[Change]) -> None:
        self.conn = conn
        self.appended = appended

    def append(self, kind: ChangeKind, *, at: datetime, **row: Any) -> int:
        """Append one row in this transaction; return its event id (see ``record``)."""
        return self.record(kind, at=at, **row).event

    def record(self, kind: ChangeKind, *, at: datetime, by: Any = _LOOK_UP,
               **row: Any) -> Change:
        """Append one row in this transaction; return it as readers will read it.

        Call it last in the transaction: the counter row's lock, taken here, serializes
        commits in id order, and is held only from here to the commit. ``by``: the
        username of ``actor_id``, when the caller knows it (a save does).
        """
        actor = row.get("actor_id")
        if actor is None:
            by = None  # as the table's join says, whatever the caller called itself
        elif by is _LOOK_UP:  # before the counter: its lock is held until the commit
            by = execute(self.conn, _USERNAME, {"id": actor}).scalar()
        assert by is None or isinstance(by, str)
        event_id = execute(self.conn, _NEXT_EVENT).scalar()
        assert event_id is not None, "the initial migration writes the counter row"
        execute(self.conn, _INSERT_EVENT, {"id": event_id, "kind": kind.value, "at": at, **row})
        change = Change(
            event=int(event_id), kind=kind, at=as_utc(at), item=row.get("item_id"),
            tracker=row.get("tracker_id"), field=row.get("field_name"),
            field_id=row.get("field_id"), value=row.get("new_value"),
            version=row.get("new_version"), old_value=row.get("old_value"),
            old_version=row.get("old_version"), item_version=row.get("item_version"),
            by=by, source=row.get("source", "user"), subject=row.get("subject_id"))
        self.appended.append(change)
        return change


class LogSession(AsyncSession):
    """A write transaction (ORM) that may append to the change log.

    ``appended`` lists what it appended, in order; after the commit ``ChangeLog.write``
    tells the listeners.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.appended: list[Change] = []

    async def sync(self, work: Callable[[LogConnection], T]) -> T:
        """Run ``work`` (sync statements, as ``ChangeLog.unit`` runs them) in this
        transaction, after the ORM changes pending so far, so statement order holds."""
        return await self.run_sync(_lend, work, self.appended)


def _lend(session: Session, work: Callable[[LogConnection], T], appended: list[Change]
          ) -> T:
    session.flush()
    return work(LogConnection(session.connection(), appended))


async def append(session: LogSession, kind: ChangeKind, *, at: datetime, **row: Any) -> int:
    """``LogConnection.append`` in an ORM write transaction."""
    return (await record(session, kind, at=at, **row)).event


async def record(session: LogSession, kind: ChangeKind, *, at: datetime, **row: Any
                 ) -> Change:
    """``LogConnection.record`` in an ORM write transaction."""
    return await session.sync(partial(LogConnection.record, kind=kind, at=at, **row))


async def rights_changed(session: LogSession, at: datetime, *, actor_id: int | None = None,
                         subject_id: int | None = None) -> int:
    """Who may read or edit what changed (memberships, field groups, admin flag)."""
    return await append(session, ChangeKind.RIGHTS, at=at, actor_id=actor_id,
                        subject_id=subject_id)


async def sessions_changed(session: LogSession, at: datetime, subject_id: int,
                           *, actor_id: int | None = None) -> int:
    """Some logins of ``subject_id`` ended (logout, password change, account disabled)."""
    return await append(session, ChangeKind.SESSION, at=at, actor_id=actor_id,
                        subject_id=subject_id)


async def export_changed(session: LogSession, at: datetime, *, tracker_id: int,
                         field_id: int, field_name: str, actor_id: int | None = None) -> int:
    """A field's export settings changed: federation must re-check its subscribers."""
    return await append(session, ChangeKind.EXPORT, at=at, tracker_id=tracker_id,
                        field_id=field_id, field_name=field_name, actor_id=actor_id)


async def field_deleted(session: LogSession, at: datetime, *, tracker_id: int, field_id: int,
                        field_name: str, actor_id: int | None = None) -> int:
    return await append(session, ChangeKind.FIELD_DELETED, at=at, tracker_id=tracker_id,
                        field_id=field_id, field_name=field_name, actor_id=actor_id)


# ---- reading -----------------------------------------------------------------------------

# Prebuilt and as columns (no ORM objects): the hub runs the first after every commit.
_COLUMNS = (
    select(_log.c.id, _log.c.kind, _log.c.at, _log.c.item_id, _log.c.tracker_id,
           _log.c.field_name, _log.c.field_id, _log.c.new_value, _log.c.new_version,
           _log.c.old_value, _log.c.old_version, _log.c.item_version, _users.c.username,
           _log.c.source, _log.c.subject_id)
    .outerjoin(_users, _users.c.id == _log.c.actor_id)
)
_ROWS = (_COLUMNS.where(_log.c.id > bindparam("after")).order_by(_log.c.id)
         .limit(bindparam("limit")))
_RECENT = (
    _COLUMNS.where(_log.c.kind == ChangeKind.VALUE.value,
                   _log.c.tracker_id == bindparam("tracker"),
                   _log.c.field_id.in_(bindparam("fields", expanding=True)))
    .order_by(_log.c.id.desc()).limit(bindparam("limit"))
)
_REPLAY = _ROWS.where(
    _log.c.id <= bindparam("upto"), _log.c.kind == ChangeKind.VALUE.value,
    _log.c.item_id.in_(bindparam("items", expanding=True)),
)
_HISTORY = (
    _COLUMNS.where(_log.c.kind == ChangeKind.VALUE.value, _log.c.item_id == bindparam("item"),
                   _log.c.field_id.in_(bindparam("fields", expanding=True)),
                   _log.c.id < bindparam("before"))
    .order_by(_log.c.id.desc()).limit(bindparam("limit"))
)
_HEAD = select(_counter.c.value).where(_counter.c.id == 1)
_EPOCH = select(_meta.c.value).where(_meta.c.key == "log_epoch")


def _change(r: Any) -> Change:
    return Change(event=r.id, kind=ChangeKind(r.kind), at=as_utc(r.at), item=r.item_id,
                  tracker=r.tracker_id, field=r.field_name, field_id=r.field_id,
                  value=r.new_value, version=r.new_version, old_value=r.old_value,
                  old_version=r.old_version, item_version=r.item_version, by=r.username,
                  source=r.source, subject=r.subject_id)


async def epoch(session: AsyncSession) -> str:
    """The log's epoch: positions compare only within one epoch."""
    value = (await run(session, _EPOCH, {})).scalar()
    assert value is not None, "the initial migration writes log_epoch"
    return str(value)


async def head(session: AsyncSession) -> int:
    """The newest event id (0 for an empty log)."""
    return int((await run(session, _HEAD, {})).scalar() or 0)


async def read(session: AsyncSession, after: int, limit: int) -> list[Change]:
    """Rows with id > after, in id order, at most ``limit``."""
    rows = (await run(session, _ROWS, {"after": after, "limit": limit})).all()
    return [_change(r) for r in rows]


async def replay(session: AsyncSession, after: int, upto: int, items: Iterable[int],
                 limit: int) -> list[Change] | None:
    """Value rows after..upto of these items, in order; None if more than ``limit``."""
    ids = list(items)
    if not ids:
        return []
    rows = (await run(session, _REPLAY, {"after": after, "upto": upto, "items": ids,
                                         "limit": limit + 1})).all()
    if len(rows) > limit:
        return None
    return [_change(r) for r in rows]


async def recent(session: AsyncSession, tracker_id: int, field_ids: Iterable[int],
                 limit: int) -> list[Change]:
    """The newest value rows of these fields of one tracker, newest first, at most
    ``limit`` (the Atom feed's entries)."""
    ids = list(field_ids)
    if not ids:
        return []
    rows = (await run(session, _RECENT, {"tracker": tracker_id, "fields": ids,
                                         "limit": limit})).all()
    return [_change(r) for r in rows]


async def history(session: AsyncSession, item_id: int, field_ids: Iterable[int], *,
                  before: int, limit: int) -> tuple[list[Change], int | None]:
    """One item's value rows of these fields before event ``before``, newest first, and
    the ``before`` of the next page (None on the last).

    The caller passes only fields the reader may read: every row scanned is one they
    may see, so pages are full and the cursor is always an event they were shown.
    """
    ids = list(field_ids)
    if not ids:
        return [], None
    rows = (await run(session, _HISTORY, {"item": item_id, "fields": ids, "before": before,
                                          "limit": limit + 1})).all()
    out = [_change(r) for r in rows[:limit]]
    cursor = out[-1].event if len(rows) > limit else None
    if out:
        # The page is every readable row of the item between its oldest and newest, so
        # the reader's item version at each follows from the versions before the oldest.
        oldest_first = await _reader_item_versions(session, out[::-1], out[-1].event - 1, ids)
        out = oldest_first[::-1]
    return out, cursor


#: How far past ``since`` one call of ``visible`` looks when no item is named: the log is
#: then read in id order, and a caller who may read little must not make one call scan
#: all of it. With an item the item's own rows are read (an index), so no window.
VISIBLE_WINDOW = 10_000


def _readable_rows(who: Principal, fields: dict[int, list[FieldDef]]
                   ) -> tuple[Any, list[int]]:
    """The rows ``who`` may read now, as a condition: values of fields they may read,
    creations and deletions of items of trackers they see something of."""
    field_ids = [f.id for defs in fields.values() for f in defs if f.readable_by(who)]
    tracker_ids = [t for t, defs in fields.items()
                   if who.is_admin or any(f.readable_by(who) for f in defs)]
    return or_(
        and_(_log.c.kind == ChangeKind.VALUE.value, _log.c.field_id.in_(field_ids)),
        and_(_log.c.kind.in_([ChangeKind.CREATED.value, ChangeKind.ITEM_DELETED.value]),
             _log.c.tracker_id.in_(tracker_ids)),
    ), field_ids


async def _reader_item_versions(session: AsyncSession, rows: list[Change], since: int,
                                field_ids: list[int]) -> list[Change]:
    """``rows`` with ``item_version`` as the reader sees it: the sum of the versions of
    the fields they may read (as GET /api/items/ID gives it), at each row.

    ``rows`` are every readable row after ``since`` up to the last one, so an item's
    readable fields stand, at each row, at their version at ``since`` plus the rows of
    the page before it."""
    items = {c.item for c in rows if c.kind is ChangeKind.VALUE and c.item is not None}
    if not items:
        return rows
    base = await session.execute(
        select(_log.c.item_id, _log.c.field_id, func.max(_log.c.new_version))
        .where(_log.c.kind == ChangeKind.VALUE.value, _log.c.id <= since,
               _log.c.item_id.in_(items), _log.c.field_id.in_(field_ids))
        .group_by(_log.c.item_id, _log.c.field_id)
    )
    versions: dict[int, dict[int, int]] = {}
    for item_id, field_id, version in base.all():
        versions.setdefault(item_id, {})[field_id] = int(version or 0)
    out = []
    for c in rows:
        if c.kind is ChangeKind.VALUE and c.item is not None and c.field_id is not None:
            fields = versions.setdefault(c.item, {})
            fields[c.field_id] = c.version or 0
            c = replace(c, item_version=sum(fields.values()))
        out.append(c)
    return out


async def visible(
    session: AsyncSession, who: Principal, *, since: int, limit: int,
    item_id: int | None = None, tracker_id: int | None = None,
) -> tuple[list[Change], int, bool]:
    """The rows after ``since`` that ``who`` may read now, the cursor to resume from,
    and whether more rows may follow.

    Clients see field values they may read, and creations and deletions of items of
    trackers they can see something of; rights, session, export and field events are
    for the instance's own readers. The rights are applied in the query, and the cursor
    depends only on what the caller may read: the last row returned when the page is
    full, else where the reading stopped (the head of the log read first, or the end of
    the window). It never stops at a row the caller may not read, so it does not step
    through the events of an item or field hidden from them, and the answer for an item
    they may read nothing of is the answer for an item that does not exist.
    """
    upto = await head(session)
    if tracker_id is not None:
        trackers = [tracker_id]
    else:
        trackers = list((await session.execute(select(_trackers.c.id))).scalars())
    fields = await load_fields(session, trackers)
    readable, field_ids = _readable_rows(who, fields)
    end = upto if item_id is not None else min(upto, since + VISIBLE_WINDOW)
    query = (_COLUMNS.where(_log.c.id > since, _log.c.id <= end, readable)
             .order_by(_log.c.id).limit(limit))
    if item_id is not None:
        query = query.where(_log.c.item_id == item_id)
    if tracker_id is not None:
        query = query.where(_log.c.tracker_id == tracker_id)
    rows = [_change(r) for r in (await session.execute(query)).all()]
    rows = await _reader_item_versions(session, rows, since, field_ids)
    if len(rows) == limit:
        return rows, rows[-1].event, True
    cursor = max(since, end)
    return rows, cursor, cursor < upto


# ---- the owner -----------------------------------------------------------------------------


def _run_units(batch: Sequence[_Unit], appended: list[Change], conn: Connection
               ) -> list[tuple[bool, Any]]:
    """The units' work in one transaction (on the writer thread): (ok, result or error)
    each. A lone unit needs no SAVEPOINT: its error rolls back the transaction."""
    if len(batch) == 1:
        return [(True, batch[0].work(LogConnection(conn, appended)))]
    outcomes: list[tuple[bool, Any]] = []
    for queued in batch:
        mark = len(appended)
        point = savepoint(conn)
        try:
            value = queued.work(LogConnection(conn, appended))
        except Exception as exc:
            point.rollback()
            del appended[mark:]
            outcomes.append((False, exc))
        else:
            point.commit()
            outcomes.append((True, value))
    return outcomes


#: The largest value (in characters of its JSON) a row kept in ``ChangeLog``'s tail
#: may hold, old or new: the tail holds at most TAIL x 2 x this.
TAIL_VALUE_CHARS = 2048


def _small(value: Any) -> bool:
    if value is None or isinstance(value, bool | int | float):
        return True
    if isinstance(value, str):
        return len(value) <= TAIL_VALUE_CHARS
    return len(json.dumps(value)) <= TAIL_VALUE_CHARS


def _settle(done: asyncio.Future[Any], value: Any, *, ok: bool = False) -> None:
    if done.done():
        return
    if ok:
        done.set_result(value)
    elif isinstance(value, asyncio.CancelledError):
        done.cancel()
    else:
        done.set_exception(value)
        done.exception()  # retrieved: a caller that stopped waiting never awaits it


class _Batch:
    """One write transaction shared by the saves that queued for it (group commit)."""

    def __init__(self, stack: AsyncExitStack, session: LogSession) -> None:
        self.stack = stack
        self.session = session
        self.members = 0
        self.done: asyncio.Future[None] = asyncio.get_running_loop().create_future()


class _Unit:
    """A unit of ``ChangeLog.unit`` waiting for the transaction it will share."""

    __slots__ = ("done", "work")

    def __init__(self, work: Callable[[LogConnection], Any]) -> None:
        self.work = work
        self.done: asyncio.Future[Any] = asyncio.get_running_loop().create_future()


class ChangeLog:
    """Opens the transactions that append, and tells the log's readers after commit.

    Two ways in. ``unit`` runs sync work (the save path: statements and nothing else)
    in one thread hop on SQLite, and with group commit, queued units share one
    transaction. ``write`` opens an ORM session for everything else (admin changes,
    item creation, federation), and with group commit its writers share one too.

    With ``group_commit`` (SQLite: one writer per database anyway), writers that queue
    while one is in its transaction join that transaction instead of each paying for
    its own BEGIN, COMMIT and listener wake-up. They take turns on the one session, each
    in a SAVEPOINT of its own, so a write that fails rolls back alone and the others
    stand; each gets its own event ids from the counter row (in turn order, which is
    commit order: gap-free as before) and returns only once the COMMIT that holds it
    has succeeded. The writer that finds nobody queued behind it commits for all.
    """

    #: Writes per shared transaction at most, so a queue of writers never holds the
    #: write lock from others (direct ``Database.write`` users) for long.
    MAX_BATCH = 64
    #: Committed rows kept to answer ``read`` with (SQLite): the readers that follow the
    #: log after each commit (the live hub, the federation projector) are this far
    #: behind at most, unless they fell behind, and then they read the database.
    TAIL = 1024

    def __init__(self, db: Database, *, group_commit: bool = False) -> None:
        self.db = db
        self._listeners: list[Listener] = []
        self.group_commit = group_commit and db.is_sqlite
        self._turn = asyncio.Lock()
        self._queued = 0
        self._batch: _Batch | None = None
        self._flushes: set[asyncio.Task[None]] = set()
        self._units: list[_Unit] = []
        self._draining: asyncio.Task[None] | None = None
        # The newest rows this process committed, gap-free (see ``read``).
        self._tail: deque[Change] = deque(maxlen=self.TAIL)

    def on_commit(self, listener: Listener) -> Callable[[], None]:
        """Call ``listener`` after every commit that appended; returns the undo."""
        self._listeners.append(listener)
        return lambda: self._listeners.remove(listener)

    def _tell(self, appended: Sequence[Change]) -> None:
        self._remember(appended)
        events = [(c.event, c.item) for c in appended]
        for listener in list(self._listeners):
            try:
                listener(events)
            except Exception:  # the change is committed: readers poll and catch up
                log.exception("a change-log listener failed")

    async def unit(self, work: Callable[[LogConnection], T]) -> T:
        """Run ``work`` in a write transaction; its result once that has committed.

        ``work`` is sync code on a ``LogConnection`` (Core statements, no awaits, nothing
        that needs the event loop): on SQLite it runs on the writer thread
        (``Database.write_sync``). With group commit, the units that queue while one
        transaction runs share the next: each in a SAVEPOINT of its own, so one that
        raises rolls back alone and gets its own error, each with its own event ids in
        turn order (gap-free, in commit order), and none answered before the COMMIT
        that holds it.
        """
        if not self.group_commit:
            # Shielded as below: begun is run to its end.
            return await asyncio.shield(self._alone(work))
        queued = _Unit(work)
        self._units.append(queued)
        if self._draining is None:
            self._draining = asyncio.get_running_loop().create_task(self._drain())
        # Shielded: a unit that is queued is run; its caller may stop waiting for it.
        done: T = await asyncio.shield(queued.done)
        return done

    async def _alone(self, work: Callable[[LogConnection], T]) -> T:
        appended: list[Change] = []
        result = await self.db.write_sync(lambda conn: work(LogConnection(conn, appended)))
        if appended:
            self._tell(appended)
        return result

    async def _drain(self) -> None:
        try:
            while self._units:
                batch = self._units[:self.MAX_BATCH]
                del self._units[:self.MAX_BATCH]
                # Shielded: a batch on the writer thread has an outcome its units must
                # hear, and its commit one the listeners must, even at shutdown.
                await asyncio.shield(self._batch_of_units(batch))
        finally:
            self._draining = None
            if self._units:  # cancelled with units queued (shutdown): they hear so
                for queued in self._units:
                    queued.done.cancel()
                self._units.clear()

    async def _batch_of_units(self, batch: list[_Unit]) -> None:
        appended: list[Change] = []
        try:
            outcomes = await self.db.write_sync(partial(_run_units, batch, appended))
        except BaseException as exc:
            # The transaction did not commit: nothing of it was saved.
            for queued in batch:
                _settle(queued.done, exc)
            if not isinstance(exc, Exception):
                raise
            return
        for queued, (ok, value) in zip(batch, outcomes, strict=True):
            _settle(queued.done, value, ok=ok)
        if appended:
            self._tell(appended)

    async def settle(self) -> None:
        """Wait until every unit queued so far has its answer (before shutdown)."""
        while self._draining is not None:
            await asyncio.wait([self._draining])

    @asynccontextmanager
    async def write(self) -> AsyncIterator[LogSession]:
        """A write transaction that may append; committed when the block ends."""
        if self.group_commit:
            async with self._grouped() as session:
                yield session
            return
        async with self.db.write(LogSession) as session:
            yield session
        if session.appended:
            self._tell(session.appended)

    @asynccontextmanager
    async def _grouped(self) -> AsyncIterator[LogSession]:
        self._queued += 1
        try:
            await self._turn.acquire()
        except BaseException:
            # Cancelled while queued: the writer before it may have left the batch open
            # for it; commit that batch if nobody else comes for it.
            self._queued -= 1
            if self._batch is not None:
                task = asyncio.get_running_loop().create_task(self._flush())
                self._flushes.add(task)
                task.add_done_callback(self._flushes.discard)
            raise
        self._queued -= 1
        try:
            batch = self._batch
            if batch is None:
                stack = AsyncExitStack()
                session = await stack.enter_async_context(self.db.write(LogSession))
                batch = self._batch = _Batch(stack, session)
            session = batch.session
            mark = len(session.appended)
            batch.members += 1
            # The first writer of a batch needs no SAVEPOINT: if it fails, the whole
            # transaction, which holds nothing else, is rolled back (a lone save, the
            # one-connection case, saves two statements).
            savepoint = await session.begin_nested() if batch.members > 1 else None
            try:
                yield session
            except BaseException as exc:
                if savepoint is None:
                    self._batch = None
                    await batch.stack.__aexit__(type(exc), exc, exc.__traceback__)
                    batch.done.set_result(None)  # nothing of it was saved; nobody waits
                    raise
                await savepoint.rollback()
                del session.appended[mark:]
                raise
            else:
                if savepoint is not None:
                    await savepoint.commit()
            finally:
                # What one write loaded is not the next one's: each starts as with a
                # session of its own (objects it returns stay usable, detached).
                session.expunge_all()
                if batch is self._batch and (self._queued == 0
                                             or batch.members >= self.MAX_BATCH):
                    self._batch = None
                    # Shielded: a cancelled request must not strand the batch it commits.
                    await asyncio.shield(self._commit(batch))
        finally:
            self._turn.release()
        await batch.done  # raises if the COMMIT failed: then no write of it is saved

    async def _flush(self) -> None:
        async with self._turn:
            batch, self._batch = self._batch, None
            if batch is not None:
                await self._commit(batch)

    async def _commit(self, batch: _Batch) -> None:
        try:
            await batch.stack.aclose()
        except BaseException as exc:
            batch.done.set_exception(exc)
            batch.done.exception()  # retrieved: members that were cancelled never await it
            raise
        batch.done.set_result(None)
        if batch.session.appended:
            self._tell(batch.session.appended)

    async def head(self) -> int:
        async with self.db.read() as session:
            return await head(session)

    async def epoch(self) -> str:
        async with self.db.read() as session:
            return await epoch(session)

    def _remember(self, committed: Sequence[Change]) -> None:
        if not self.db.is_sqlite or not committed:
            return
        tail = self._tail
        if tail and committed[0].event != tail[-1].event + 1:
            tail.clear()  # another process committed in between: a new run
        for change in committed:
            if _small(change.value) and _small(change.old_value):
                tail.append(change)
            else:
                # Not kept (TAIL rows of 200,000-character texts would be gigabytes):
                # the run ends here, and a read that needs this row reads the table.
                tail.clear()

    async def read(self, after: int, limit: int) -> list[Change]:
        """Rows with id > after, in id order, at most ``limit``.

        On SQLite, from the rows this process committed when they hold row after + 1:
        ids are gap-free, so a run of them without a gap is what the table holds for
        those ids (the rows are immutable). Rows past the run, another process's (the
        CLI's), are read from the database by the next read after the run, as the
        readers' polls do. Not on PostgreSQL, where other workers commit all the time and
        a broker wakes the readers for their rows: a read that stopped at this
        process's run would leave those rows to the next poll.
        """
        tail = self._tail
        if limit > 0 and tail and tail[0].event <= after + 1 <= tail[-1].event:
            start = after + 1 - tail[0].event
            return list(islice(tail, start, start + limit))
        async with self.db.read() as session:
            return await read(session, after, limit)

    async def replay(self, after: int, upto: int, items: Iterable[int], limit: int
                     ) -> list[Change] | None:
        async with self.db.read() as session:
            return await replay(session, after, upto, items, limit)
