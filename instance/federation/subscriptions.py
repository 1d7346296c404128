"""Subscriptions and intents in SQL: the hub endpoint's requests, the verification
worker's ``hub.verifier.IntentStore``, and the reads of the admin view and projector.

Every change of a subscription's state goes through ``protocol.websub.transition``;
``_allowed`` asks the same table whether an event applies before acting on it.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import delete, or_, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncSession

from hub.verifier import Intent
from instance.db import Database
from instance.models import FederationIntent, FederationSubscription
from protocol.states import (
    SUBSCRIPTION_TRANSITIONS,
    SubscriptionEvent,
    SubscriptionState,
    transition,
)
from protocol.websub import (
    MODE_DENIED,
    MODE_SUBSCRIBE,
    MODE_UNSUBSCRIBE,
    SubscribeRequest,
    UnsubscribeRequest,
    new_challenge,
)

log = logging.getLogger("fieldcast.federation")

State, Event = SubscriptionState, SubscriptionEvent
#: A subscription that exists or is being verified; a refused request never ends it.
LIVE_STATES = frozenset({State.ACTIVE, State.PENDING_VERIFICATION})

_subs, _intents = FederationSubscription.__table__, FederationIntent.__table__


def _allowed(state: SubscriptionState, event: SubscriptionEvent) -> bool:
    return (state, event) in SUBSCRIPTION_TRANSITIONS


def _advance(state: str, event: SubscriptionEvent) -> SubscriptionState:
    return SubscriptionState(transition(SubscriptionState(state), event))


def _insert(session: AsyncSession) -> Any:
    return (sqlite if session.get_bind().dialect.name == "sqlite" else postgresql).insert


async def _locked_subscription(session: AsyncSession, topic: str, callback: str
                               ) -> FederationSubscription | None:
    query = select(FederationSubscription).where(FederationSubscription.topic == topic,
                                                 FederationSubscription.callback == callback)
    return (await session.execute(query.with_for_update())).scalar_one_or_none()


async def _put_intent(session: AsyncSession, now: datetime, **values: Any) -> None:
    """Queue an intent for (topic, callback), replacing any older one (latest counts)."""
    row = {"item_id": None, "tracker_id": None, "subscriber_origin": None, "secret": None,
           "lease_seconds": None, "reason": None, **values, "challenge": None, "attempts": 0,
           "next_attempt_at": now, "claimed_until": None, "created_at": now, "last_error": None}
    stmt = _insert(session)(_intents).values(**row)
    stmt = stmt.on_conflict_do_update(
        index_elements=["topic", "callback"],
        set_={k: stmt.excluded[k] for k in row if k not in ("topic", "callback")},
    )
    await session.execute(stmt)


@dataclass(frozen=True, slots=True)
class Target:
    """What a subscription is about: one item topic or one tracker's Atom feed."""

    item_id: int | None = None
    tracker_id: int | None = None

    def __post_init__(self) -> None:
        if (self.item_id is None) == (self.tracker_id is None):
            raise ValueError("a target is an item or a tracker's feed, exactly one")

    @property
    def columns(self) -> dict[str, int | None]:
        return {"item_id": self.item_id, "tracker_id": self.tracker_id}


# ---- requests (the hub endpoint, inside its write transaction) ------------------------


async def request_subscribe(session: AsyncSession, req: SubscribeRequest, target: Target,
                            origin: str | None, now: datetime) -> None:
    """Record a subscribe to verify. A new pair starts pending; an existing one takes
    the ``subscribe_requested`` event (an active one stays active until verified)."""
    inserted = await session.execute(
        _insert(session)(_subs).values(
            topic=req.topic, **target.columns, callback=req.callback,
            state=State.PENDING_VERIFICATION.value, created_at=now, updated_at=now,
        ).on_conflict_do_nothing().returning(_subs.c.id)
    )
    if inserted.first() is None:
        sub = await _locked_subscription(session, req.topic, req.callback)
        assert sub is not None
        sub.state = _advance(sub.state, Event.SUBSCRIBE_REQUESTED).value
        sub.updated_at = now
    await _put_intent(session, now, mode=MODE_SUBSCRIBE, topic=req.topic, **target.columns,
                      callback=req.callback, subscriber_origin=origin, secret=req.secret,
                      lease_seconds=req.lease_seconds)


