"""The JSON API's bodies and answers, as the handlers take and return them.

Every request body is validated into one of these before its handler runs, and every
answer a handler returns is checked against its model (``instance/openapi.py``), so
``/openapi.json``, built from the same classes, cannot say something the server does not
do. They are TypedDicts: the handlers take and return plain dicts, and a member that is
optional in a body is simply absent (``NotRequired``), never null, which is what the
domain functions (``accounts.update_user``, ``trackers.update_field``...) expect.

All are strict (no coercion: ``"true"`` is no boolean, ``1.0`` no whole number) and
refuse unknown members, in bodies and in answers alike: a handler that starts sending a
member nobody described fails its tests instead of drifting away from the description.
What types cannot say (a username's characters, a field name's shape, which groups
exist) the domain functions check, with their own messages; the descriptions say it.
"""

from __future__ import annotations

from typing import Annotated, Literal, NotRequired, get_args

from pydantic import BaseModel, ConfigDict, Field, JsonValue, with_config
from typing_extensions import TypedDict  # pydantic takes no typing.TypedDict before 3.12

from instance.federation.overview import DELIVERIES_SHOWN
from instance.fieldtypes import FIELD_TYPES
from instance.web import MAX_INT

STRICT = ConfigDict(strict=True, extra="forbid")


def strict(*examples: JsonValue) -> ConfigDict:
    """STRICT, with examples for the description (and for schemathesis to send)."""
    return ConfigDict(strict=True, extra="forbid", json_schema_extra={"examples": list(examples)})

#: RFC 3339 in UTC with a `Z` (`protocol.timestamps.format_timestamp`).
Timestamp = Annotated[str, Field(json_schema_extra={"format": "date-time"})]
Id = Annotated[int, Field(ge=1, le=MAX_INT)]
# Field.position is a 32-bit INTEGER on PostgreSQL (trackers._POSITION_LIMIT).
Position = Annotated[int, Field(ge=-(2**31 - 1), le=2**31 - 1)]
FieldType = Literal["text", "textarea", "number", "dropdown", "date", "user", "remote"]
# One list of field types: a new one in fieldtypes.py must be described here too.
assert get_args(FieldType) == FIELD_TYPES
ExportMode = Literal["none", "partners", "public"]
Value = Annotated[JsonValue, Field(description="any JSON value the field's type accepts; "
                                               "null clears the field")]


# ---- errors -----------------------------------------------------------------------------


@with_config(ConfigDict(strict=True, extra="allow"))
class Error(TypedDict):
    """The one shape of every error: a stable code and a sentence for a person.

    Some errors add members: `member` (the body member at fault), `field` (the
    item field at fault), `current` (a 412's current value of the field)."""

    error: str
    detail: str


# ---- accounts -----------------------------------------------------------------------------


@with_config(strict({"username": "alice", "password": "correct horse battery staple"}))
class Login(TypedDict):
    """Log in: sets the session cookie and answers the account."""

    username: str
    password: str


@with_config(STRICT)
class User(TypedDict):
    """An account."""

    id: Id
    username: str
    display_name: str
    is_admin: bool
    disabled: bool
    groups: list[str]
    created_at: Timestamp


@with_config(STRICT)
class UserList(TypedDict):
    users: list[User]


@with_config(strict({"username": "erin", "password": "a long enough password",
                    "display_name": "Erin", "groups": []}))
class NewUser(TypedDict):
    """A new account. A username is 1 to 64 letters, digits, '.', '_' or '-', starting with
    a letter or digit; the password must be strong enough (the answer says why not);
    `groups` are names of existing, not built-in groups."""

    username: str
    password: str
    display_name: NotRequired[str]
    is_admin: NotRequired[bool]
    groups: NotRequired[list[str]]


@with_config(strict({"display_name": "Erin M."}, {"disabled": False, "groups": []}))
class UserChanges(TypedDict, total=False):
    """What to change of an account; a member left out stays as it is. A new password or
    `disabled: true` ends the account's sessions; `groups` replaces the memberships."""

    display_name: str
    password: str
    is_admin: bool
    disabled: bool
    groups: list[str]


@with_config(STRICT)
class Group(TypedDict):
    """A group; `members` is null for the built-in groups (Anonymous is everyone,
    Registered every logged-in user)."""

    name: str
    description: str
    builtin: bool
    members: list[str] | None


@with_config(STRICT)
class GroupList(TypedDict):
    groups: list[Group]


