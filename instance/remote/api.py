"""``PUT``/``DELETE /api/items/ID/link`` (admins) and ``GET /api/federation/outgoing``."""

from __future__ import annotations

from typing import Any

from quart import Blueprint
from quart.typing import ResponseReturnValue
from sqlalchemy import select

from instance.accounts import iso
from instance.errors import ApiError
from instance.models import RemoteLink, RemoteSubscription
from instance.remote import links
from instance.remote.service import remote
from instance.remote.store import outgoing_subscriptions
from instance.web import json_body, require_admin

bp = Blueprint("remote_api", __name__, url_prefix="/api")


@bp.put("/items/<int:item_id>/link")
async def put_link(item_id: int) -> ResponseReturnValue:
    # Admins only: a link makes this instance subscribe to another, in its name.
    await require_admin()
    data = await json_body()
    url = data.get("url")
    if set(data) != {"url"} or not isinstance(url, str):
        raise ApiError(422, "invalid", 'the body is {"url": "<an item page or topic URL of '
                       'the other instance>"}')
    service = remote()
    await links.link(service, item_id, url.strip())
    return await link_view(item_id), 200


@bp.delete("/items/<int:item_id>/link")
async def delete_link(item_id: int) -> ResponseReturnValue:
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
async def outgoing() -> dict[str, Any]:
    await require_admin()
    service = remote()
    async with service.db.read() as session:
        rows = await outgoing_subscriptions(session)
    return {"subscriptions": [row.json(service.settings.base_url) for row in rows]}
