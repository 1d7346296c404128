"""Trackers and their fields: definitions, rights, export settings."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from typing import Any
from urllib.parse import urlsplit

from sqlalchemy import delete, func, insert, select
from sqlalchemy.ext.asyncio import AsyncSession

from instance import changelog
from instance.accounts import groups_by_name, iso, now
from instance.changelog import LogSession
from instance.errors import conflict, invalid, not_found
from instance.fieldtypes import FieldTypeError, check_name, validate_options
from instance.models import Field, Group, Tracker, field_edit_groups, field_read_groups
from instance.rights import REGISTERED, FieldDef, Principal, load_fields

EXPORT_MODES = ("none", "partners", "public")


def _check_slug(slug: Any) -> str:
    try:
        return check_name("tracker", slug)
    except FieldTypeError as exc:
        raise invalid(str(exc)) from None


def _text(name: str, value: Any, limit: int, *, required: bool = False) -> str:
    if not isinstance(value, str) or len(value) > limit or (required and not value.strip()):
        need = "a non-empty string" if required else "a string"
        raise invalid(f"{name} must be {need} of at most {limit} characters")
    return value


# Field.position is a 32-bit INTEGER on PostgreSQL.
_POSITION_LIMIT = 2**31 - 1


def _position(value: Any) -> int:
    if (not isinstance(value, int) or isinstance(value, bool)
            or not -_POSITION_LIMIT <= value <= _POSITION_LIMIT):
        raise invalid(f"position must be a whole number between -{_POSITION_LIMIT} and "
                      f"{_POSITION_LIMIT}")
    return value


async def get_tracker(session: AsyncSession, slug: str) -> Tracker:
    tracker = await session.scalar(select(Tracker).where(Tracker.slug == slug))
    if tracker is None:
        raise not_found(f"tracker {slug!r}")
    return tracker


async def slugs(session: AsyncSession, ids: Iterable[int]) -> dict[int, str]:
    """tracker id -> slug, for the trackers that exist."""
    wanted = list(ids)
    if not wanted:
        return {}
    rows = await session.execute(select(Tracker.id, Tracker.slug).where(Tracker.id.in_(wanted)))
    return {tid: slug for tid, slug in rows.all()}


def tracker_visible(fields: list[FieldDef], who: Principal) -> bool:
    """Whether `who` sees a tracker at all: admins always; others only a tracker of which
    they may read at least one field."""
    return who.is_admin or any(f.readable_by(who) for f in fields)


async def visible_trackers(session: AsyncSession, who: Principal
                           ) -> list[tuple[Tracker, list[FieldDef]]]:
    """The trackers `who` sees, by slug, each with its fields in display order."""
    rows = (await session.execute(select(Tracker).order_by(Tracker.slug))).scalars().all()
    fields = await load_fields(session, [t.id for t in rows])
    return [(t, fields[t.id]) for t in rows if tracker_visible(fields[t.id], who)]


def tracker_json(tracker: Tracker, fields: list[FieldDef], who: Principal,
                 group_names: dict[int, str]) -> dict[str, Any]:
    return {
        "id": tracker.id,  # what a /live subscription to the tracker names
        "slug": tracker.slug,
        "name": tracker.name,
        "description": tracker.description,
        "require_if_match": tracker.require_if_match,
        "created_at": iso(tracker.created_at),
        "fields": [field_json(f, who, group_names) for f in fields if f.readable_by(who)],
    }


def field_json(f: FieldDef, who: Principal, group_names: dict[int, str]) -> dict[str, Any]:
    out: dict[str, Any] = {
        "name": f.name,
        "label": f.label,
        "type": f.type,
        "options": f.options,
        "position": f.position,
        "can_edit": f.editable_by(who),
    }
    if who.is_admin:
        # Who may read or edit, and what is exported, is for admins' eyes.
        out["read_groups"] = sorted(group_names[g] for g in f.read_group_ids)
        out["edit_groups"] = sorted(group_names[g] for g in f.edit_group_ids)
        out["export"] = {"mode": f.export_mode, "partners": list(f.export_partners)}
    return out


async def group_names(session: AsyncSession) -> dict[int, str]:
    rows = await session.execute(select(Group.id, Group.name))
    return {gid: name for gid, name in rows.all()}


async def create_tracker(session: AsyncSession, data: dict[str, Any]) -> Tracker:
    allowed = {"slug", "name", "description", "require_if_match"}
    _no_unknown(data, allowed, "a tracker")
    slug = _check_slug(data.get("slug"))
    name = _text("name", data.get("name", slug), 200, required=True)
    description = _text("description", data.get("description", ""), 20_000)
    require = data.get("require_if_match", False)
    if not isinstance(require, bool):
        raise invalid("require_if_match must be true or false")
    if await session.scalar(select(Tracker.id).where(Tracker.slug == slug)) is not None:
        raise conflict(f"a tracker named {slug!r} already exists")
    tracker = Tracker(
        slug=slug, name=name, description=description, require_if_match=require,
        created_at=now(),
    )
    session.add(tracker)
    await session.flush()
    return tracker


async def update_tracker(session: AsyncSession, tracker: Tracker, data: dict[str, Any]) -> None:
    _no_unknown(data, {"name", "description", "require_if_match"}, "a tracker")
    if "name" in data:
        tracker.name = _text("name", data["name"], 200, required=True)
    if "description" in data:
        tracker.description = _text("description", data["description"], 20_000)
    if "require_if_match" in data:
        if not isinstance(data["require_if_match"], bool):
            raise invalid("require_if_match must be true or false")
        tracker.require_if_match = data["require_if_match"]
    await session.flush()


def _no_unknown(data: dict[str, Any], allowed: set[str], what: str) -> None:
    unknown = set(data) - allowed
    if unknown:
        raise invalid(
            f"unknown member(s) {', '.join(sorted(unknown))}; "
            f"{what} has {', '.join(sorted(allowed))}"
        )


def _check_export(export: Any, field_type: str, mode: str, partners: list[str]
                  ) -> tuple[str, list[str]]:
    """A field's export setting {mode, partners} as given, over the current `mode` and
    `partners`: (mode, partner base URLs, deduplicated and sorted)."""
    if not isinstance(export, dict):
        raise invalid("export must be an object {mode, partners}")
    _no_unknown(export, {"mode", "partners"}, "export")
    mode, partners = export.get("mode", mode), export.get("partners", partners)
    if mode not in EXPORT_MODES:
        raise invalid(f"export.mode must be one of {', '.join(EXPORT_MODES)}; got {mode!r}")
    if not isinstance(partners, list) or not all(isinstance(p, str) for p in partners):
        raise invalid("export.partners must be a list of instance base URLs")
    cleaned = []
    for p in partners:
        parts = urlsplit(p)
        if parts.scheme not in ("http", "https") or not parts.netloc or parts.path not in ("", "/"):
            raise invalid(
                f"export partner {p!r} must be an instance base URL such as https://b.example"
            )
        cleaned.append(f"{parts.scheme}://{parts.netloc}")
    if mode == "partners" and not cleaned:
        raise invalid("export.mode 'partners' needs at least one partner instance")
    if field_type == "remote" and mode != "none":
        raise invalid("a remote field mirrors another instance's field and cannot be exported")
    return mode, sorted(set(cleaned))


async def create_field(session: LogSession, tracker: Tracker, data: dict[str, Any]) -> Field:
    allowed = {"name", "label", "type", "options", "position", "read_groups", "edit_groups",
               "export"}
    _no_unknown(data, allowed, "a field")
    try:
        name = check_name("field", data.get("name"))
        options = validate_options(data.get("type", "text"), data.get("options"))
    except FieldTypeError as exc:
        raise invalid(str(exc)) from None
    field_type = data.get("type", "text")
    label = _text("label", data.get("label", name), 200, required=True)
    if await session.scalar(
        select(Field.id).where(Field.tracker_id == tracker.id, Field.name == name)
    ) is not None:
        raise conflict(f"tracker {tracker.slug!r} already has a field named {name!r}")
    position = data.get("position")
    if position is None:
        last = await session.scalar(
            select(func.coalesce(func.max(Field.position), -1)).where(
                Field.tracker_id == tracker.id)
        )
        position = int(last if last is not None else -1) + 1
    position = _position(position)
    mode, partners = _check_export(data.get("export", {}), field_type, "none", [])
    field = Field(
        tracker_id=tracker.id, name=name, label=label, type=field_type, options=options,
        position=position, export_mode=mode, export_partners=partners, created_at=now(),
    )
    session.add(field)
    await session.flush()
    # Default rights: every logged-in user reads and edits, as a new Tiki field does.
    await set_field_groups(session, field, "read", data.get("read_groups", [REGISTERED]))
    await set_field_groups(session, field, "edit", data.get("edit_groups", [REGISTERED]))
    await changelog.rights_changed(session, now())
    if mode != "none":
        await changelog.export_changed(session, now(), tracker_id=tracker.id, field_id=field.id,
                                       field_name=field.name)
    return field


async def update_field(session: LogSession, field: Field, data: dict[str, Any]) -> None:
    allowed = {"label", "options", "position", "read_groups", "edit_groups", "export"}
    _no_unknown(data, allowed, "a field (its name and type are fixed)")
    if "label" in data:
        field.label = _text("label", data["label"], 200, required=True)
    if "options" in data:
        try:
            field.options = validate_options(field.type, data["options"])
        except FieldTypeError as exc:
            raise invalid(str(exc)) from None
    if "position" in data:
        field.position = _position(data["position"])
    export_before = (field.export_mode, sorted(field.export_partners))
    if "export" in data:
        field.export_mode, field.export_partners = _check_export(
            data["export"], field.type, field.export_mode, list(field.export_partners))
    for kind in ("read", "edit"):
        if f"{kind}_groups" in data:
            await set_field_groups(session, field, kind, data[f"{kind}_groups"])
    await session.flush()
    # Appended last: the event counter's lock is held from here to the commit.
    if "read_groups" in data or "edit_groups" in data:
        await changelog.rights_changed(session, now())
    if (field.export_mode, sorted(field.export_partners)) != export_before:
        await changelog.export_changed(session, now(), tracker_id=field.tracker_id,
                                       field_id=field.id, field_name=field.name)


async def reorder_fields(session: AsyncSession, tracker: Tracker, data: dict[str, Any]) -> None:
    """Put the tracker's fields in the order of ``data["fields"]``, which names every
    field once: positions become 0, 1, 2, … in one transaction, so no reader ever sees
    two fields swapped halfway."""
    _no_unknown(data, {"fields"}, "a field order")
    names = data.get("fields")
    if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
        raise invalid("fields must be the list of the tracker's field names, in the new order")
    rows = (await session.execute(
        select(Field).where(Field.tracker_id == tracker.id))).scalars().all()
    by_name = {f.name: f for f in rows}
    if len(set(names)) != len(names):
        twice = sorted(n[:70] for n, times in Counter(names).items() if times > 1)
        raise invalid(f"fields lists {', '.join(twice[:10])} more than once")
    unknown, missing = set(names) - set(by_name), set(by_name) - set(names)
    if unknown:
        shown = [n[:70] for n in sorted(unknown)[:10]]  # a script's list can be long
        raise invalid(f"tracker {tracker.slug!r} has no field(s) {', '.join(shown)}")
    if missing:
        raise invalid(f"fields must name every field of the tracker; missing "
                      f"{', '.join(sorted(missing))}")
    for position, name in enumerate(names):
        by_name[name].position = position
    await session.flush()


async def delete_field(session: LogSession, field: Field) -> None:
    """Delete a field and all its values. The change log keeps their history; readers
    learn of it from a FIELD_DELETED row (the live hub re-reads rights, federation
    re-checks what its subscribers may see)."""
    tracker_id, field_id, name = field.tracker_id, field.id, field.name
    await session.delete(field)
    await session.flush()
    await changelog.field_deleted(session, now(), tracker_id=tracker_id, field_id=field_id,
                                  field_name=name)


async def set_field_groups(session: AsyncSession, field: Field, kind: str, names: Any) -> None:
    table = field_read_groups if kind == "read" else field_edit_groups
    groups = await groups_by_name(session, names)
    await session.execute(delete(table).where(table.c.field_id == field.id))
    if groups:
        await session.execute(
            insert(table), [{"field_id": field.id, "group_id": g.id} for g in groups]
        )


async def get_field(session: AsyncSession, tracker: Tracker, name: str) -> Field:
    field = await session.scalar(
        select(Field).where(Field.tracker_id == tracker.id, Field.name == name)
    )
    if field is None:
        raise not_found(f"field {name!r} of tracker {tracker.slug!r}")
    return field


async def tracker_fields(session: AsyncSession, tracker: Tracker) -> list[FieldDef]:
    return (await load_fields(session, [tracker.id]))[tracker.id]
