"""``PUT``/``DELETE /api/items/ID/link`` (admins) and ``GET /api/federation/outgoing``."""

from __future__ import annotations

from typing import Any

from quart import Blueprint
from quart.typing import ResponseReturnValue
from sqlalchemy import select

from instance.accounts import iso
from instance.api import schemas
from instance.models import RemoteLink, RemoteSubscription
from instance.openapi import accepts, responds
from instance.remote import links
from instance.remote.service import remote
from instance.remote.store import outgoing_subscriptions
from instance.web import require_admin

bp = Blueprint("remote_api", __name__, url_prefix="/api")


@bp.put("/items/<int:item_id>/link")
@responds(200, schemas.Linked)
@accepts(schemas.NewLink)
async def put_link(item_id: int, data: schemas.NewLink) -> ResponseReturnValue:
    """Link an item to an item of another instance, whose fields it mirrors (admins)."""
    # Admins only: a link makes this instance subscribe to another, in its name.
    await require_admin()
    service = remote()
    await links.link(service, item_id, data["url"].strip())
    return await link_view(item_id), 200


@bp.delete("/items/<int:item_id>/link")
@responds(204)
async def delete_link(item_id: int) -> ResponseReturnValue:
    """Unlink an item (admins): its remote fields stop following."""
    await require_admin()
    await links.unlink(remote(), item_id)
    return "", 204


async def link_view(item_id: int) -> dict[str, Any]:
    service = remote()
    async with service.db.read() as session:
        row = (await session.execute(
            select(RemoteLink, RemoteSubscription)
            .join(RemoteSubscription, RemoteSubscription.id == RemoteLink.subscription_id)
            .where(RemoteLink.item_id == item_id))).first()
    if row is None:
        return {"item": item_id, "linked": False}
    link_row, sub = row
    return {"item": item_id, "linked": True, "item_url": link_row.item_url,
            "topic": sub.topic, "instance": sub.instance, "subscription": sub.state,
            "synced_at": iso(sub.synced_at), "unshared": link_row.unshared or {}}


@bp.get("/federation/outgoing")
@responds(200, schemas.OutgoingList)
async def outgoing() -> dict[str, Any]:
    """The subscriptions this instance holds on other instances' hubs (admins)."""
    await require_admin()
    service = remote()
    async with service.db.read() as session:
        rows = await outgoing_subscriptions(session)
    return {"subscriptions": [row.json(service.settings.base_url) for row in rows]}
