"""The SQL of the subscriber side: ``hub.fetcher.RemoteStore`` and the queries on
``remote_subscriptions`` / ``remote_links`` the endpoints share.

Subscription states are ``protocol.states.SubscriptionState`` and move through
``protocol.states.transition``; ``sync_state`` (live, stale, gone) is what people see.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import exists, func, or_, select
from sqlalchemy.ext.asyncio import AsyncSession

from hub.fetcher import FetchJob, HubJob
from instance.accounts import iso
from instance.changelog import ChangeLog
from instance.db import Database
from instance.models import RemoteLink, RemoteSubscription
from instance.remote import mirror
from protocol.delivery import renew_at
from protocol.documents import ExportedItem
from protocol.states import (
    SUBSCRIPTION_TRANSITIONS,
    SubscriptionEvent,
    SubscriptionState,
    transition,
)

log = logging.getLogger("fieldcast.remote")

State, Event = SubscriptionState, SubscriptionEvent
LIVE, STALE, GONE = "live", "stale", "gone"
CALLBACK_PATH = "/federation/callback/"


def callback_url(base_url: str, token: str) -> str:
    return f"{base_url}{CALLBACK_PATH}{token}"


def advance(sub: RemoteSubscription, event: SubscriptionEvent) -> bool:
    """Apply ``event`` to the subscription if the state table allows it."""
    state = SubscriptionState(sub.state)
    if (state, event) not in SUBSCRIPTION_TRANSITIONS:
        return False
    sub.state = transition(state, event).value
    return True


def subscribe_verified(sub: RemoteSubscription, lease_seconds: int, now: datetime) -> None:
    if not advance(sub, Event.VERIFIED):
        # Verified after the lease ran out: a new subscription, then its verification.
        advance(sub, Event.SUBSCRIBE_REQUESTED)
        advance(sub, Event.VERIFIED)
    sub.awaiting = None
    sub.lease_seconds = lease_seconds
    sub.lease_expires_at = now + timedelta(seconds=lease_seconds)
    sub.renew_at = datetime.fromtimestamp(
        renew_at(now.timestamp(), lease_seconds), now.tzinfo)
    sub.denied_reason = None
    sub.updated_at = now


def queue_fetch(sub: RemoteSubscription, now: datetime) -> None:
    """One fetch job per topic: a pending one is kept, not doubled."""
    if sub.fetch_due_at is None:
        sub.fetch_due_at = now
        sub.fetch_attempts = 0


async def by_token(session: AsyncSession, token: str, *, lock: bool = False
                   ) -> RemoteSubscription | None:
    query = select(RemoteSubscription).where(RemoteSubscription.token == token)
    if lock:
        query = query.with_for_update()
    return (await session.execute(query)).scalar_one_or_none()


async def by_topic(session: AsyncSession, topic: str, *, lock: bool = False
                   ) -> RemoteSubscription | None:
    query = select(RemoteSubscription).where(RemoteSubscription.topic == topic)
    if lock:
        query = query.with_for_update()
    return (await session.execute(query)).scalar_one_or_none()


async def has_links(session: AsyncSession, sub_id: int) -> bool:
    return bool(await session.scalar(
        select(exists().where(RemoteLink.subscription_id == sub_id))))


def _linked() -> object:
    return exists().where(RemoteLink.subscription_id == RemoteSubscription.id)


class SqlRemoteStore:
    """``hub.fetcher.RemoteStore`` on this instance's database."""

    def __init__(self, db: Database, change_log: ChangeLog, base_url: str,
                 lease_seconds: int) -> None:
        self.db = db
        self.change_log = change_log
        self.base_url = base_url
        self.lease_seconds = lease_seconds

    async def claim_fetches(self, now: datetime, limit: int, hold: timedelta) -> list[FetchJob]:
        async with self.db.write() as session:
            due = (select(RemoteSubscription)
                   .where(RemoteSubscription.fetch_due_at <= now,
                          or_(RemoteSubscription.fetch_claimed_until.is_(None),
                              RemoteSubscription.fetch_claimed_until < now))
                   .order_by(RemoteSubscription.fetch_due_at).limit(limit))
            rows = list((await session.execute(self.db.claimable(due))).scalars())
            for row in rows:
                row.fetch_claimed_until = now + hold
            return [FetchJob(r.id, r.topic, r.etag, r.fetch_attempts) for r in rows]

    async def _done(self, session: AsyncSession, sub: RemoteSubscription, now: datetime
                    ) -> None:
        sub.fetch_claimed_until = None
        sub.fetch_attempts = 0
        # A ping announced a newer version while this fetch ran: fetch again.
        newer = (sub.pinged_version is not None
                 and sub.pinged_version > (sub.remote_version or -1))
        sub.fetch_due_at = now if newer else None
        sub.synced_at = sub.updated_at = now
        sub.stale_since = None
        sub.last_error = None

    async def fetched(self, job: FetchJob, document: ExportedItem, etag: str | None,
                      now: datetime) -> None:
        async with self.change_log.write() as session:
            sub = await session.get(RemoteSubscription, job.id, with_for_update=True)
            if sub is None:
                return
            older = sub.remote_version is not None and document.version < sub.remote_version
            if not older:
                sub.remote_version, sub.etag, sub.tracker = document.version, etag, document.tracker
            sub.sync_state, sub.reason = LIVE, None
            await self._done(session, sub, now)
            if not older:
                await mirror.mirror(session, sub, document, now)

    async def not_modified(self, job: FetchJob, now: datetime) -> None:
        async with self.db.write() as session:
            sub = await session.get(RemoteSubscription, job.id, with_for_update=True)
            if sub is None:
                return
            if sub.sync_state == STALE:
                sub.sync_state = LIVE
            if sub.pinged_version is not None and sub.remote_version is not None:
                # The host says nothing changed since what we hold: the ping is answered.
                sub.pinged_version = min(sub.pinged_version, sub.remote_version)
            await self._done(session, sub, now)

    async def gone(self, job: FetchJob, reason: str, now: datetime) -> None:
        async with self.change_log.write() as session:
            sub = await session.get(RemoteSubscription, job.id, with_for_update=True)
            if sub is None:
                return
            sub.sync_state, sub.reason = GONE, reason
            sub.etag = None
            await self._done(session, sub, now)
            await mirror.clear(session, sub, reason, now)

    async def failed(self, job: FetchJob, reason: str, now: datetime,
                     retry_at: datetime | None) -> None:
        async with self.db.write() as session:
            sub = await session.get(RemoteSubscription, job.id, with_for_update=True)
            if sub is None:
                return
            if sub.sync_state != GONE:
                sub.sync_state = STALE
            if sub.stale_since is None:
                sub.stale_since = now
            sub.last_error, sub.last_error_at = reason, now
            sub.fetch_attempts = job.attempts + 1
            sub.fetch_claimed_until = None
            sub.fetch_due_at = retry_at
            sub.updated_at = now
            if retry_at is None:
                log.warning("giving up fetching %s for now: %s", sub.topic, reason)

    async def claim_hub_jobs(self, now: datetime, limit: int, hold: timedelta) -> list[HubJob]:
        async with self.db.write() as session:
            due = (select(RemoteSubscription).where(or_(
                RemoteSubscription.hub_request_due_at <= now,
                (RemoteSubscription.state == State.ACTIVE.value)
                & (RemoteSubscription.renew_at <= now)
                & RemoteSubscription.hub_request.is_(None)),
            ).order_by(RemoteSubscription.id).limit(limit))
            jobs = []
            for sub in (await session.execute(self.db.claimable(due))).scalars():
                mode = sub.hub_request or "subscribe"
                sub.hub_request = mode
                sub.hub_request_due_at = now + hold
                # The callback confirms only what we asked for (REC §5.3.1).
                sub.awaiting = mode
                if mode == "unsubscribe":
                    advance(sub, Event.UNSUBSCRIBE_REQUESTED)
                jobs.append(HubJob(sub.id, mode, sub.hub, sub.topic,
                                   callback_url(self.base_url, sub.token),
                                   sub.hub_request_attempts,
                                   self.lease_seconds if mode == "subscribe" else None))
            return jobs

    async def hub_job_done(self, job: HubJob, error: str | None, now: datetime,
                           retry_at: datetime | None) -> None:
        async with self.db.write() as session:
            sub = await session.get(RemoteSubscription, job.id, with_for_update=True)
            if sub is None:
                return
            sub.updated_at = now
            if error is None:
                sub.hub_request = sub.hub_request_due_at = None
                sub.hub_request_attempts = 0
                if job.mode == "subscribe":
                    sub.renew_at = None  # set again when the hub verifies the renewal
                return
            sub.last_error, sub.last_error_at = f"{job.mode}: {error}", now
            sub.hub_request_attempts = job.attempts + 1
            if retry_at is None:
                sub.hub_request = sub.hub_request_due_at = None
                sub.awaiting = None
                sub.renew_at = None
            else:
                sub.hub_request_due_at = retry_at

    async def queue_stale(self, now: datetime, max_age: timedelta) -> int:
        async with self.db.write() as session:
            query = select(RemoteSubscription).where(
                _linked(), RemoteSubscription.fetch_due_at.is_(None),  # type: ignore[arg-type]
                or_(RemoteSubscription.synced_at.is_(None),
                    RemoteSubscription.synced_at < now - max_age,
                    RemoteSubscription.synced_at < RemoteSubscription.last_ping_at))
            rows = list((await session.execute(query)).scalars())
            for sub in rows:
                queue_fetch(sub, now)
            return len(rows)


