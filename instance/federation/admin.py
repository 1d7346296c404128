"""``GET /api/federation/subscriptions``: who subscribed to what, for admins."""

from __future__ import annotations

from typing import Any

from quart import Blueprint

from instance.federation.overview import subscription_views
from instance.web import db, require_admin

bp = Blueprint("federation_admin", __name__, url_prefix="/api/federation")


@bp.get("/subscriptions")
async def list_subscriptions() -> dict[str, Any]:
    await require_admin()
    async with db().read() as session:
        subs = await subscription_views(session)
    return {"subscriptions": [s.json() for s in subs]}
