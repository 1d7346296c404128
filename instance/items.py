"""Items, and per-field saves with optimistic locking.

Every accepted change, in ONE transaction: the value and its version, the item version,
an event id from the counter row, and a change-log row. Lock order is always
field value -> item -> counter, so concurrent saves cannot deadlock; the counter is
taken last so its lock is held only for the final statements before commit.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import bindparam, insert, select, text, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import AsyncSession

from hub.changes import Change, ChangeKind
from instance import changelog
from instance.accounts import iso, now
from instance.changelog import LogConnection, LogSession
from instance.db import execute
from instance.errors import ApiError, conflict, forbidden, invalid, not_found
from instance.fieldtypes import FieldTypeError, validate_value
from instance.models import Base, FieldValue, Item, Tracker, User
from instance.rights import FieldDef, Principal, field_def, fields_on


async def get_item(session: AsyncSession, item_id: int) -> tuple[Item, Tracker]:
    row = (
        await session.execute(
            select(Item, Tracker).join(Tracker, Tracker.id == Item.tracker_id).where(
                Item.id == item_id
            )
        )
    ).first()
    if row is None:
        raise not_found(f"item {item_id}")
    return row[0], row[1]


def readable(fields: list[FieldDef], who: Principal) -> list[FieldDef]:
    return [f for f in fields if f.readable_by(who)]


async def _values(
    session: AsyncSession, item_ids: list[int], field_ids: list[int]
) -> dict[tuple[int, int], tuple[FieldValue, str | None]]:
    if not item_ids or not field_ids:
        return {}
    rows = await session.execute(
        select(FieldValue, User.username)
        .outerjoin(User, User.id == FieldValue.updated_by)
        .where(FieldValue.item_id.in_(item_ids), FieldValue.field_id.in_(field_ids))
    )
    return {(fv.item_id, fv.field_id): (fv, username) for fv, username in rows.all()}


def _value_json(f: FieldDef, who: Principal, row: tuple[FieldValue, str | None] | None
                ) -> dict[str, Any]:
    fv, username = row if row else (None, None)
    return {
        "label": f.label,
        "type": f.type,
        "value": fv.value if fv else None,
        "version": fv.version if fv else 0,
        "updated_at": iso(fv.updated_at) if fv else None,
        "updated_by": username,
        "can_edit": f.editable_by(who),
    }


def reader_version(field_versions: Iterable[int]) -> int:
    """The item version a reader sees: the sum of the versions of the fields they may
    read. It grows by one with each change of such a field and with nothing else, so
    neither it nor an ETag made from it moves when a field hidden from the reader does.
    (``Item.version`` counts every change, and stays federation's.)"""
    return sum(field_versions)


async def items_json(
    session: AsyncSession, items: list[Item], tracker: Tracker, fields: list[FieldDef],
    who: Principal,
) -> list[dict[str, Any]]:
    """Items as the caller may see them: only readable fields are ever put in."""
    visible = readable(fields, who)
    values = await _values(session, [i.id for i in items], [f.id for f in visible])
    out = []
    for item in items:
        shown = {f.name: _value_json(f, who, values.get((item.id, f.id))) for f in visible}
        out.append({
            "id": item.id,
            "tracker": tracker.slug,
            "version": reader_version(v["version"] for v in shown.values()),
            "created_at": iso(item.created_at),
            "remote_url": item.remote_url,
            "fields": shown,
        })
    return out


_field_values = Base.metadata.tables["field_values"]


# The item's version bump, RETURNING also its ``reader_version``: the sum over its
# values of the fields of its tracker the caller may read (an admin all; anyone else a
# field one of whose read groups they are in), as of this statement, so after the
# save's value. SQL text: SQLAlchemy renders SQLite's RETURNING without table names,
# the subquery's too, which makes its columns ambiguous.
_BUMP_SEEN_BY_ADMIN = text(
    "UPDATE items SET version = version + 1 WHERE id = :b_item RETURNING version, "
    "(SELECT coalesce(sum(sv.version), 0) FROM field_values sv JOIN fields sf"
    " ON sf.id = sv.field_id WHERE sv.item_id = items.id"
    " AND sf.tracker_id = items.tracker_id) AS seen")
_BUMP_SEEN_BY_READER = text(
    "UPDATE items SET version = version + 1 WHERE id = :b_item RETURNING version, "
    "(SELECT coalesce(sum(sv.version), 0) FROM field_values sv JOIN fields sf"
    " ON sf.id = sv.field_id WHERE sv.item_id = items.id"
    " AND sf.tracker_id = items.tracker_id AND EXISTS (SELECT 1 FROM field_read_groups sg"
    " WHERE sg.field_id = sv.field_id AND sg.group_id IN :b_groups)) AS seen"
).bindparams(bindparam("b_groups", expanding=True))


def hidden_item(item_id: int, fields: list[FieldDef], who: Principal) -> ApiError | None:
    """The 404 of an item ``who`` may read nothing of: the very answer for an item that
    does not exist, so that no answer tells which ids exist."""
    if who.is_admin or readable(fields, who):
        return None
    return not_found(f"item {item_id}")


def etag_for(body: Any) -> str:
    digest = hashlib.sha256(
        json.dumps(body, sort_keys=True, separators=(",", ":")).encode()
    ).hexdigest()[:32]
    return f'"{digest}"'


# ---- writes ----------------------------------------------------------------------------
#
# Sync code on a ``LogConnection``: ``ChangeLog.unit`` runs a save on SQLite's writer
# thread in one hop (instance.db.Database.write_sync); ORM writers lend theirs with
# ``LogSession.sync``.


def _check_value(conn: Connection, f: FieldDef, raw: Any) -> Any:
    try:
        value = validate_value(f.type, f.options, raw)
    except FieldTypeError as exc:
        raise invalid(f"field {f.name!r} ({f.type}) {exc}", field=f.name) from None
    if f.type == "user" and value is not None:
        if execute(conn, _USER_NAMED, {"b_name": value}).first() is None:
            raise invalid(f"field {f.name!r} (user): no user is named {value!r}", field=f.name)
    return value


def _editable(f: FieldDef, who: Principal) -> None:
    if f.type == "remote":
        source = f.options.get("source", {})
        raise conflict(
            f"field {f.name!r} mirrors {source.get('field')!r} of tracker "
            f"{source.get('tracker')!r} on {source.get('instance')} and is read-only here; "
            "edit it on that instance",
            field=f.name,
        )
    if not f.editable_by(who):
        raise forbidden(f"you may read field {f.name!r} but not edit it")


# The statements every save runs, built once.
_items, _values_t = Base.metadata.tables["items"], Base.metadata.tables["field_values"]
_users = Base.metadata.tables["users"]
_USER_NAMED = select(_users.c.id).where(_users.c.username == bindparam("b_name"))
_USERNAME = select(_users.c.username).where(_users.c.id == bindparam("b_id"))
_BUMP_ITEM = (update(_items).where(_items.c.id == bindparam("b_item"))
              .values(version=_items.c.version + 1).returning(_items.c.version))
# The same, with the item's version as the saver sees it (the answer's item_version):
# in the save's statement, not a query or a transaction of its own.
_BUMP_ITEM_SEEN = {True: _BUMP_SEEN_BY_ADMIN, False: _BUMP_SEEN_BY_READER}
_THIS_VALUE = (_values_t.c.item_id == bindparam("b_item")) & (
    _values_t.c.field_id == bindparam("b_field"))
# FOR UPDATE: on PostgreSQL a concurrent save of this field waits here, then sees the
# committed version and fails the If-Match check. SQLite is serialized already.
_LOCK_VALUE = (select(_values_t.c.value, _values_t.c.version, _values_t.c.updated_at,
                      _values_t.c.updated_by).where(_THIS_VALUE).with_for_update())
_SET_VALUE = update(_values_t).where(_THIS_VALUE).values(
    value=bindparam("b_value"), version=bindparam("b_version"),
    updated_at=bindparam("b_at"), updated_by=bindparam("b_by"))


_trackers, _fields = Base.metadata.tables["trackers"], Base.metadata.tables["fields"]
_read_groups = Base.metadata.tables["field_read_groups"]
_edit_groups = Base.metadata.tables["field_edit_groups"]
# The item, its tracker, the one field saved and that field's groups, in one query (a
# row per read x edit group; the field's columns are NULL when it has no such field):
# what rights.load_fields and a lookup of the item did in three.
_TARGET = (
    select(_items.c.id, _items.c.tracker_id, _trackers.c.slug, _trackers.c.require_if_match,
           _fields.c.id.label("field_id"), _fields.c.name, _fields.c.label, _fields.c.type,
           _fields.c.options, _fields.c.position, _fields.c.export_mode,
           _fields.c.export_partners, _read_groups.c.group_id.label("read_group"),
           _edit_groups.c.group_id.label("edit_group"))
    .select_from(
        _items.join(_trackers, _trackers.c.id == _items.c.tracker_id)
        .outerjoin(_fields, (_fields.c.tracker_id == _items.c.tracker_id)
                   & (_fields.c.name == bindparam("b_name")))
        .outerjoin(_read_groups, _read_groups.c.field_id == _fields.c.id)
        .outerjoin(_edit_groups, _edit_groups.c.field_id == _fields.c.id))
    .where(_items.c.id == bindparam("b_item"))
)


def _target(conn: Connection, item_id: int, field_name: str) -> tuple[Any, FieldDef | None]:
    """The item to save (None if there is none) and its field named so, if any."""
    rows = execute(conn, _TARGET, {"b_item": item_id, "b_name": field_name}).all()
    if not rows:
        return None, None
    first = rows[0]
    if first.field_id is None:
        return first, None
    read = {r.read_group for r in rows if r.read_group is not None}
    edit = {r.edit_group for r in rows if r.edit_group is not None}
    return first, field_def(first, first.field_id, read, edit)


def _bump_item(conn: Connection, item_id: int, reader: Principal | None
               ) -> tuple[int, int | None]:
    """The item's new version, and ``reader_version`` for ``reader`` if one is given."""
    if reader is None:
        value = execute(conn, _BUMP_ITEM, {"b_item": item_id}).scalar()
        assert value is not None
        return int(value), None
    params: dict[str, Any] = {"b_item": item_id}
    if not reader.is_admin:
        params["b_groups"] = sorted(reader.group_ids)
    row = tuple(execute(conn, _BUMP_ITEM_SEEN[reader.is_admin], params).one())
    return int(row[0]), int(row[1])


_MISSING: dict[str, Any] = {"item_id": bindparam("b_item"), "field_id": bindparam("b_field"),
                            "value": None, "version": 0, "updated_at": bindparam("b_at")}
_INSERT_MISSING = {
    "sqlite": sqlite.insert(_values_t).values(_MISSING).on_conflict_do_nothing(),
    "postgresql": postgresql.insert(_values_t).values(_MISSING).on_conflict_do_nothing(),
}


def _locked_value(conn: Connection, item_id: int, field_id: int, at: datetime) -> Any:
    """The value row, locked for update; made first if the field was added after the
    item. Two first saves may race to make it: ON CONFLICT lets the second find the
    first one's row."""
    this = {"b_item": item_id, "b_field": field_id}
    row = execute(conn, _LOCK_VALUE, this).first()
    if row is None:
        execute(conn, _INSERT_MISSING[conn.dialect.name],
                     {"b_item": item_id, "b_field": field_id, "b_at": at})
        row = execute(conn, _LOCK_VALUE, this).one()
    return row


@dataclass(frozen=True)
class Current:
    """A field value as locked for update: what a save compares and logs."""

    value: Any
    version: int
    updated_at: datetime
    updated_by: int | None


def _apply(
    log: LogConnection, item_id: int, tracker_id: int, f: FieldDef, value: Any,
    who: Principal, old: Current, at: datetime, source: str, *, seen: bool = False,
) -> tuple[Change, int | None]:
    """The change, and with ``seen`` the item's version as ``who`` sees it after it."""
    execute(log.conn, _SET_VALUE, {"b_item": item_id, "b_field": f.id, "b_value": value,
                                  "b_version": old.version + 1, "b_at": at,
                                  "b_by": who.user_id})
    item_version, seen_version = _bump_item(log.conn, item_id, who if seen else None)
    return log.record(
        ChangeKind.VALUE, at=at, by=who.username, item_id=item_id, tracker_id=tracker_id,
        field_id=f.id, field_name=f.name, old_version=old.version,
        new_version=old.version + 1, item_version=item_version, old_value=old.value,
        new_value=value, actor_id=who.user_id, source=source,
    ), seen_version


@dataclass(frozen=True)
class SaveResult:
    change: Change | None  # None when the value was already the one asked for
    value: Any
    version: int
    updated_at: datetime
    updated_by: str | None
    # The item's version as the caller sees it (``reader_version``), after a change; not
    # ``Item.version``, the count of every change, which would tell them how often
    # fields hidden from them were changed.
    item_version: int | None = None


def save_field(
    log: LogConnection,
    item_id: int,
    field_name: str,
    raw_value: Any,
    who: Principal,
    *,
    if_match: int | None,
) -> SaveResult:
    """Save one field of one item, as the work of ``ChangeLog.unit``."""
    conn = log.conn
    item, f = _target(conn, item_id, field_name)
    if item is None:
        raise not_found(f"item {item_id}")
    # A field the caller may not read answers exactly as a field that does not exist,
    # and an item they may read nothing of exactly as an item that does not exist.
    if f is None or not f.readable_by(who):
        # Only a refused save needs the tracker's other fields.
        fields = fields_on(conn, [item.tracker_id])[item.tracker_id]
        raise hidden_item(item_id, fields, who) or not_found(
            f"field {field_name!r} of item {item_id}")
    _editable(f, who)
    if if_match is None and item.require_if_match:
        raise ApiError(
            428, "precondition_required",
            f"tracker {item.slug!r} requires If-Match with the version of field "
            f"{f.name!r} you edited, so that a concurrent change is not overwritten",
            field=f.name,
        )
    value = _check_value(conn, f, raw_value)
    at = now()
    row = _locked_value(conn, item.id, f.id, at)
    cur = Current(row.value, row.version, row.updated_at, row.updated_by)
    if if_match is not None and cur.version != if_match:
        by = execute(conn, _USERNAME, {"b_id": cur.updated_by}).scalar()
        raise ApiError(
            412, "version_conflict",
            f"field {f.name!r} was changed to version {cur.version} by {by or 'someone'} "
            f"after the version {if_match} you edited; reload it or resend with "
            f'If-Match: "{cur.version}" to overwrite',
            field=f.name,
            current={"value": cur.value, "version": cur.version,
                     "updated_at": iso(cur.updated_at), "updated_by": by},
        )
    if cur.version > 0 and cur.value == value:
        by = execute(conn, _USERNAME, {"b_id": cur.updated_by}).scalar()
        return SaveResult(None, cur.value, cur.version, cur.updated_at, by)
    change, seen = _apply(log, item.id, item.tracker_id, f, value, who, cur, at, "user",
                          seen=True)
    return SaveResult(change, value, cur.version + 1, at, who.username, seen)


async def create_item(
    session: LogSession, tracker: Tracker, fields: list[FieldDef], who: Principal,
    values: dict[str, Any],
) -> tuple[Item, list[Change]]:
    if not isinstance(values, dict):
        raise invalid("fields must be an object of field name -> value")
    if not (who.is_admin or any(f.editable_by(who) for f in fields)):
        raise forbidden(f"you may not edit any field of tracker {tracker.slug!r}, "
                        "so you may not create items in it")
    by_name = {f.name: f for f in fields}

    def check(log: LogConnection) -> list[tuple[FieldDef, Any]]:
        checked = []
        for name, raw in values.items():
            f = by_name.get(name)
            if f is None or not f.readable_by(who):
                raise invalid(f"tracker {tracker.slug!r} has no field {name!r}", field=name)
            _editable(f, who)
            checked.append((f, _check_value(log.conn, f, raw)))
        return checked

    checked = await session.sync(check)
    at = now()
    item = Item(tracker_id=tracker.id, version=0, created_at=at, created_by=who.user_id)
    session.add(item)
    await session.flush()
    # Before the values: a reader of the log learns of the item, then of what it holds.
    changes = [await changelog.record(session, ChangeKind.CREATED, at=at, by=who.username,
                                      item_id=item.id, tracker_id=tracker.id,
                                      item_version=0, actor_id=who.user_id)]
    if checked:
        await session.execute(insert(FieldValue), [
            {"item_id": item.id, "field_id": f.id, "value": None, "version": 0,
             "updated_at": at} for f, _ in checked
        ])
    empty = Current(None, 0, at, None)

    def apply(log: LogConnection) -> list[Change]:
        return [_apply(log, item.id, tracker.id, f, value, who, empty, at, "user")[0]
                for f, value in checked if value is not None]

    changes += await session.sync(apply)
    await session.refresh(item)
    return item, changes


async def delete_item(session: LogSession, item_id: int, who: Principal) -> None:
    """Delete an item and its values; the log keeps its history and records the deletion."""
    item, tracker = await get_item(session, item_id)
    await session.delete(item)
    await session.flush()
    await changelog.append(session, ChangeKind.ITEM_DELETED, at=now(), item_id=item.id,
                           tracker_id=tracker.id, actor_id=who.user_id)


#: Who a mirrored value is saved as: nobody of this instance (the change log's actor is
#: none; its source says "federation").
FEDERATION = Principal(None, None, False, frozenset())


async def save_mirrored(session: LogSession, item_id: int, tracker_id: int, f: FieldDef,
                        value: Any, at: datetime) -> Change | None:
    """Store a value of remote field ``f`` as its host sent it, through the change log
    (source "federation", no actor), so live pages and readers of the log see it as
    any save. None when the field already holds it."""

    def mirror(log: LogConnection) -> Change | None:
        row = _locked_value(log.conn, item_id, f.id, at)
        if row.value == value and (row.version > 0 or value is None):
            return None
        cur = Current(row.value, row.version, row.updated_at, row.updated_by)
        return _apply(log, item_id, tracker_id, f, value, FEDERATION, cur, at,
                      "federation")[0]

    return await session.sync(mirror)
