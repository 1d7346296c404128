"""Trackers and fields: anyone sees the trackers and fields they may read; admins manage."""

from __future__ import annotations

from typing import Any

from quart import Blueprint
from quart.typing import ResponseReturnValue

from instance import trackers
from instance.api import schemas
from instance.errors import not_found
from instance.openapi import accepts, responds
from instance.rights import Principal
from instance.web import change_log, db, principal, require_admin

bp = Blueprint("trackers", __name__, url_prefix="/api/trackers")


@bp.get("")
@responds(200, schemas.TrackerList)
async def list_trackers() -> ResponseReturnValue:
    """The trackers of which the caller may read a field, by slug."""
    who = await principal()
    async with db().read() as session:
        shown = await trackers.visible_trackers(session, who)
        names = await trackers.group_names(session)
        return {"trackers": [trackers.tracker_json(t, fields, who, names) for t, fields in shown]}


@bp.post("")
@responds(201, schemas.Tracker)
@accepts(schemas.NewTracker)
async def create_tracker(data: schemas.NewTracker) -> ResponseReturnValue:
    """Create a tracker (admins)."""
    _, who = await require_admin()
    async with change_log().write() as session:
        tracker = await trackers.create_tracker(session, dict(data))
        return trackers.tracker_json(tracker, [], who, {}), 201


async def _tracker_view(slug: str, who: Principal) -> dict[str, Any]:
    async with db().read() as session:
        tracker = await trackers.get_tracker(session, slug)
        fields = await trackers.tracker_fields(session, tracker)
        if not trackers.tracker_visible(fields, who):
            raise not_found(f"tracker {slug!r}")
        return trackers.tracker_json(tracker, fields, who, await trackers.group_names(session))


@bp.get("/<slug>")
@responds(200, schemas.Tracker)
async def get_tracker(slug: str) -> ResponseReturnValue:
    """A tracker with the fields the caller may read."""
    return await _tracker_view(slug, await principal())


@bp.patch("/<slug>")
@responds(200, schemas.Tracker)
@accepts(schemas.TrackerChanges)
async def update_tracker(slug: str, data: schemas.TrackerChanges) -> ResponseReturnValue:
    """Change a tracker (admins)."""
    _, who = await require_admin()
    async with change_log().write() as session:
        await trackers.update_tracker(session, await trackers.get_tracker(session, slug),
                                      dict(data))
    return await _tracker_view(slug, who)


@bp.post("/<slug>/fields")
@responds(201, schemas.FieldDefinition)
@accepts(schemas.NewField)
async def create_field(slug: str, data: schemas.NewField) -> ResponseReturnValue:
    """Add a field to a tracker (admins)."""
    _, who = await require_admin()
    async with change_log().write() as session:
        tracker = await trackers.get_tracker(session, slug)
        field = await trackers.create_field(session, tracker, dict(data))
        name = field.name
    return _field_view(await _tracker_view(slug, who), name), 201


@bp.put("/<slug>/field-order")
@responds(200, schemas.Tracker)
@accepts(schemas.FieldOrder)
async def reorder_fields(slug: str, data: schemas.FieldOrder) -> ResponseReturnValue:
    """Reorder the fields: ``{"fields": [every field's name, in the new order]}``."""
    _, who = await require_admin()
    async with change_log().write() as session:
        await trackers.reorder_fields(session, await trackers.get_tracker(session, slug),
                                      dict(data))
    return await _tracker_view(slug, who)


@bp.patch("/<slug>/fields/<name>")
@responds(200, schemas.FieldDefinition)
@accepts(schemas.FieldChanges)
async def update_field(slug: str, name: str, data: schemas.FieldChanges) -> ResponseReturnValue:
    """Change a field of a tracker (admins)."""
    _, who = await require_admin()
    async with change_log().write() as session:
        tracker = await trackers.get_tracker(session, slug)
        await trackers.update_field(session, await trackers.get_field(session, tracker, name),
                                    dict(data))
    return _field_view(await _tracker_view(slug, who), name)


@bp.delete("/<slug>/fields/<name>")
@responds(204)
async def delete_field(slug: str, name: str) -> tuple[str, int]:
    """Delete a field and all its values (admins); the change log keeps their history."""
    await require_admin()
    async with change_log().write() as session:
        tracker = await trackers.get_tracker(session, slug)
        await trackers.delete_field(session, await trackers.get_field(session, tracker, name))
    return "", 204


def _field_view(tracker_view: dict[str, Any], name: str) -> dict[str, Any]:
    field: dict[str, Any] = next(f for f in tracker_view["fields"] if f["name"] == name)
    return field