@dataclass(frozen=True)
class Outgoing:
    """One subscription this instance holds on another's hub, as admins see it (the API's
    ``/api/federation/outgoing`` and the admin page)."""

    sub: RemoteSubscription
    linked_items: int

    def json(self, base_url: str) -> dict[str, Any]:
        s = self.sub
        return {
            "id": s.id, "topic": s.topic, "instance": s.instance, "hub": s.hub,
            "callback": callback_url(base_url, s.token),
            "state": s.state, "awaiting": s.awaiting, "pending_request": s.hub_request,
            "sync_state": s.sync_state, "reason": s.reason, "denied_reason": s.denied_reason,
            "lease_seconds": s.lease_seconds, "lease_expires_at": iso(s.lease_expires_at),
            "renew_at": iso(s.renew_at), "last_ping_at": iso(s.last_ping_at),
            "last_fetch_at": iso(s.synced_at), "remote_version": s.remote_version,
            "stale_since": iso(s.stale_since), "fetch_due_at": iso(s.fetch_due_at),
            "fetch_attempts": s.fetch_attempts, "last_error": s.last_error,
            "last_error_at": iso(s.last_error_at), "linked_items": self.linked_items,
        }


async def outgoing_subscriptions(session: AsyncSession) -> list[Outgoing]:
    """Every subscription this instance holds, oldest first, with its linked items."""
    counts = {sub: n for sub, n in (await session.execute(
        select(RemoteLink.subscription_id, func.count())
        .group_by(RemoteLink.subscription_id))).all()}
    subs = (await session.execute(
        select(RemoteSubscription).order_by(RemoteSubscription.id))).scalars()
    return [Outgoing(s, counts.get(s.id, 0)) for s in subs]