@with_config(strict({"name": "Support", "description": "first line"}))
class NewGroup(TypedDict):
    """A new group: a name of 1 to 64 letters, digits, spaces, '.', '_' or '-'."""

    name: str
    description: NotRequired[str]


@with_config(STRICT)
class Token(TypedDict):
    """An API token (its secret is shown only when it is made)."""

    id: Id
    name: str
    created_at: Timestamp
    last_used_at: Timestamp | None


@with_config(STRICT)
class NewTokenSecret(Token):
    """The new token, with its secret: send it as `Authorization: Bearer <token>`."""

    token: str


@with_config(STRICT)
class TokenList(TypedDict):
    tokens: list[Token]


@with_config(strict({"name": "ci script"}))
class NewToken(TypedDict):
    """A new API token of the caller, named to tell it apart later (1 to 100 characters)."""

    name: str


# ---- trackers and fields ---------------------------------------------------------------


@with_config(STRICT)
class Export(TypedDict):
    """To whom a field's values are exported: nobody, the listed partner instances (base
    URLs), or everyone."""

    mode: ExportMode
    partners: list[str]


@with_config(STRICT)
class ExportChanges(TypedDict, total=False):
    """A field's export setting; a member left out stays as it is."""

    mode: ExportMode
    partners: list[str]


@with_config(STRICT)
class FieldDefinition(TypedDict):
    """A field of a tracker. Only admins see who reads and edits it and what is exported."""

    name: str
    label: str
    type: FieldType
    options: dict[str, JsonValue]
    position: Position
    can_edit: bool
    read_groups: NotRequired[list[str]]
    edit_groups: NotRequired[list[str]]
    export: NotRequired[Export]


@with_config(STRICT)
class Tracker(TypedDict):
    """A tracker with the fields the caller may read, in display order; `id` is what a
    `/live` subscription to the tracker names."""

    id: Id
    slug: str
    name: str
    description: str
    require_if_match: bool
    created_at: Timestamp
    fields: list[FieldDefinition]


@with_config(STRICT)
class TrackerList(TypedDict):
    trackers: list[Tracker]


@with_config(strict({"slug": "support", "name": "Support", "require_if_match": True}))
class NewTracker(TypedDict):
    """A new tracker. The slug is 1 to 64 lowercase letters, digits and '_', starting with
    a letter; `require_if_match` makes every save send If-Match."""

    slug: str
    name: NotRequired[str]
    description: NotRequired[str]
    require_if_match: NotRequired[bool]


@with_config(strict({"description": "What customers report."}))
class TrackerChanges(TypedDict, total=False):
    """What to change of a tracker; a member left out stays as it is."""

    name: str
    description: str
    require_if_match: bool


@with_config(strict({"name": "severity", "type": "dropdown",
                    "options": {"choices": ["low", "high"]}, "read_groups": ["Registered"]},
                   {"name": "effort", "type": "number", "options": {"min": 0, "integer": True},
                    "export": {"mode": "public"}}))
class NewField(TypedDict):
    """A new field. Its name is 1 to 64 lowercase letters, digits and '_', starting with a
    letter; `options` depend on the type (number: min, max, integer; dropdown: choices;
    remote: source {instance, tracker, field}). Read and edit groups default to
    Registered; a position left out puts the field last."""

    name: str
    label: NotRequired[str]
    type: NotRequired[FieldType]
    options: NotRequired[dict[str, JsonValue] | None]
    position: NotRequired[Position | None]
    read_groups: NotRequired[list[str]]
    edit_groups: NotRequired[list[str]]
    export: NotRequired[ExportChanges]


@with_config(strict({"label": "Title", "position": 0}, {"export": {"mode": "none"}}))
class FieldChanges(TypedDict, total=False):
    """What to change of a field (its name and type are fixed); a member left out stays
    as it is. `read_groups` and `edit_groups` replace the groups."""

    label: str
    options: dict[str, JsonValue] | None
    position: Position
    read_groups: list[str]
    edit_groups: list[str]
    export: ExportChanges


# ---- items --------------------------------------------------------------------------------


@with_config(STRICT)
class RemoteState(TypedDict):
    """Where a remote field's value comes from and how current it is."""

    instance: str | None
    item_url: str | None
    state: Literal["unlinked", "live", "stale", "not_subscribed", "no_longer_shared"]
    synced_at: Timestamp | None
    stale_since: Timestamp | None
    reason: str | None
    subscription: NotRequired[str]


