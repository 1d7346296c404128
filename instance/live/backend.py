"""The hub's view of the database: the change log and the rights tables.

The hub (hub/) knows nothing of the database; ``DatabaseBackend`` answers its questions.
"""

from __future__ import annotations

from collections.abc import Iterable

from sqlalchemy import select

from hub.backend import FieldRights, Viewer
from hub.changes import Change
from instance.changelog import ChangeLog
from instance.clock import as_utc, now
from instance.models import ApiToken, Item, Session, User
from instance.rights import load_fields, principal_for


class DatabaseBackend:
    def __init__(self, log: ChangeLog, epoch: str) -> None:
        self.log = log
        self.db = log.db
        self.epoch = epoch

    async def head(self) -> int:
        return await self.log.head()

    async def read(self, after: int, limit: int) -> list[Change]:
        return await self.log.read(after, limit)

    async def replay(self, after: int, upto: int, items: Iterable[int], limit: int
                     ) -> list[Change] | None:
        return await self.log.replay(after, upto, items, limit)

    async def trackers_of(self, items: Iterable[int]) -> dict[int, int]:
        ids = list(items)
        if not ids:
            return {}
        async with self.db.read() as session:
            rows = await session.execute(
                select(Item.id, Item.tracker_id).where(Item.id.in_(ids))
            )
            return {item: tracker for item, tracker in rows.all()}

    async def field_rights(self, user_id: int | None, trackers: Iterable[int]
                           ) -> dict[int, FieldRights]:
        async with self.db.read() as session:
            user = None
            if user_id is not None:
                user = await session.get(User, user_id)
                if user is None or user.disabled:
                    return {}
            who = await principal_for(session, user)
            fields = await load_fields(session, trackers)
        return {t: FieldRights(frozenset(f.name for f in defs if f.readable_by(who)),
                               frozenset(f.name for f in defs if f.editable_by(who)))
                for t, defs in fields.items()}

    async def still_valid(self, viewer: Viewer) -> bool:
        if viewer.credential is None:
            return True
        kind, hashed = viewer.credential
        async with self.db.read() as session:
            if kind == "session":
                row = (await session.execute(
                    select(Session.expires_at, User.disabled)
                    .join(User, User.id == Session.user_id)
                    .where(Session.token_hash == hashed)
                )).first()
                return row is not None and as_utc(row[0]) > now() and not row[1]
            disabled = await session.scalar(
                select(User.disabled).join(ApiToken, ApiToken.user_id == User.id)
                .where(ApiToken.token_hash == hashed)
            )
            return disabled is not None and not disabled