async def request_unsubscribe(session: AsyncSession, req: UnsubscribeRequest,
                              now: datetime) -> bool:
    """Record an unsubscribe to verify, when there is an active subscription to end.

    Anything else has nothing to end (a pending subscribe is refused by a subscriber
    that no longer wants it, when its verification comes)."""
    sub = await _locked_subscription(session, req.topic, req.callback)
    if sub is None or not _allowed(State(sub.state), Event.UNSUBSCRIBE_REQUESTED):
        return False
    sub.state = _advance(sub.state, Event.UNSUBSCRIBE_REQUESTED).value
    sub.updated_at = now
    await _put_intent(session, now, mode=MODE_UNSUBSCRIBE, topic=req.topic,
                      item_id=sub.item_id, tracker_id=sub.tracker_id, callback=req.callback)
    return True


async def request_denial(session: AsyncSession, topic: str, callback: str,
                         target: Target | None, reason: str, now: datetime) -> bool:
    """Queue a ``hub.mode=denied`` for a refused subscribe (REC §5.2). ``target`` is
    None for the feed of a tracker that does not exist.

    Not when the pair has a live subscription: anyone can POST a request naming someone
    else's callback, and a refusal of *that* request must not tell the real subscriber
    its subscription ended."""
    sub = await _locked_subscription(session, topic, callback)
    if sub is not None and State(sub.state) in LIVE_STATES:
        return False
    await _put_intent(session, now, mode=MODE_DENIED, topic=topic,
                      **(target.columns if target is not None else {}), callback=callback,
                      reason=reason)
    return True


# ---- the verification worker's store ------------------------------------------------


