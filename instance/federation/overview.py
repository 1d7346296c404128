"""What the hub holds, for its admins: subscriptions and deliveries.

A subscription (and its deliveries) is about an item topic (``item``) or a tracker's
Atom feed (``tracker``, the slug; ``item`` is then None); ``kind`` says which.

One query per concept, used by ``GET /api/federation/subscriptions``, ``fieldcast
federation subscriptions|deliveries`` and the ``/admin/federation`` page, so the three
never disagree. Secrets never leave here: a row says only whether there is one.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from instance.accounts import iso
from instance.federation.exports import exported_to, public_fields
from instance.federation.subscriptions import all_subscriptions
from instance.models import FederationDelivery, FederationSubscription, Item, Tracker
from instance.rights import load_fields

#: The admin views show the newest deliveries; the queue itself may be longer.
DELIVERIES_SHOWN = 200


def _target(item: int | None, tracker: str | None) -> str:
    return f"item {item}" if item is not None else f"feed of {tracker or '(deleted tracker)'}"


@dataclass(frozen=True)
class SubscriptionView:
    id: int
    state: str
    topic: str
    item: int | None  # None for a feed subscription
    tracker: str | None  # the feed's tracker slug; None for an item topic
    callback: str
    subscriber_origin: str | None  # None: an unsigned subscriber, public fields only
    has_secret: bool
    lease_seconds: int | None
    lease_expires_at: datetime | None
    exported_fields: tuple[str, ...]
    created_at: datetime
    verified_at: datetime | None
    last_success_at: datetime | None
    last_error: str | None
    last_error_at: datetime | None

    @property
    def kind(self) -> str:
        return "item" if self.item is not None else "feed"

    @property
    def target(self) -> str:
        return _target(self.item, self.tracker)

    def json(self) -> dict[str, Any]:
        return {
            "id": self.id, "state": self.state, "topic": self.topic, "kind": self.kind,
            "item": self.item, "tracker": self.tracker, "callback": self.callback,
            "subscriber_origin": self.subscriber_origin,
            "signed": self.subscriber_origin is not None, "has_secret": self.has_secret,
            "lease_seconds": self.lease_seconds,
            "lease_expires_at": iso(self.lease_expires_at),
            "exported_fields": list(self.exported_fields),
            "created_at": iso(self.created_at), "verified_at": iso(self.verified_at),
            "last_success_at": iso(self.last_success_at), "last_error": self.last_error,
            "last_error_at": iso(self.last_error_at),
        }


@dataclass(frozen=True)
class DeliveryView:
    id: int
    state: str
    subscription: int
    callback: str
    topic: str
    item: int | None  # None for a feed delivery
    tracker: str | None  # the feed's tracker slug; None for an item topic
    event_id: int
    item_version: int
    fields: tuple[str, ...]
    attempts: int
    next_attempt_at: datetime | None  # shown only while the row waits (pending, retry)
    last_status: int | None
    last_error: str | None
    updated_at: datetime

    @property
    def target(self) -> str:
        return _target(self.item, self.tracker)

    def json(self) -> dict[str, Any]:
        return {
            "id": self.id, "state": self.state, "subscription": self.subscription,
            "callback": self.callback, "topic": self.topic,
            "kind": "item" if self.item is not None else "feed", "item": self.item,
            "tracker": self.tracker,
            "event_id": self.event_id, "item_version": self.item_version,
            "fields": list(self.fields), "attempts": self.attempts,
            "next_attempt_at": iso(self.next_attempt_at), "last_status": self.last_status,
            "last_error": self.last_error, "updated_at": iso(self.updated_at),
        }


async def _slugs(session: AsyncSession, ids: set[int]) -> dict[int, str]:
    if not ids:
        return {}
    rows = await session.execute(select(Tracker.id, Tracker.slug).where(Tracker.id.in_(ids)))
    return {tracker_id: slug for tracker_id, slug in rows.all()}


async def subscription_views(session: AsyncSession) -> list[SubscriptionView]:
    """Every subscription, oldest first, with the fields exported to its subscriber now
    (a feed's: the tracker's public fields)."""
    subs = await all_subscriptions(session)
    trackers: dict[int, int] = {item: tracker for item, tracker in (await session.execute(
        select(Item.id, Item.tracker_id).where(
            Item.id.in_({s.item_id for s in subs if s.item_id is not None}))
    )).all()}
    feeds = {s.tracker_id for s in subs if s.tracker_id is not None}
    fields = await load_fields(session, set(trackers.values()) | feeds)
    slugs = await _slugs(session, feeds)
    views = []
    for s in subs:
        if s.tracker_id is not None:
            exported = public_fields(fields.get(s.tracker_id, []))
        else:
            tracker = trackers.get(s.item_id) if s.item_id is not None else None
            exported = exported_to(fields.get(tracker, []) if tracker is not None else [],
                                   s.subscriber_origin)
        views.append(_subscription(s, slugs.get(s.tracker_id) if s.tracker_id else None,
                                   [f.name for f in exported]))
    return views


def _subscription(s: FederationSubscription, tracker: str | None, exported: list[str]
                  ) -> SubscriptionView:
    return SubscriptionView(
        id=s.id, state=s.state, topic=s.topic, item=s.item_id, tracker=tracker,
        callback=s.callback, subscriber_origin=s.subscriber_origin, has_secret=s.secret is not None,
        lease_seconds=s.lease_seconds, lease_expires_at=s.lease_expires_at,
        exported_fields=tuple(exported), created_at=s.created_at, verified_at=s.verified_at,
        last_success_at=s.last_success_at, last_error=s.last_error,
        last_error_at=s.last_error_at)


async def delivery_views(session: AsyncSession, limit: int = DELIVERIES_SHOWN
                         ) -> list[DeliveryView]:
    """The newest deliveries (any state), newest first, with their subscription's callback."""
    rows = (await session.execute(
        select(FederationDelivery, FederationSubscription.callback)
        .join(FederationSubscription,
              FederationSubscription.id == FederationDelivery.subscription_id)
        .order_by(FederationDelivery.id.desc()).limit(limit)
    )).all()
    slugs = await _slugs(session, {d.tracker_id for d, _ in rows if d.tracker_id is not None})
    return [DeliveryView(
        id=d.id, state=d.state, subscription=d.subscription_id, callback=callback,
        topic=d.topic, item=d.item_id,
        tracker=slugs.get(d.tracker_id) if d.tracker_id is not None else None,
        event_id=d.event_id, item_version=d.item_version,
        fields=tuple(d.fields or ()), attempts=d.attempts,
        next_attempt_at=d.next_attempt_at if d.state in ("pending", "retry") else None,
        last_status=d.last_status, last_error=d.last_error, updated_at=d.updated_at)
        for d, callback in rows]
