"""Appending to the change log: the one place event ids are handed out.

Every append records the event in ``session.info`` so that ``Database.write`` can tell
the live hub, after the commit, that the log has grown.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import insert, update
from sqlalchemy.ext.asyncio import AsyncSession

from instance.db import run
from instance.models import ChangeLog, EventCounter

EVENTS_KEY = "fieldcast_events"

_counter = EventCounter.__table__
_NEXT_EVENT = (update(_counter).where(_counter.c.id == 1)
               .values(value=_counter.c.value + 1).returning(_counter.c.value))
_INSERT_EVENT = insert(ChangeLog.__table__)


async def next_event_id(session: AsyncSession) -> int:
    # Taken last in a transaction: the counter row's lock serializes commits in id order.
    value = (await run(session, _NEXT_EVENT, {})).scalar()
    assert value is not None
    return int(value)


async def append(session: AsyncSession, *, at: datetime, **row: Any) -> int:
    event_id = await next_event_id(session)
    await run(session, _INSERT_EVENT, {"id": event_id, "at": at, **row})
    session.info.setdefault(EVENTS_KEY, []).append((event_id, row.get("item_id")))
    return event_id


async def rights_changed(session: AsyncSession, at: datetime, *, actor_id: int | None = None,
                         subject_id: int | None = None) -> int:
    """Who may read or edit what changed (memberships, field groups, admin flag)."""
    return await append(session, at=at, kind="rights", actor_id=actor_id, subject_id=subject_id)


async def sessions_changed(session: AsyncSession, at: datetime, subject_id: int,
                           *, actor_id: int | None = None) -> int:
    """Some logins of ``subject_id`` ended (logout, password change, account disabled)."""
    return await append(session, at=at, kind="session", actor_id=actor_id,
                        subject_id=subject_id)