class SqlIntentStore:
    """``hub.verifier.IntentStore`` on the instance's database."""

    def __init__(self, db: Database) -> None:
        self.db = db

    async def claim(self, now: datetime, limit: int, hold: timedelta) -> list[Intent]:
        async with self.db.write() as session:
            due = (select(FederationIntent)
                   .where(FederationIntent.next_attempt_at <= now,
                          or_(FederationIntent.claimed_until.is_(None),
                              FederationIntent.claimed_until < now))
                   .order_by(FederationIntent.next_attempt_at).limit(limit))
            rows = list((await session.execute(self.db.claimable(due))).scalars())
            claimed = []
            for row in rows:
                row.challenge = new_challenge()
                row.claimed_until = now + hold
                claimed.append(Intent(id=row.id, mode=row.mode, topic=row.topic,
                                      callback=row.callback, challenge=row.challenge,
                                      attempts=row.attempts, lease_seconds=row.lease_seconds,
                                      reason=row.reason))
            return claimed

    async def _take(self, session: AsyncSession, intent: Intent) -> FederationIntent | None:
        """The intent row if this attempt still owns it (same challenge), locked."""
        row = (await session.execute(
            select(FederationIntent).where(FederationIntent.id == intent.id,
                                           FederationIntent.challenge == intent.challenge)
            .with_for_update()
        )).scalar_one_or_none()
        if row is None:
            log.info("intent %s for %s was replaced meanwhile; result dropped",
                     intent.id, intent.callback)
        return row

    async def verified(self, intent: Intent, now: datetime) -> None:
        async with self.db.write() as session:
            row = await self._take(session, intent)
            if row is None:
                return
            sub = await _locked_subscription(session, row.topic, row.callback)
            if row.mode == MODE_SUBSCRIBE:
                assert sub is not None, "a subscribe request creates its subscription row"
                state = State(sub.state)
                if not _allowed(state, Event.VERIFIED):
                    # The old lease ran out while this re-subscription was verified: it
                    # is a subscribe request after the end, then its verification.
                    state = _advance(state, Event.SUBSCRIBE_REQUESTED)
                sub.state = _advance(state, Event.VERIFIED).value
                # REC §5.1: a re-subscription replaces lease and secret once verified.
                sub.subscriber_origin = row.subscriber_origin
                sub.secret = row.secret
                sub.lease_seconds = row.lease_seconds
                sub.lease_expires_at = now + timedelta(seconds=row.lease_seconds or 0)
                sub.verified_at = sub.updated_at = now
                sub.last_error = sub.last_error_at = None
            elif sub is not None and _allowed(State(sub.state), Event.UNSUBSCRIBE_VERIFIED):
                sub.state = _advance(sub.state, Event.UNSUBSCRIBE_VERIFIED).value
                sub.verified_at = sub.updated_at = now
            await session.delete(row)

    async def refused(self, intent: Intent, reason: str, now: datetime) -> None:
        async with self.db.write() as session:
            row = await self._take(session, intent)
            if row is None:
                return
            if row.mode == MODE_DENIED:
                log.info("denial to %s not delivered: %s", row.callback, reason)
            else:
                sub = await _locked_subscription(session, row.topic, row.callback)
                if sub is not None and _allowed(State(sub.state), Event.VERIFICATION_FAILED):
                    # Pending -> denied; active stays active (REC §5.1: unchanged).
                    sub.state = _advance(sub.state, Event.VERIFICATION_FAILED).value
                    sub.last_error = f"{row.mode} not verified: {reason}"
                    sub.last_error_at = sub.updated_at = now
            await session.delete(row)

    async def retry(self, intent: Intent, reason: str, at: datetime) -> None:
        async with self.db.write() as session:
            await session.execute(
                update(FederationIntent)
                .where(FederationIntent.id == intent.id,
                       FederationIntent.challenge == intent.challenge)
                .values(attempts=FederationIntent.attempts + 1, next_attempt_at=at,
                        claimed_until=None, last_error=reason))

    async def denial_sent(self, intent: Intent, now: datetime) -> None:
        async with self.db.write() as session:
            await session.execute(
                delete(FederationIntent).where(FederationIntent.id == intent.id,
                                               FederationIntent.challenge == intent.challenge))

    async def expire_leases(self, now: datetime) -> int:
        expired = _advance(State.ACTIVE, Event.LEASE_EXPIRED)
        async with self.db.write() as session:
            result = await session.execute(
                update(FederationSubscription)
                .where(FederationSubscription.state == State.ACTIVE.value,
                       FederationSubscription.lease_expires_at <= now)
                .values(state=expired.value, updated_at=now)
                .returning(FederationSubscription.id))
            return len(result.all())


# ---- reads -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Subscriber:
    """An active subscription as the delivery side needs it."""

    id: int
    topic: str
    item_id: int | None
    callback: str
    origin: str | None
    secret: str | None
    lease_expires_at: datetime
    tracker_id: int | None = None  # set (and item_id None) for a feed subscription


async def active_subscribers(session: AsyncSession, item_ids: list[int], now: datetime
                             ) -> list[Subscriber]:
    """Active subscriptions to these items whose lease has not run out: an expired
    subscription gets nothing, even before the worker marks it expired."""
    if not item_ids:
        return []
    rows = (await session.execute(
        select(FederationSubscription).where(
            FederationSubscription.item_id.in_(item_ids),
            FederationSubscription.state == State.ACTIVE.value,
            FederationSubscription.lease_expires_at > now)
        .order_by(FederationSubscription.id)
    )).scalars()
    return [Subscriber(s.id, s.topic, s.item_id, s.callback, s.subscriber_origin, s.secret,
                       s.lease_expires_at, s.tracker_id)
            for s in rows if s.lease_expires_at is not None]


async def all_subscriptions(session: AsyncSession) -> list[FederationSubscription]:
    query = select(FederationSubscription).order_by(FederationSubscription.id)
    return list((await session.execute(query)).scalars())
