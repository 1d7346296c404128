"""Federation state for admins: `GET /api/federation/subscriptions` and `/deliveries`."""

from __future__ import annotations

from typing import Any

from quart import Blueprint

from instance.api import schemas
from instance.federation.overview import delivery_views, subscription_views
from instance.openapi import responds, with_query
from instance.web import db, require_admin

bp = Blueprint("federation_admin", __name__, url_prefix="/api/federation")


@bp.get("/subscriptions")
@responds(200, schemas.SubscriptionList)
async def list_subscriptions() -> dict[str, Any]:
    """Every subscription to this instance's hub (admins)."""
    await require_admin()
    async with db().read() as session:
        subs = await subscription_views(session)
    return {"subscriptions": [s.json() for s in subs]}


@bp.get("/deliveries")
@responds(200, schemas.DeliveryList, sample="deliveries")
@with_query(schemas.DeliveriesQuery)
async def list_deliveries(query: schemas.DeliveriesQuery) -> dict[str, Any]:
    """The delivery queue, newest first: what was sent, what waits, what failed."""
    await require_admin()
    async with db().read() as session:
        rows = await delivery_views(session, query.limit)
    return {"deliveries": [d.json() for d in rows]}
