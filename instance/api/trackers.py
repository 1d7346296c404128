"""Trackers and fields: anyone sees the trackers and fields they may read; admins manage."""

from __future__ import annotations

from typing import Any

from quart import Blueprint
from quart.typing import ResponseReturnValue

from instance import trackers
from instance.errors import not_found
from instance.rights import Principal
from instance.web import change_log, db, json_body, principal, require_admin

bp = Blueprint("trackers", __name__, url_prefix="/api/trackers")


@bp.get("")
async def list_trackers() -> ResponseReturnValue:
    who = await principal()
    async with db().read() as session:
        shown = await trackers.visible_trackers(session, who)
        names = await trackers.group_names(session)
        return {"trackers": [trackers.tracker_json(t, fields, who, names) for t, fields in shown]}


@bp.post("")
async def create_tracker() -> ResponseReturnValue:
    _, who = await require_admin()
    data = await json_body()
    async with change_log().write() as session:
        tracker = await trackers.create_tracker(session, data)
        return trackers.tracker_json(tracker, [], who, {}), 201


async def _tracker_view(slug: str, who: Principal) -> dict[str, Any]:
    async with db().read() as session:
        tracker = await trackers.get_tracker(session, slug)
        fields = await trackers.tracker_fields(session, tracker)
        if not trackers.tracker_visible(fields, who):
            raise not_found(f"tracker {slug!r}")
        return trackers.tracker_json(tracker, fields, who, await trackers.group_names(session))


@bp.get("/<slug>")
async def get_tracker(slug: str) -> ResponseReturnValue:
    return await _tracker_view(slug, await principal())


@bp.patch("/<slug>")
async def update_tracker(slug: str) -> ResponseReturnValue:
    _, who = await require_admin()
    data = await json_body()
    async with change_log().write() as session:
        await trackers.update_tracker(session, await trackers.get_tracker(session, slug), data)
    return await _tracker_view(slug, who)


@bp.post("/<slug>/fields")
async def create_field(slug: str) -> ResponseReturnValue:
    _, who = await require_admin()
    data = await json_body()
    async with change_log().write() as session:
        tracker = await trackers.get_tracker(session, slug)
        field = await trackers.create_field(session, tracker, data)
        name = field.name
    return _field_view(await _tracker_view(slug, who), name), 201


@bp.put("/<slug>/field-order")
async def reorder_fields(slug: str) -> ResponseReturnValue:
    """Reorder the fields: ``{"fields": [every field's name, in the new order]}``."""
    _, who = await require_admin()
    data = await json_body()
    async with change_log().write() as session:
        await trackers.reorder_fields(session, await trackers.get_tracker(session, slug), data)
    return await _tracker_view(slug, who)


@bp.patch("/<slug>/fields/<name>")
async def update_field(slug: str, name: str) -> ResponseReturnValue:
    _, who = await require_admin()
    data = await json_body()
    async with change_log().write() as session:
        tracker = await trackers.get_tracker(session, slug)
        await trackers.update_field(session, await trackers.get_field(session, tracker, name),
                                    data)
    return _field_view(await _tracker_view(slug, who), name)


@bp.delete("/<slug>/fields/<name>")
async def delete_field(slug: str, name: str) -> tuple[str, int]:
    await require_admin()
    async with change_log().write() as session:
        tracker = await trackers.get_tracker(session, slug)
        await trackers.delete_field(session, await trackers.get_field(session, tracker, name))
    return "", 204


def _field_view(tracker_view: dict[str, Any], name: str) -> dict[str, Any]:
    field: dict[str, Any] = next(f for f in tracker_view["fields"] if f["name"] == name)
    return field
