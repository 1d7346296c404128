"""One change-log entry, the single shape every reader of the log uses.

The instance writes the log (instance/changelog.py owns it); the live hub, the API's
``/api/changes`` and federation read it, each as this type. What they send (a live
frame, a JSON row, a notification) is a projection of a ``Change``, made in one place
each. The type lives in hub/ because hub/ may not import instance/ and both need it.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Any


class ChangeKind(StrEnum):
    """What a change-log row records. The values are stored in the ``kind`` column."""

    #: A field of an item got a new value (``item``, ``field``, ``value``, ``version``).
    VALUE = "value"
    #: An item was created (``item``, ``tracker``), written before its first values in
    #: the same transaction: what lets a live tracker page show new items.
    CREATED = "created"
    #: An item was deleted (``item``, ``tracker``); its history stays in the log.
    ITEM_DELETED = "deleted"
    #: Who may read or edit which fields changed (memberships, field groups, admin
    #: flag). ``subject`` is the user it is about, or None for possibly everyone.
    RIGHTS = "rights"
    #: Some logins of ``subject`` ended (logout, password change, account disabled).
    SESSION = "session"
    #: A field's export settings changed (``tracker``, ``field``): what federation
    #: subscribers may see of the tracker's items may differ from now on.
    EXPORT = "export"
    #: A field was deleted (``tracker``, ``field``) with all its values.
    FIELD_DELETED = "field_deleted"


@dataclass(frozen=True, slots=True)
class Change:
    """One row of the change log. ``event`` is gap-free and in commit order."""

    event: int
    kind: ChangeKind
    at: datetime  # aware, UTC
    item: int | None = None
    tracker: int | None = None
    field: str | None = None  # the field's name
    field_id: int | None = None
    value: Any = None
    version: int | None = None  # the field's version after the change
    old_value: Any = None
    old_version: int | None = None
    item_version: int | None = None  # the item's version after the change
    by: str | None = None  # the username of who made it, when a user did
    source: str = "user"  # "user" (this instance's API) or "federation" (a mirror)
    subject: int | None = None  # the user a RIGHTS or SESSION change is about


#: (event id, item id or None): what a commit appended, as the broker carries it.
Appended = tuple[int, int | None]
