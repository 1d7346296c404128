"""Who may read and edit which field.

Rights are looked up afresh for every request, so a change of group membership or of a
field's groups takes effect on the next request without anyone logging in again.

Rules (Tiki's "visible by" / "editable by"):
- Everyone is in the built-in group Anonymous; every logged-in user also in Registered.
- A field is readable by members of its read groups, editable by members of its edit
  groups who can also read it. A field with no read groups is readable only by admins.
- Admins read and edit every field. Nobody edits a ``remote`` field: its host owns it.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Protocol

from sqlalchemy import bindparam, literal, select, union_all
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Session

from instance.db import execute
from instance.models import Field, Group, User, field_edit_groups, field_read_groups, user_groups

ANONYMOUS = "Anonymous"
REGISTERED = "Registered"
BUILTIN_GROUPS = (ANONYMOUS, REGISTERED)


@dataclass(frozen=True)
class Principal:
    """The caller of a request: a user (or nobody), and every group they are in."""

    user_id: int | None
    username: str | None
    is_admin: bool
    group_ids: frozenset[int]

    @property
    def is_authenticated(self) -> bool:
        return self.user_id is not None


@dataclass(frozen=True)
class FieldDef:
    """A field with its group ids: everything a rights or validation check needs."""

    id: int
    tracker_id: int
    name: str
    label: str
    type: str
    options: dict[str, Any]
    position: int
    read_group_ids: frozenset[int]
    edit_group_ids: frozenset[int]
    export_mode: str
    export_partners: tuple[str, ...]

    def readable_by(self, who: Principal) -> bool:
        return who.is_admin or bool(self.read_group_ids & who.group_ids)

    def editable_by(self, who: Principal) -> bool:
        if self.type == "remote":
            return False
        if who.is_admin:
            return True
        return bool(self.edit_group_ids & who.group_ids) and self.readable_by(who)


async def builtin_group_ids(session: AsyncSession) -> dict[str, int]:
    rows = await session.execute(select(Group.name, Group.id).where(Group.builtin.is_(True)))
    return {name: gid for name, gid in rows.all()}


class _Caller(Protocol):
    # A User, or accounts.Holder (the same columns without the ORM object).
    @property
    def id(self) -> int: ...
    @property
    def username(self) -> str: ...
    @property
    def is_admin(self) -> bool: ...


def principal_from(user: _Caller | None, member_of: Iterable[int], builtin: dict[str, int]
                   ) -> Principal:
    """The caller with their implicit groups added (Anonymous; Registered when logged in)."""
    if user is None:
        return Principal(None, None, False, frozenset({builtin[ANONYMOUS]}))
    ids = {builtin[ANONYMOUS], builtin[REGISTERED], *member_of}
    return Principal(user.id, user.username, user.is_admin, frozenset(ids))


async def principal_for(session: AsyncSession, user: User | None) -> Principal:
    member_of: list[int] = []
    if user is not None:
        rows = await session.execute(
            select(user_groups.c.group_id).where(user_groups.c.user_id == user.id)
        )
        member_of = list(rows.scalars())
    return principal_from(user, member_of, await builtin_group_ids(session))


_fields = Field.__table__
_FIELDS_OF = (select(_fields.c.id, _fields.c.tracker_id, _fields.c.name, _fields.c.label,
                     _fields.c.type, _fields.c.options, _fields.c.position,
                     _fields.c.export_mode, _fields.c.export_partners)
              .where(_fields.c.tracker_id.in_(bindparam("trackers", expanding=True)))
              .order_by(_fields.c.position, _fields.c.id))
# Both rights tables in one round trip.
_GROUPS_OF = union_all(
    select(literal("r"), field_read_groups.c.field_id, field_read_groups.c.group_id)
    .where(field_read_groups.c.field_id.in_(bindparam("fields", expanding=True))),
    select(literal("e"), field_edit_groups.c.field_id, field_edit_groups.c.group_id)
    .where(field_edit_groups.c.field_id.in_(bindparam("fields", expanding=True))),
)


async def load_fields(
    session: AsyncSession, tracker_ids: Iterable[int]
) -> dict[int, list[FieldDef]]:
    """Field definitions per tracker, in display order, with their groups: 2 queries,
    both prebuilt (every request that reads or saves a field runs them)."""
    ids = list(tracker_ids)
    if not ids:
        return {}
    return await session.run_sync(_fields_in, ids)


def _fields_in(session: Session, ids: list[int]) -> dict[int, list[FieldDef]]:
    session.flush()  # what is pending first, as Session.execute would
    return fields_on(session.connection(), ids)


def fields_on(conn: Connection, tracker_ids: Iterable[int]) -> dict[int, list[FieldDef]]:
    """``load_fields`` on a sync connection (the save path, instance.items)."""
    ids = list(tracker_ids)
    fields = execute(conn, _FIELDS_OF, {"trackers": ids}).all() if ids else []
    field_ids = [f.id for f in fields]
    read: dict[int, set[int]] = {fid: set() for fid in field_ids}
    edit: dict[int, set[int]] = {fid: set() for fid in field_ids}
    if field_ids:
        rows = execute(conn, _GROUPS_OF, {"fields": field_ids}).all()
        for kind, fid, gid in map(tuple, rows):
            (read if kind == "r" else edit)[fid].add(gid)
    out: dict[int, list[FieldDef]] = {tid: [] for tid in ids}
    for f in fields:
        out[f.tracker_id].append(field_def(f, f.id, read[f.id], edit[f.id]))
    return out


def field_def(f: Any, field_id: int, read: Iterable[int], edit: Iterable[int]) -> FieldDef:
    """A ``FieldDef`` from a row with the columns of ``fields`` and its group ids."""
    return FieldDef(
        id=field_id,
        tracker_id=f.tracker_id,
        name=f.name,
        label=f.label,
        type=f.type,
        options=dict(f.options or {}),
        position=f.position,
        read_group_ids=frozenset(read),
        edit_group_ids=frozenset(edit),
        export_mode=f.export_mode,
        export_partners=tuple(f.export_partners or ()),
    )