@with_config(STRICT)
class ItemField(TypedDict):
    """One field of an item. `version` is the field's: send it back as If-Match when
    saving. `remote` only for a remote field, in the answer of a single item."""

    label: str
    type: FieldType
    value: JsonValue
    version: Annotated[int, Field(ge=0)]
    updated_at: Timestamp | None
    updated_by: str | None
    can_edit: bool
    remote: NotRequired[RemoteState]


@with_config(STRICT)
class Item(TypedDict):
    """An item with the fields the caller may read, in display order."""

    id: Id
    tracker: str
    version: Annotated[int, Field(ge=0)]
    created_at: Timestamp
    remote_url: str | None
    fields: dict[str, ItemField]


@with_config(STRICT)
class ItemView(Item):
    """An item; `topic` is its federation topic when a field of it is exported."""

    topic: str | None


@with_config(STRICT)
class ItemPage(TypedDict):
    """A page of items in the order of `sort`; `next` and `prev` are the `cursor` of the
    page after and before it (null at either end); with `sort=id`, `next_after` is the
    `after` of the next page (null on the last)."""

    items: list[Item]
    next: str | None
    prev: str | None
    next_after: Id | None
    sort: str


@with_config(strict({"fields": {"title": "The login page is slow"}}, {"fields": {}}))
class NewItem(TypedDict):
    """A new item: its first values by field name (`{}` for none yet)."""

    fields: dict[str, Value]


@with_config(STRICT)
class FieldView(ItemField):
    """One field of an item."""

    item: Id
    field: str


@with_config(strict({"value": "closed"}, {"value": None}))
class NewValue(TypedDict):
    """The field's new value; null clears it."""

    value: Value


@with_config(STRICT)
class Saved(TypedDict):
    """The saved field. `changed` is false when it held that value already (no event,
    no new version)."""

    item: Id
    field: str
    value: JsonValue
    version: Annotated[int, Field(ge=0)]
    updated_at: Timestamp
    updated_by: str | None
    changed: bool
    event: Id | None
    item_version: Id | None


@with_config(STRICT)
class ValueChange(TypedDict):
    """A field got a new value."""

    event: Id
    item: Id
    tracker: str | None
    field: str
    old_version: Annotated[int, Field(ge=0)]
    version: Id
    item_version: Id
    value: JsonValue
    old_value: JsonValue
    by: str | None
    source: Literal["user", "federation"]
    at: Timestamp


@with_config(STRICT)
class ItemCreated(TypedDict):
    """An item was created (its first values follow as their own rows)."""

    event: Id
    item: Id
    tracker: str | None
    created: Literal[True]
    field: None
    item_version: Annotated[int, Field(ge=0)]
    by: str | None
    source: Literal["user", "federation"]
    at: Timestamp


@with_config(STRICT)
class ItemDeleted(TypedDict):
    """An item was deleted."""

    event: Id
    item: Id
    tracker: str | None
    deleted: Literal[True]
    by: str | None
    at: Timestamp


@with_config(STRICT)
class ChangePage(TypedDict):
    """Changes after `since` that the caller may read now. Resume with `since=next`
    while `more`; positions compare only within one `epoch`."""

    epoch: str
    changes: list[ValueChange | ItemCreated | ItemDeleted]
    next: Annotated[int, Field(ge=0)]
    more: bool
    head: Annotated[int, Field(ge=0)]



# ---- for endpoints that main has and this branch does not yet (the merge decorates) -----


@with_config(strict({"old_password": "the one I have", "new_password": "a new long password"}))
class NewPassword(TypedDict):
    """Your own new password, with the current one; your other sessions end."""

    old_password: str
    new_password: str


@with_config(strict({"fields": ["title", "status", "notes"]}))
class FieldOrder(TypedDict):
    """Every field's name, once each, in the new display order."""

    fields: list[str]


@with_config(STRICT)
class ItemHistory(TypedDict):
    """One item's changes of the fields the caller may read now, newest first;
    `next_before` is the `before` of the next page, null on the last."""

    item: Id
    changes: list[ValueChange | ItemDeleted]
    next_before: Id | None


# ---- federation -------------------------------------------------------------------------


@with_config(STRICT)
class Subscription(TypedDict):
    """A subscription to this instance's hub: an item topic or a tracker's feed."""

    id: Id
    state: str
    topic: str
    kind: Literal["item", "feed"]
    item: Id | None
    tracker: str | None
    callback: str
    subscriber_origin: str | None
    signed: bool
    has_secret: bool
    lease_seconds: int | None
    lease_expires_at: Timestamp | None
    exported_fields: list[str]
    created_at: Timestamp
    verified_at: Timestamp | None
    last_success_at: Timestamp | None
    last_error: str | None
    last_error_at: Timestamp | None


