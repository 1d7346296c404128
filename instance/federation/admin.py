"""``GET /api/federation/subscriptions``: who subscribed to what, for admins."""

from __future__ import annotations

from typing import Any

from quart import Blueprint
from sqlalchemy import select

from instance.accounts import iso
from instance.federation.exports import exported_to
from instance.federation.subscriptions import all_subscriptions
from instance.models import Item
from instance.rights import load_fields
from instance.web import db, require_admin

bp = Blueprint("federation_admin", __name__, url_prefix="/api/federation")


@bp.get("/subscriptions")
async def list_subscriptions() -> dict[str, Any]:
    await require_admin()
    async with db().read() as session:
        subs = await all_subscriptions(session)
        rows = await session.execute(
            select(Item.id, Item.tracker_id).where(Item.id.in_({s.item_id for s in subs})))
        trackers = {item: tracker for item, tracker in rows.all()}
        fields = await load_fields(session, set(trackers.values()))
    out = []
    for s in subs:
        defs = fields.get(trackers.get(s.item_id, -1), [])
        out.append({
            "id": s.id,
            "state": s.state,
            "topic": s.topic,
            "item": s.item_id,
            "callback": s.callback,
            "subscriber_origin": s.subscriber_origin,
            "signed": s.subscriber_origin is not None,
            "has_secret": s.secret is not None,
            "lease_seconds": s.lease_seconds,
            "lease_expires_at": iso(s.lease_expires_at),
            "exported_fields": [f.name for f in exported_to(defs, s.subscriber_origin)],
            "created_at": iso(s.created_at),
            "verified_at": iso(s.verified_at),
            "last_success_at": iso(s.last_success_at),
            "last_error": s.last_error,
            "last_error_at": iso(s.last_error_at),
        })
    return {"subscriptions": out}
