"""The SQL behind the federation projector (``hub.projector.ProjectorStore``) and the
delivery worker (``hub.delivery.DeliveryStore``).

Coalescing: at most one *waiting* (pending or retry) row per (subscription, topic), the
partial unique index ``uq_federation_deliveries_waiting``. A change for a pair whose row
is **in flight** leaves that row alone and starts a new pending row; the claim takes no
row of a pair that has another one in flight, so the new row goes out after the current
attempt, with the newest version. Nothing a change owes is lost, and one subscriber never
gets two requests for one topic at the same time.

PostgreSQL: claims use ``FOR UPDATE SKIP LOCKED`` and a lease (``claimed_until``), so two
processes never send one row at once; the projector's cursor row is locked, so two
processes never queue one change twice. SQLite: one process, writes serialized.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import partial
from typing import Any, Protocol

from sqlalchemy import and_, bindparam, exists, or_, select, tuple_, update
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Session, aliased

from hub.changes import Change
from hub.delivery import Claimed
from hub.projector import Audience, Ending, Owed
from instance import changelog
from instance.clock import as_utc
from instance.db import Database, execute
from instance.federation.exports import exported_to, public_fields
from instance.federation.subscriptions import _insert, _put_intent
from instance.models import (
    Base,
    FederationCursor,
    FederationDelivery,
    FederationSubscription,
    Item,
)
from instance.rights import fields_on
from protocol.states import (
    DeliveryEvent,
    DeliveryState,
    SubscriptionEvent,
    SubscriptionState,
    transition,
)
from protocol.websub import MODE_DENIED

log = logging.getLogger("fieldcast.federation.queue")

CURSOR = "federation"
WAITING = (DeliveryState.PENDING.value, DeliveryState.RETRY.value)
_D = FederationDelivery
_S = FederationSubscription
#: Pairs per IN (...) query: well below SQLite's and PostgreSQL's parameter limits.
_CHUNK = 400
# A delivered result (the common one), for many rows at once: executemany.
_deliveries = Base.metadata.tables[FederationDelivery.__tablename__]
_subscriptions = Base.metadata.tables[FederationSubscription.__tablename__]
_DONE = (update(_deliveries).where(_deliveries.c.id == bindparam("did"))
         .values(state=DeliveryState.DONE.value, last_status=bindparam("status"),
                 last_error=None, claimed_until=None, updated_at=bindparam("now")))
_SUCCEEDED = (update(_subscriptions).where(_subscriptions.c.id == bindparam("sid"))
              .values(last_success_at=bindparam("now")))


class _Subscription(Protocol):
    """What ``_visible`` reads of a subscription: an ORM object or a row of its columns."""

    @property
    def id(self) -> int: ...
    @property
    def topic(self) -> str: ...
    @property
    def item_id(self) -> int | None: ...
    @property
    def tracker_id(self) -> int | None: ...
    @property
    def subscriber_origin(self) -> str | None: ...


def _trackers_of(db: Session | Connection, items: dict[int, int | None]
                 ) -> dict[int, int | None]:
    """{item: tracker} with the unknown trackers looked up (a deleted item's stays None)."""
    out = dict(items)
    unknown = [i for i, t in out.items() if t is None]
    if unknown:
        for item_id, tracker_id in db.execute(
                select(Item.id, Item.tracker_id).where(Item.id.in_(unknown))).all():
            out[item_id] = tracker_id
    return out


def _visible(db: Session | Connection, subs: Sequence[_Subscription],
             trackers: dict[int, int | None]) -> list[Audience]:
    """What each subscription may see now (the export rules of exports.py): of its item,
    the fields exported to its subscriber; of a tracker's feed, the public fields."""
    if not subs:
        # The usual case after a save: nobody subscribed to the item or its tracker, and
        # the projector asks after every commit (the field rights would be 2 queries).
        return []
    trackers = _trackers_of(db, trackers)
    feeds = {s.tracker_id for s in subs if s.tracker_id is not None}
    conn = db.connection() if isinstance(db, Session) else db
    fields = fields_on(conn, {t for t in trackers.values() if t is not None} | feeds)
    out = []
    for s in subs:
        if s.tracker_id is not None:
            names = frozenset(f.name for f in public_fields(fields.get(s.tracker_id, [])))
            out.append(Audience(s.id, s.topic, None, names, tracker_id=s.tracker_id))
            continue
        assert s.item_id is not None, "a subscription targets an item or a feed"
        tracker = trackers.get(s.item_id)
        defs = fields.get(tracker, []) if tracker is not None else []
        names = frozenset(f.name for f in exported_to(defs, s.subscriber_origin))
        out.append(Audience(s.id, s.topic, s.item_id, names, tracker))
    return out


# Columns, not ORM objects: the projector asks after every commit.
_AUDIENCE = (
    select(_subscriptions.c.id, _subscriptions.c.topic, _subscriptions.c.item_id,
           _subscriptions.c.tracker_id, _subscriptions.c.subscriber_origin)
    .where(or_(_subscriptions.c.item_id.in_(bindparam("items", expanding=True)),
               _subscriptions.c.tracker_id.in_(bindparam("feeds", expanding=True))),
           _subscriptions.c.state == SubscriptionState.ACTIVE.value,
           _subscriptions.c.lease_expires_at > bindparam("now"))
    .order_by(_subscriptions.c.id)
)


def _audience(items: dict[int, int | None], now: datetime, conn: Connection
              ) -> list[Audience]:
    trackers = _trackers_of(conn, items)
    feeds = sorted({t for t in trackers.values() if t is not None})
    subs = execute(conn, _AUDIENCE, {"items": list(items), "feeds": feeds, "now": now}).all()
    return _visible(conn, subs, trackers)


def _active(now: datetime) -> Any:
    return and_(_S.state == SubscriptionState.ACTIVE.value, _S.lease_expires_at > now)


class SqlProjectorStore:
    def __init__(self, db: Database, log_: changelog.ChangeLog, name: str = CURSOR) -> None:
        self.db = db
        self.log = log_
        self.name = name

    async def ensure_cursor(self, now: datetime) -> None:
        """A new cursor starts at the log's head: history before it owes nobody."""
        async with self.db.write() as session:
            head = await changelog.head(session)
            await session.execute(_insert(session)(FederationCursor.__table__).values(
                name=self.name, event_id=head, updated_at=now).on_conflict_do_nothing())

    async def cursor(self) -> int:
        async with self.db.read() as session:
            value = await session.scalar(
                select(FederationCursor.event_id).where(FederationCursor.name == self.name))
            return int(value or 0)

    async def read(self, after: int, limit: int) -> list[Change]:
        return await self.log.read(after, limit)

    async def audience(self, items: dict[int, int | None]) -> list[Audience]:
        # After every commit: one hop on SQLite (Database.read_sync).
        return await self.db.read_sync(partial(_audience, items, datetime.now(UTC)))

    async def tracker_audience(self, tracker: int | None) -> list[Audience]:
        now = datetime.now(UTC)
        async with self.db.read() as session:
            query = select(_S, Item.tracker_id).join(Item, Item.id == _S.item_id).where(
                _active(now))
            feeds = select(_S).where(_S.tracker_id.is_not(None), _active(now))
            if tracker is not None:
                query = query.where(Item.tracker_id == tracker)
                feeds = feeds.where(_S.tracker_id == tracker)
            rows = (await session.execute(query.order_by(_S.id))).all()
            feed_subs = list((await session.execute(feeds.order_by(_S.id))).scalars())
            items: dict[int, int | None] = {
                r[0].item_id: r[1] for r in rows if r[0].item_id is not None}
            return await session.run_sync(_visible, [r[0] for r in rows] + feed_subs, items)

    async def commit(self, owed: Sequence[Owed], endings: Sequence[Ending], before: int,
                     after: int, now: datetime) -> bool:
        async with self.db.write() as session:
            row = (await session.execute(
                select(FederationCursor).where(FederationCursor.name == self.name)
                .with_for_update())).scalar_one_or_none()
            if row is None or row.event_id != before:
                return False
            await self._upsert(session, owed, now)
            for e in endings:
                await self._end(session, e, now)
            row.event_id, row.updated_at = after, now
            return True

    async def _upsert(self, session: AsyncSession, owed: Sequence[Owed], now: datetime
                      ) -> None:
        """Queue or coalesce every owed notification of the batch.

        The waiting rows of all the batch's pairs are read (and locked) in one query and
        the new rows inserted in one flush: a save watched by K subscribers used to cost
        2K round trips here (a SELECT and an INSERT per pair), the biggest share of the
        host's database time in bench/federation.py.
        """
        waiting: dict[tuple[int, str], FederationDelivery] = {}
        pairs = [(o.subscription_id, o.topic) for o in owed]
        for start in range(0, len(pairs), _CHUNK):
            chunk = pairs[start:start + _CHUNK]
            for found in (await session.execute(
                    select(_D).where(tuple_(_D.subscription_id, _D.topic).in_(chunk),
                                     _D.state.in_(WAITING)).with_for_update()
            )).scalars():
                waiting[(found.subscription_id, found.topic)] = found
        for o in owed:
            row = waiting.get((o.subscription_id, o.topic))
            if row is None:
                session.add(_D(subscription_id=o.subscription_id, topic=o.topic,
                               item_id=o.item_id, tracker_id=o.tracker_id,
                               event_id=o.event_id,
                               item_version=o.item_version, fields=sorted(o.fields),
                               state=DeliveryState.PENDING.value, attempts=0,
                               next_attempt_at=now, created_at=now, updated_at=now))
                continue
            # A retrying row keeps its backoff: a failing callback is not hammered per save.
            row.event_id = max(row.event_id, o.event_id)
            row.item_version = max(row.item_version, o.item_version)
            row.fields = sorted(set(row.fields or []) | o.fields)
            row.updated_at = now
        await session.flush()

    async def _end(self, session: AsyncSession, e: Ending, now: datetime) -> None:
        sub = await session.get(_S, e.subscription_id, with_for_update=True)
        if sub is None or (SubscriptionState(sub.state), SubscriptionEvent.DENIED) not in \
                _DENIABLE:
            return
        sub.state = transition(SubscriptionState(sub.state), SubscriptionEvent.DENIED).value
        sub.last_error, sub.last_error_at, sub.updated_at = e.reason, now, now
        await _put_intent(session, now, mode=MODE_DENIED, topic=sub.topic,
                          item_id=sub.item_id, tracker_id=sub.tracker_id,
                          callback=sub.callback, reason=e.reason)


_DENIABLE = {(SubscriptionState.ACTIVE, SubscriptionEvent.DENIED)}


@dataclass(frozen=True, slots=True)
class _Result:
    delivery: Claimed
    state: DeliveryState
    now: datetime
    status: int | None
    error: str | None
    retry_at: datetime | None
    gone: bool

    @property
    def plain_success(self) -> bool:
        return (self.state is DeliveryState.DONE and self.error is None
                and self.retry_at is None and not self.gone)


def _settle(done: asyncio.Future[None], error: Exception | None) -> None:
    if done.done():
        return
    if error is None:
        done.set_result(None)
    else:
        done.set_exception(error)


class SqlDeliveryStore:
    """Claims and results of the delivery worker.

    Results are written in batches: :meth:`finish` hands its result to one writer task
    and waits until the transaction that records it has committed, so a worker's slot
    frees only once its outcome is durable (a crash before that leaves the row in
    flight, sent again after the claim runs out: at-least-once). A fan-out to K
    subscribers used to be K write transactions of four statements each; the results
    that arrive while one batch is being written go into the next.
    """

    #: Results written in one transaction at most.
    max_batch = 256

    def __init__(self, db: Database) -> None:
        self.db = db
        self._results: list[tuple[_Result, asyncio.Future[None]]] = []
        self._writer: asyncio.Task[None] | None = None

    async def claim(self, now: datetime, limit: int, hold: timedelta) -> list[Claimed]:
        sibling = aliased(FederationDelivery)
        busy = exists().where(sibling.subscription_id == _D.subscription_id,
                              sibling.topic == _D.topic, sibling.id != _D.id,
                              sibling.state == DeliveryState.IN_FLIGHT.value,
                              sibling.claimed_until >= now)
        due = (select(_D).where(
            or_(and_(_D.state.in_(WAITING), _D.next_attempt_at <= now, ~busy),
                and_(_D.state == DeliveryState.IN_FLIGHT.value, _D.claimed_until < now)))
            .order_by(_D.next_attempt_at, _D.id).limit(limit))
        due = self.db.claimable(due, of=_D)
        async with self.db.write() as session:
            rows = list((await session.execute(due)).scalars())
            # One row per pair: a stale in-flight row beside a newer waiting one folds
            # its fields into that one (both owe the same topic) and ends.
            chosen: dict[tuple[int, str], FederationDelivery] = {}
            for row in rows:
                key = (row.subscription_id, row.topic)
                other = chosen.get(key)
                if other is None:
                    chosen[key] = row
                    continue
                stale, newer = (other, row) if other.state == "in_flight" else (row, other)
                newer.fields = sorted(set(newer.fields or []) | set(stale.fields or []))
                released = transition(DeliveryState.IN_FLIGHT, DeliveryEvent.RELEASED)
                stale.state = transition(released, DeliveryEvent.GAVE_UP).value
                stale.last_error, stale.updated_at = "superseded by a newer delivery", now
                chosen[key] = newer
            subs = {s.id: s for s in (await session.execute(
                select(_S).where(_S.id.in_([r.subscription_id for r in chosen.values()]))
            )).scalars()}
            visible = await session.run_sync(_visible, list(subs.values()), {
                s.item_id: None for s in subs.values() if s.item_id is not None})
            names = {a.subscription_id: a.visible for a in visible}
            claimed = []
            for row in chosen.values():
                state = DeliveryState(row.state)
                if state is DeliveryState.IN_FLIGHT:  # its worker died or gave up on it
                    state = transition(state, DeliveryEvent.RELEASED)
                row.state = transition(state, DeliveryEvent.CLAIMED).value
                row.attempts += 1
                row.claimed_until, row.updated_at = now + hold, now
                sub = subs[row.subscription_id]
                # Exports may have shrunk since the change was queued: name only what
                # the subscriber may see now.
                fields = tuple(sorted(set(row.fields or []) & names.get(sub.id, frozenset())))
                claimed.append(Claimed(
                    id=row.id, subscription_id=sub.id, topic=row.topic, item_id=row.item_id,
                    tracker_id=row.tracker_id,
                    event_id=row.event_id, item_version=row.item_version, fields=fields,
                    attempt=row.attempts, callback=sub.callback, origin=sub.subscriber_origin,
                    secret=sub.secret,
                    subscription_active=sub.state == SubscriptionState.ACTIVE.value,
                    lease_expires_at=as_utc(sub.lease_expires_at)
                    if sub.lease_expires_at is not None else None))
            return claimed

    async def finish(self, delivery: Claimed, state: DeliveryState, *, now: datetime,
                     status: int | None = None, error: str | None = None,
                     retry_at: datetime | None = None, gone: bool = False) -> None:
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._results.append(
            (_Result(delivery, state, now, status, error, retry_at, gone), done))
        if self._writer is None or self._writer.done():
            self._writer = asyncio.create_task(self._write_results())
        # Shielded: a worker stopped meanwhile still gets its result recorded.
        await asyncio.shield(done)

    async def _write_results(self) -> None:
        while self._results:
            batch = self._results[:self.max_batch]
            del self._results[:len(batch)]
            try:
                await self._record(batch)
            except Exception:
                # One bad result must not fail the others: each on its own, and only
                # the one that still fails reports it.
                log.exception("writing %d delivery results failed; one by one", len(batch))
                for one in batch:
                    try:
                        await self._record([one])
                    except Exception as exc:
                        _settle(one[1], exc)
                    else:
                        _settle(one[1], None)
                continue
            for _, done in batch:
                _settle(done, None)

    async def _record(self, batch: list[tuple[_Result, asyncio.Future[None]]]) -> None:
        plain = sorted((r for r, done in batch if r.plain_success and not done.done()),
                       key=lambda r: r.delivery.id)
        others = [r for r, done in batch if not r.plain_success and not done.done()]
        async with self.db.write() as session:
            for r in others:
                await self._finish_one(session, r)
            if not plain:
                return
            await session.flush()
            conn = await session.connection()
            # Ignored unless the row is still in flight under this very attempt (another
            # worker may have re-claimed it after the claim ran out).
            query = select(_D.id, _D.attempts).where(
                _D.id.in_([r.delivery.id for r in plain]),
                _D.state == DeliveryState.IN_FLIGHT.value).order_by(_D.id)
            if not self.db.is_sqlite:
                query = query.with_for_update()
            current = {did: attempts for did, attempts in (await conn.execute(query)).all()}
            mine = [r for r in plain if current.get(r.delivery.id) == r.delivery.attempt]
            for r in plain:
                if r not in mine:
                    log.info("delivery %d was re-claimed meanwhile; result dropped",
                             r.delivery.id)
            if not mine:
                return
            await conn.execute(_DONE, [{"did": r.delivery.id, "status": r.status,
                                        "now": r.now} for r in mine])
            await conn.execute(_SUCCEEDED, [
                {"sid": sid, "now": now} for sid, now in sorted(
                    {r.delivery.subscription_id: r.now for r in mine}.items())])

    async def _finish_one(self, session: AsyncSession, r: _Result) -> None:
        delivery, state, now = r.delivery, r.state, r.now
        row = (await session.execute(
            select(_D).where(_D.id == delivery.id, _D.attempts == delivery.attempt,
                             _D.state == DeliveryState.IN_FLIGHT.value).with_for_update()
        )).scalar_one_or_none()
        if row is None:
            log.info("delivery %d was re-claimed meanwhile; result dropped", delivery.id)
            return
        row.state, row.last_status, row.last_error = state.value, r.status, r.error
        row.claimed_until, row.updated_at = None, now
        if r.retry_at is not None:
            row.next_attempt_at = r.retry_at
        if state is DeliveryState.RETRY:
            await self._fold_into_waiting(session, row, now)
        sub = await session.get(_S, delivery.subscription_id, with_for_update=True)
        if sub is None:
            return
        if state is DeliveryState.DONE:
            sub.last_success_at = now
        elif r.error is not None:
            sub.last_error, sub.last_error_at = r.error, now
        if r.gone and sub.state == SubscriptionState.ACTIVE.value:
            sub.state = transition(SubscriptionState.ACTIVE,
                                   SubscriptionEvent.CALLBACK_GONE).value
            sub.updated_at = now

    async def _fold_into_waiting(self, session: AsyncSession, row: FederationDelivery,
                                 now: datetime) -> None:
        """A failed row whose pair got a newer waiting row while it was in flight: one
        waiting row per pair, so the newer one takes its fields and its backoff."""
        with session.no_autoflush:  # this row, flushed as retry now, would collide
            newer = (await session.execute(
                select(_D).where(_D.subscription_id == row.subscription_id,
                                 _D.topic == row.topic, _D.state.in_(WAITING),
                                 _D.id != row.id).with_for_update()
            )).scalar_one_or_none()
        if newer is None:
            return
        newer.fields = sorted(set(newer.fields or []) | set(row.fields or []))
        newer.attempts = max(newer.attempts, row.attempts)
        newer.next_attempt_at = max(as_utc(newer.next_attempt_at), as_utc(row.next_attempt_at))
        newer.last_status, newer.last_error, newer.updated_at = (
            row.last_status, row.last_error, now)
        row.state = transition(DeliveryState.RETRY, DeliveryEvent.GAVE_UP).value
        row.last_error = f"{row.last_error}; folded into delivery {newer.id}"
