"""Federation state for admins: `GET /api/federation/subscriptions` and `/deliveries`."""

from __future__ import annotations

from typing import Any

from quart import Blueprint

from instance.federation.overview import DELIVERIES_SHOWN, delivery_views, subscription_views
from instance.web import db, int_arg, require_admin

bp = Blueprint("federation_admin", __name__, url_prefix="/api/federation")


@bp.get("/subscriptions")
async def list_subscriptions() -> dict[str, Any]:
    await require_admin()
    async with db().read() as session:
        subs = await subscription_views(session)
    return {"subscriptions": [s.json() for s in subs]}


@bp.get("/deliveries")
async def list_deliveries() -> dict[str, Any]:
    """The delivery queue, newest first: what was sent, what waits, what failed."""
    await require_admin()
    limit = int_arg("limit", DELIVERIES_SHOWN, minimum=1, maximum=1000)
    async with db().read() as session:
        rows = await delivery_views(session, limit)
    return {"deliveries": [d.json() for d in rows]}
