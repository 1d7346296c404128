"""Items, one field at a time, and the change log."""

from __future__ import annotations

import re
from typing import Any

from quart import Blueprint, request
from quart.typing import ResponseReturnValue
from quart_schema import document_querystring
from sqlalchemy.ext.asyncio import AsyncSession

from hub.changes import Change, ChangeKind
from instance import changelog, finding, items, trackers
from instance.accounts import iso
from instance.api import schemas
from instance.changelog import LogConnection
from instance.errors import ApiError, not_found
from instance.federation.exports import topic_of
from instance.openapi import accepts, responds, with_headers, with_query
from instance.remote.links import remote_state
from instance.rights import Principal
from instance.web import change_log, db, principal, require_admin, state, writer

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
@responds(200, schemas.ItemPage, sample="items")
@document_querystring(schemas.ItemsQuery)
async def list_items(slug: str) -> ResponseReturnValue:
    """Items of a tracker: sorted, filtered, searched, a page at a time.

    instance/finding.py reads the query itself (described, not parsed, by ItemsQuery):
    per-field filters are named after fields, and unknown parameters are refused, which
    the generic query reader cannot do. README.md, "Finding items", documents it.
    """
    who = await principal()
    async with db().read() as session:
        tracker = await trackers.get_tracker(session, slug)
        fields = await trackers.tracker_fields(session, tracker)
        if not (who.is_admin or items.readable(fields, who)):
            raise not_found(f"tracker {slug!r}")
        query = finding.parse_query(request.args, slug, fields, who)
        page = await finding.find_items(session, tracker.id, query)
        body = {
            "items": await items.items_json(session, page.items, tracker, fields, who),
            "next": page.next,
            "prev": page.prev,
            "next_after": page.next_after,
            "sort": query.sort,
        }
    return body


@bp.post("/trackers/<slug>/items")
@responds(201, schemas.Item)
@accepts(schemas.NewItem)
async def create_item(slug: str, data: schemas.NewItem) -> ResponseReturnValue:
    """Create an item with its first values."""
    who = await principal()
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
@responds(200, schemas.ItemView)
@responds(304)
@with_headers(schemas.IfNoneMatch)
async def get_item(item_id: int) -> ResponseReturnValue:
    """An item with the fields the caller may read; its ETag answers If-None-Match."""
    return _not_modified_or(await _item_view(item_id))


@bp.delete("/items/<int:item_id>")
@responds(204)
async def delete_item(item_id: int) -> ResponseReturnValue:
    """Delete an item (admins); the change log keeps its history."""
    _, who = await require_admin()
    async with change_log().write() as session:
        await items.delete_item(session, item_id, who)
    return "", 204


@bp.get("/items/<int:item_id>/fields/<name>")
@responds(200, schemas.FieldView)
async def get_field(item_id: int, name: str) -> ResponseReturnValue:
    """One field of an item; its ETag is the field version, for If-Match."""
    view = await _item_view(item_id)
    if name not in view["fields"]:
        raise not_found(f"field {name!r} of item {item_id}")
    value = view["fields"][name]
    return {"item": item_id, "field": name, **value}, 200, {"ETag": f'"{value["version"]}"'}


@bp.patch("/items/<int:item_id>/fields/<name>")
@responds(200, schemas.Saved)
@accepts(schemas.NewValue)
@with_headers(schemas.IfMatch)
async def save_field(item_id: int, name: str, data: schemas.NewValue) -> ResponseReturnValue:
    """Save one field of an item (If-Match: the version you edited)."""
    if_match = parse_if_match(request.headers.get("If-Match"))
    sender, value = await writer(), data["value"]

    def save(log: LogConnection) -> items.SaveResult:
        # Who is asking is read in the save's own transaction: one transaction a save.
        who = sender.principal(log.conn)
        return items.save_field(log, item_id, name, value, who, if_match=if_match)

    result = await change_log().unit(save)
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
        "item_version": result.item_version,
    }, 200, {"ETag": f'"{result.version}"'}


def change_json(change: Change, trackers: dict[int, str]) -> dict[str, Any]:
    """A change-log row as ``/api/changes`` shows it."""
    tracker = trackers.get(change.tracker) if change.tracker is not None else None
    if change.kind is ChangeKind.CREATED:
        return {"event": change.event, "item": change.item, "tracker": tracker,
                "created": True, "field": None, "item_version": change.item_version,
                "by": change.by, "source": change.source, "at": iso(change.at)}
    if change.kind is ChangeKind.ITEM_DELETED:
        return {"event": change.event, "item": change.item, "tracker": tracker,
                "deleted": True, "by": change.by, "at": iso(change.at)}
    return {"event": change.event, "item": change.item, "tracker": tracker,
            "field": change.field, "old_version": change.old_version,
            "version": change.version, "item_version": change.item_version,
            "value": change.value, "old_value": change.old_value, "by": change.by,
            "source": change.source, "at": iso(change.at)}


@bp.get("/items/<int:item_id>/history")
@responds(200, schemas.ItemHistory, sample="changes")
@with_query(schemas.HistoryQuery)
async def item_history(item_id: int, query: schemas.HistoryQuery) -> ResponseReturnValue:
    """One item's changes of the fields the caller may read now, newest first.

    Its own endpoint rather than ``/api/changes``: that one reads forwards from a cursor,
    while a history page reads backwards from the newest (``before``), filtered in SQL to
    the readable fields so a page never ends on, or counts, a row the caller may not see.
    """
    who = await principal()
    before, limit, name = query.before, query.limit, query.field or None
    async with db().read() as session:
        item, tracker = await items.get_item(session, item_id)
        fields = items.readable(await trackers.tracker_fields(session, tracker), who)
        if not (who.is_admin or fields):
            raise not_found(f"item {item_id}")
        if name is not None:
            # A field the caller may not read answers as one that does not exist.
            fields = [f for f in fields if f.name == name]
            if not fields:
                raise not_found(f"field {name!r} of item {item_id}")
        rows, cursor = await changelog.history(session, item.id, [f.id for f in fields],
                                               before=before, limit=limit)
    return {"item": item_id, "changes": [change_json(c, {tracker.id: tracker.slug})
                                         for c in rows], "next_before": cursor}


async def _visible_tracker_id(session: AsyncSession, slug: str, who: Principal) -> int:
    """The tracker's id; the one 404 of a tracker that does not exist when ``who`` may
    read nothing of it."""
    tracker = await trackers.get_tracker(session, slug)
    if not trackers.tracker_visible(await trackers.tracker_fields(session, tracker), who):
        raise not_found(f"tracker {slug!r}")
    return tracker.id


@bp.get("/changes")
@responds(200, schemas.ChangePage, sample="changes")
@with_query(schemas.ChangesQuery)
async def changes(query: schemas.ChangesQuery) -> ResponseReturnValue:
    """The change log after ``since``, filtered by what the caller may read now."""
    who = await principal()
    since, limit, item_id = query.since, query.limit, query.item or None
    tracker_id = None
    async with db().read() as session:
        if slug := query.tracker:
            tracker_id = await _visible_tracker_id(session, slug, who)
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