@with_config(STRICT)
class SubscriptionList(TypedDict):
    subscriptions: list[Subscription]


@with_config(STRICT)
class Delivery(TypedDict):
    """A delivery to a subscriber: sent, waiting or failed."""

    id: Id
    state: str
    subscription: Id
    callback: str
    topic: str
    kind: Literal["item", "feed"]
    item: Id | None
    tracker: str | None
    event_id: int
    item_version: int
    fields: list[str]
    attempts: int
    next_attempt_at: Timestamp | None
    last_status: int | None
    last_error: str | None
    updated_at: Timestamp


@with_config(STRICT)
class DeliveryList(TypedDict):
    deliveries: list[Delivery]


@with_config(STRICT)
class Outgoing(TypedDict):
    """A subscription this instance holds on another instance's hub."""

    id: Id
    topic: str
    instance: str
    hub: str
    callback: str
    state: str
    awaiting: str | None
    pending_request: str | None
    sync_state: str
    reason: str | None
    denied_reason: str | None
    lease_seconds: int | None
    lease_expires_at: Timestamp | None
    renew_at: Timestamp | None
    last_ping_at: Timestamp | None
    last_fetch_at: Timestamp | None
    remote_version: int | None
    stale_since: Timestamp | None
    fetch_due_at: Timestamp | None
    fetch_attempts: int
    last_error: str | None
    last_error_at: Timestamp | None
    linked_items: int


@with_config(STRICT)
class OutgoingList(TypedDict):
    subscriptions: list[Outgoing]


@with_config(strict({"url": "https://a.example/items/7"}))
class NewLink(TypedDict):
    """The URL of an item page (`https://a.example/items/7`) or topic of another
    instance whose item this one mirrors."""

    url: str


@with_config(STRICT)
class Unlinked(TypedDict):
    item: Id
    linked: Literal[False]


@with_config(STRICT)
class Linked(TypedDict):
    """The item mirrors `item_url`; `unshared` names the fields the host stopped
    exporting, each with the sentence saying so."""

    item: Id
    linked: Literal[True]
    item_url: str
    topic: str
    instance: str
    subscription: str
    synced_at: Timestamp | None
    unshared: dict[str, str]


# ---- query parameters and headers (read by the handlers, see instance/openapi.py) --------


class ItemsQuery(BaseModel):
    """Besides these, per readable field: `FIELD=VALUE` (dropdown and user fields,
    repeatable) and `FIELD.from` / `FIELD.to` (date and number fields). Any other
    parameter is refused with 400."""

    model_config = ConfigDict(strict=True)

    limit: int = Field(50, ge=1, le=500, description="items per page")
    sort: str = Field("id", description="a readable field's name, or id; a leading - "
                                        "sorts descending")
    q: str = Field("", description="only items where a readable text field contains this "
                                   "(case-insensitive)")
    cursor: str = Field("", description="the next or prev of the page before, in the same "
                                        "sort")
    after: int = Field(0, ge=0, le=MAX_INT,
                       description="with sort=id: only items with a greater id, the "
                                   "next_after of the page before")


class ChangesQuery(BaseModel):
    model_config = ConfigDict(strict=True)

    since: int = Field(0, ge=0, le=MAX_INT,
                       description="only changes after this position: the next of the "
                                   "page before")
    limit: int = Field(100, ge=1, le=1000, description="changes per page, at most")
    item: int = Field(0, ge=0, le=MAX_INT, description="only changes of this item (0: all)")
    tracker: str = Field("", description="only changes of this tracker (its slug)")


class DeliveriesQuery(BaseModel):
    model_config = ConfigDict(strict=True)

    limit: int = Field(DELIVERIES_SHOWN, ge=1, le=1000, description="the newest so many")


class IfMatch(BaseModel):
    if_match: str = Field(
        "", description='the version of the field you edited, as an entity tag ("7"), '
                          "so that a change made since is not overwritten (412); required "
                          "when the tracker has require_if_match (428)")


class IfNoneMatch(BaseModel):
    if_none_match: str = Field(
        "", description="the ETag of the item as you have it: 304 if it is unchanged")


class HistoryQuery(BaseModel):
    model_config = ConfigDict(strict=True)

    before: int = Field(MAX_INT, ge=1, le=MAX_INT,
                        description="only changes before this event: the next_before of "
                                    "the page before")
    limit: int = Field(50, ge=1, le=500, description="changes per page, at most")
    field: str = Field("", description="only changes of this field (its name)")
