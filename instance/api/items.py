"""Items, one field at a time, and the change log."""

from __future__ import annotations

import re
from typing import Any

from quart import Blueprint, request
from quart.typing import ResponseReturnValue

from hub.changes import Change, ChangeKind
from instance import changelog, items, trackers
from instance.accounts import iso
from instance.errors import ApiError, not_found
from instance.federation.exports import topic_of
from instance.remote.links import remote_state
from instance.web import (
    change_log,
    db,
    int_arg,
    json_body,
    principal,
    principal_in,
    require_admin,
    state,
)

bp = Blueprint("items", __name__, url_prefix="/api")

_ETAG_VERSION = re.compile(r'^(?:"(\d{1,18})"|(\d{1,18}))$')


def parse_if_match(header: str | None) -> int | None:
    """The field version the client edited, or None for "no precondition"."""
    if header is None or header.strip() == "*":
        return None
    m = _ETAG_VERSION.match(header.strip())
    if m is None:
        raise ApiError(
            400, "bad_if_match",
            f'If-Match must be the field version as an entity tag, such as "7"; got {header!r}',
        )
    return int(m.group(1) or m.group(2))


def _not_modified_or(body: dict[str, Any]) -> Any:
    etag = items.etag_for(body)
    if etag in {t.strip() for t in request.headers.get("If-None-Match", "").split(",")}:
        return "", 304, {"ETag": etag}
    return body, 200, {"ETag": etag}


@bp.get("/trackers/<slug>/items")
async def list_items(slug: str) -> ResponseReturnValue:
    who = await principal()
    limit = int_arg("limit", 50, minimum=1, maximum=500)
    after = int_arg("after", 0)
    async with db().read() as session:
        tracker = await trackers.get_tracker(session, slug)
        fields = await trackers.tracker_fields(session, tracker)
        if not (who.is_admin or items.readable(fields, who)):
            raise not_found(f"tracker {slug!r}")
        rows = await items.list_items(session, tracker, after=after, limit=limit)
        body = {
            "items": await items.items_json(session, rows, tracker, fields, who),
            "next_after": rows[-1].id if len(rows) == limit else None,
        }
    return body


@bp.post("/trackers/<slug>/items")
async def create_item(slug: str) -> ResponseReturnValue:
    who = await principal()
    data = await json_body()
    if set(data) != {"fields"}:
        missing = "" if "fields" in data else "the member fields is missing; "
        raise ApiError(422, "invalid", f'{missing}the body is {{"fields": {{name: value, ...}}}} '
                       '(use {"fields": {}} for an item with no values yet)', member="fields")
    async with change_log().write() as session:
        tracker = await trackers.get_tracker(session, slug)
        fields = await trackers.tracker_fields(session, tracker)
        if not (who.is_admin or items.readable(fields, who)):
            raise not_found(f"tracker {slug!r}")
        item, _changes = await items.create_item(
            session, tracker, fields, who, data["fields"]
        )
        body = (await items.items_json(session, [item], tracker, fields, who))[0]
    return body, 201, {"Location": f"/api/items/{item.id}"}


async def _item_view(item_id: int) -> dict[str, Any]:
    who = await principal()
    async with db().read() as session:
        item, tracker = await items.get_item(session, item_id)
        fields = await trackers.tracker_fields(session, tracker)
        if not (who.is_admin or items.readable(fields, who)):
            raise not_found(f"item {item_id}")
        view = (await items.items_json(session, [item], tracker, fields, who))[0]
        for name, info in (await remote_state(session, item.id, fields)).items():
            if name in view["fields"]:
                view["fields"][name]["remote"] = info
    view["topic"] = topic_of(state().settings.base_url, item.id, fields)
    return view


@bp.get("/items/<int:item_id>")
async def get_item(item_id: int) -> ResponseReturnValue:
    return _not_modified_or(await _item_view(item_id))


@bp.delete("/items/<int:item_id>")
async def delete_item(item_id: int) -> ResponseReturnValue:
    _, who = await require_admin()
    async with change_log().write() as session:
        await items.delete_item(session, item_id, who)
    return "", 204


@bp.get("/items/<int:item_id>/fields/<name>")
async def get_field(item_id: int, name: str) -> ResponseReturnValue:
    view = await _item_view(item_id)
    if name not in view["fields"]:
        raise not_found(f"field {name!r} of item {item_id}")
    value = view["fields"][name]
    return {"item": item_id, "field": name, **value}, 200, {"ETag": f'"{value["version"]}"'}


@bp.patch("/items/<int:item_id>/fields/<name>")
async def save_field(item_id: int, name: str) -> ResponseReturnValue:
    if_match = parse_if_match(request.headers.get("If-Match"))
    data = await json_body()
    if set(data) != {"value"}:
        raise ApiError(422, "invalid", 'the body is {"value": <the new value>}; '
                       "use null to clear the field")
    async with change_log().write() as session:
        # Who is asking is read in the save's own transaction: one transaction a save.
        who = await principal_in(session)
        result = await items.save_field(
            session, item_id, name, data["value"], who, if_match=if_match
        )
    change = result.change
    return {
        "item": item_id,
        "field": name,
        "value": result.value,
        "version": result.version,
        "updated_at": iso(result.updated_at),
        "updated_by": result.updated_by,
        "changed": change is not None,
        "event": change.event if change else None,
        "item_version": change.item_version if change else None,
    }, 200, {"ETag": f'"{result.version}"'}


def change_json(change: Change, trackers: dict[int, str]) -> dict[str, Any]:
    """A change-log row as ``/api/changes`` shows it."""
    tracker = trackers.get(change.tracker) if change.tracker is not None else None
    if change.kind is ChangeKind.ITEM_DELETED:
        return {"event": change.event, "item": change.item, "tracker": tracker,
                "deleted": True, "by": change.by, "at": iso(change.at)}
    return {"event": change.event, "item": change.item, "tracker": tracker,
            "field": change.field, "old_version": change.old_version,
            "version": change.version, "item_version": change.item_version,
            "value": change.value, "old_value": change.old_value, "by": change.by,
            "source": change.source, "at": iso(change.at)}


@bp.get("/changes")
async def changes() -> ResponseReturnValue:
    """The change log after ``since``, filtered by what the caller may read now."""
    who = await principal()
    since = int_arg("since", 0)
    limit = int_arg("limit", 100, minimum=1, maximum=1000)
    item_id = int_arg("item", 0) or None
    tracker_id = None
    async with db().read() as session:
        if slug := request.args.get("tracker"):
            tracker_id = (await trackers.get_tracker(session, slug)).id
        rows, cursor, more = await changelog.visible(
            session, who, since=since, limit=limit, item_id=item_id, tracker_id=tracker_id
        )
        slugs = await trackers.slugs(session, {c.tracker for c in rows if c.tracker is not None})
        return {
            "epoch": await changelog.epoch(session),
            "changes": [change_json(c, slugs) for c in rows],
            "next": cursor,
            "more": more,
            "head": await changelog.head(session),
        }
