"""What the hub needs from the instance, as an interface (hub never imports instance).

The instance owns the database; the hub asks it to read the change log and to answer
rights questions. Everything the hub sends to a browser passes through these answers.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

from hub.changes import Change


@dataclass(frozen=True, slots=True)
class Viewer:
    """Who is behind a connection, and the credential that must stay valid."""

    user_id: int | None
    username: str | None
    credential: tuple[str, str] | None  # ("session" | "token", hash of the secret)
    expires_at: datetime | None  # when the credential stops being valid by itself


@dataclass(frozen=True, slots=True)
class FieldRights:
    """What one user may do with the fields of one tracker, by field name."""

    readable: frozenset[str] = frozenset()
    editable: frozenset[str] = frozenset()


class LiveBackend(Protocol):
    epoch: str

    async def head(self) -> int:
        """The newest event id."""

    async def read(self, after: int, limit: int) -> list[Change]:
        """Rows with id > after, in id order, at most ``limit``."""

    async def replay(self, after: int, upto: int, items: Iterable[int], limit: int
                     ) -> list[Change] | None:
        """Value rows after..upto for these items, in order; None if more than ``limit``."""

    async def trackers_of(self, items: Iterable[int]) -> dict[int, int]:
        """item id -> tracker id, for the items that exist."""

    async def field_rights(self, user_id: int | None, trackers: Iterable[int]
                           ) -> dict[int, FieldRights]:
        """tracker id -> the fields this user may read and edit now."""

    async def still_valid(self, viewer: Viewer) -> bool:
        """Whether the viewer's session or token is still good (not logged out, expired,
        revoked, or of a disabled account)."""
