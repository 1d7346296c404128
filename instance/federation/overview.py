"""What the hub holds, for its admins: subscriptions and deliveries.

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
from instance.federation.exports import exported_to
from instance.federation.subscriptions import all_subscriptions
from instance.models import FederationDelivery, FederationSubscription, Item
from instance.rights import load_fields

#: The admin views show the newest deliveries; the queue itself may be longer.
DELIVERIES_SHOWN = 200


@dataclass(frozen=True)
class SubscriptionView:
    id: int
    state: str
    topic: str
    item: int
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

    def json(self) -> dict[str, Any]:
        return {
            "id": self.id, "state": self.state, "topic": self.topic, "item": self.item,
            "callback": self.callback, "subscriber_origin": self.subscriber_origin,
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
    item: int
    event_id: int
    item_version: int
    fields: tuple[str, ...]
    attempts: int
    next_attempt_at: datetime | None  # shown only while the row waits (pending, retry)
    last_status: int | None
    last_error: str | None
    updated_at: datetime

    def json(self) -> dict[str, Any]:
        return {
            "id": self.id, "state": self.state, "subscription": self.subscription,
            "callback": self.callback, "topic": self.topic, "item": self.item,
            "event_id": self.event_id, "item_version": self.item_version,
            "fields": list(self.fields), "attempts": self.attempts,
            "next_attempt_at": iso(self.next_attempt_at), "last_status": self.last_status,
            "last_error": self.last_error, "updated_at": iso(self.updated_at),
        }


async def subscription_views(session: AsyncSession) -> list[SubscriptionView]:
    """Every subscription, oldest first, with the fields exported to its subscriber now."""
    subs = await all_subscriptions(session)
    trackers: dict[int, int] = {item: tracker for item, tracker in (await session.execute(
        select(Item.id, Item.tracker_id).where(Item.id.in_({s.item_id for s in subs}))
    )).all()}
    fields = await load_fields(session, set(trackers.values()))
    return [_subscription(s, [f.name for f in exported_to(
        fields.get(trackers.get(s.item_id, -1), []), s.subscriber_origin)]) for s in subs]


def _subscription(s: FederationSubscription, exported: list[str]) -> SubscriptionView:
    return SubscriptionView(
        id=s.id, state=s.state, topic=s.topic, item=s.item_id, callback=s.callback,
        subscriber_origin=s.subscriber_origin, has_secret=s.secret is not None,
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
    )).tuples()
    return [DeliveryView(
        id=d.id, state=d.state, subscription=d.subscription_id, callback=callback,
        topic=d.topic, item=d.item_id, event_id=d.event_id, item_version=d.item_version,
        fields=tuple(d.fields or ()), attempts=d.attempts,
        next_attempt_at=d.next_attempt_at if d.state in ("pending", "retry") else None,
        last_status=d.last_status, last_error=d.last_error, updated_at=d.updated_at)
        for d, callback in rows]
