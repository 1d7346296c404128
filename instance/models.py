"""The tracker's tables. The schema itself is owned by the Alembic migrations."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    CheckConstraint,
    Column,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
    text,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

# Memberships and field rights are association tables without ORM collections: the
# rights code reads them with one query per table (instance.rights.load_fields).

# Stable constraint names, so migrations can refer to them on every database.
NAMING = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

# BigInteger ids on PostgreSQL; SQLite only auto-increments INTEGER PRIMARY KEY.
BigId = BigInteger().with_variant(Integer(), "sqlite")
# Every table with a surrogate id: SQLite never hands out an id used before (without
# AUTOINCREMENT it reuses the highest one once its row is deleted, and ids outlive their
# rows in the change log, links and federation topics). PostgreSQL's sequences never go
# back anyway. Migration 0007 rebuilt the existing tables so.
NO_ID_REUSE = {"sqlite_autoincrement": True}


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING)


user_groups = Table(
    "user_groups",
    Base.metadata,
    Column("user_id", ForeignKey("users.id", ondelete="CASCADE"), primary_key=True),
    Column("group_id", ForeignKey("groups.id", ondelete="CASCADE"), primary_key=True),
)

field_read_groups = Table(
    "field_read_groups",
    Base.metadata,
    Column("field_id", ForeignKey("fields.id", ondelete="CASCADE"), primary_key=True),
    Column("group_id", ForeignKey("groups.id", ondelete="CASCADE"), primary_key=True),
)

field_edit_groups = Table(
    "field_edit_groups",
    Base.metadata,
    Column("field_id", ForeignKey("fields.id", ondelete="CASCADE"), primary_key=True),
    Column("group_id", ForeignKey("groups.id", ondelete="CASCADE"), primary_key=True),
)


class Meta(Base):
    """Instance-wide values: the change log's epoch and the event counter."""

    __tablename__ = "meta"
    key: Mapped[str] = mapped_column(String(64), primary_key=True)
    value: Mapped[str] = mapped_column(Text)


class EventCounter(Base):
    """One row. Taking its row lock last in every write transaction hands out event ids
    in commit order with no gaps, so a reader of the log never skips an event that
    commits later with a smaller id."""

    __tablename__ = "event_counter"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    value: Mapped[int] = mapped_column(BigInteger)


class User(Base):
    __tablename__ = "users"
    __table_args__ = NO_ID_REUSE
    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    username: Mapped[str] = mapped_column(String(64), unique=True)
    display_name: Mapped[str] = mapped_column(String(200), default="")
    password_hash: Mapped[str] = mapped_column(String(255))
    is_admin: Mapped[bool] = mapped_column(Boolean, default=False)
    disabled: Mapped[bool] = mapped_column(Boolean, default=False)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class Group(Base):
    __tablename__ = "groups"
    __table_args__ = NO_ID_REUSE
    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    name: Mapped[str] = mapped_column(String(64), unique=True)
    description: Mapped[str] = mapped_column(String(500), default="")
    builtin: Mapped[bool] = mapped_column(Boolean, default=False)


class Session(Base):
    """A browser login. The cookie holds a random token; we keep only its hash."""

    __tablename__ = "sessions"
    token_hash: Mapped[str] = mapped_column(String(64), primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    expires_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class ApiToken(Base):
    __tablename__ = "api_tokens"
    __table_args__ = NO_ID_REUSE
    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    name: Mapped[str] = mapped_column(String(100))
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    last_used_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)


class Tracker(Base):
    __tablename__ = "trackers"
    __table_args__ = NO_ID_REUSE
    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    slug: Mapped[str] = mapped_column(String(64), unique=True)
    name: Mapped[str] = mapped_column(String(200))
    description: Mapped[str] = mapped_column(Text, default="")
    # When set, a PATCH without If-Match is refused with 428 instead of last-write-wins.
    require_if_match: Mapped[bool] = mapped_column(Boolean, default=False)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    fields: Mapped[list[Field]] = relationship(
        back_populates="tracker", lazy="raise", order_by="Field.position"
    )


class Field(Base):
    __tablename__ = "fields"
    __table_args__ = (UniqueConstraint("tracker_id", "name", name="uq_fields_tracker_name"),
                      NO_ID_REUSE)
    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    tracker_id: Mapped[int] = mapped_column(ForeignKey("trackers.id", ondelete="CASCADE"))
    name: Mapped[str] = mapped_column(String(64))
    label: Mapped[str] = mapped_column(String(200))
    type: Mapped[str] = mapped_column(String(20))
    # Per type: dropdown {"choices": [...]}, number {"min", "max", "integer"},
    # remote {"source": {"instance", "tracker", "field"}}.
    options: Mapped[dict] = mapped_column(JSON, default=dict)
    position: Mapped[int] = mapped_column(Integer, default=0)
    # Federation: "none", "partners" (only the instances in export_partners) or "public".
    export_mode: Mapped[str] = mapped_column(String(10), default="none")
    export_partners: Mapped[list] = mapped_column(JSON, default=list)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    tracker: Mapped[Tracker] = relationship(back_populates="fields", lazy="raise")


class Item(Base):
    __tablename__ = "items"
    __table_args__ = NO_ID_REUSE
    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    tracker_id: Mapped[int] = mapped_column(
        ForeignKey("trackers.id", ondelete="CASCADE"), index=True
    )
    # Bumped on every accepted field change: the item version federation notifies.
    version: Mapped[int] = mapped_column(BigInteger, default=0)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    created_by: Mapped[int | None] = mapped_column(
        ForeignKey("users.id", ondelete="SET NULL"), nullable=True
    )
    # The foreign item this one mirrors remote fields from (filled by federation).
    remote_url: Mapped[str | None] = mapped_column(String(2000), nullable=True)


class FieldValue(Base):
    __tablename__ = "field_values"
    item_id: Mapped[int] = mapped_column(
        ForeignKey("items.id", ondelete="CASCADE"), primary_key=True
    )
    field_id: Mapped[int] = mapped_column(
        ForeignKey("fields.id", ondelete="CASCADE"), primary_key=True
    )
    value: Mapped[object] = mapped_column(JSON, nullable=True)
    version: Mapped[int] = mapped_column(BigInteger, default=0)
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    updated_by: Mapped[int | None] = mapped_column(
        ForeignKey("users.id", ondelete="SET NULL"), nullable=True
    )


#: A change-log row after which what a tracker exports to whom may differ (kept in
#: the literal form a partial index can be matched against).
EXPORT_KINDS = "kind IN ('export', 'field_deleted')"


class ChangeLog(Base):
    """Append-only event log. ``id`` is the event id, handed out by EventCounter, so it is
    gap-free and in commit order. Item and field ids are plain columns (no foreign keys)
    so the history outlives what it describes. ``kind`` is a ``hub.changes.ChangeKind``;
    instance/changelog.py is the one module that writes and reads this table.
    """

    __tablename__ = "change_log"
    # A tracker's export and field-deletion rows: what a federation topic's version
    # counts beside the item's values (migration 0009).
    __table_args__ = (Index("ix_change_log_tracker_exports", "tracker_id", "id",
                            sqlite_where=text(EXPORT_KINDS),
                            postgresql_where=text(EXPORT_KINDS)),)
    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=False)
    kind: Mapped[str] = mapped_column(String(20), default="value")
    item_id: Mapped[int | None] = mapped_column(BigInteger, index=True, nullable=True)
    tracker_id: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    field_id: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    field_name: Mapped[str | None] = mapped_column(String(64), nullable=True)
    old_version: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    new_version: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    item_version: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    old_value: Mapped[object] = mapped_column(JSON, nullable=True)
    new_value: Mapped[object] = mapped_column(JSON, nullable=True)
    actor_id: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    # The user a "rights" or "session" event is about (None: possibly everyone).
    subject_id: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    # "user" for edits through the API, "federation" for mirrored remote values.
    source: Mapped[str] = mapped_column(String(20), default="user")
    at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


# ---- federation, host side ---------------------------------------------------------------
# States are the strings of protocol.websub's SubscriptionState / DeliveryState; every
# change of them goes through protocol.websub.transition (instance/federation/).

#: A subscription or delivery is about one item topic or one tracker's Atom feed.
ONE_TARGET = "(item_id IS NULL) <> (tracker_id IS NULL)"


class FederationSubscription(Base):
    """One WebSub subscription, keyed by (topic, callback) as the REC keys them (§5.1).

    The row outlives the subscription (state ``unsubscribed``, ``expired``, ``denied``):
    a later subscribe for the same pair starts over on it, never beside it. Lease, secret
    and subscriber origin are those last *verified*; a pending re-subscription keeps its
    own in ``federation_intents`` until it is verified.
    """

    __tablename__ = "federation_subscriptions"
    __table_args__ = (
        UniqueConstraint("topic", "callback", name="uq_federation_subscriptions_pair"),
        Index("ix_federation_subscriptions_state_lease", "state", "lease_expires_at"),
        CheckConstraint(ONE_TARGET, name="one_target"),
        NO_ID_REUSE,
    )
    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    topic: Mapped[str] = mapped_column(String(500))
    # Exactly one of the two: an item topic or a tracker's feed. Plain columns, no
    # foreign keys: a deleted item's (or tracker's) subscriptions stay to be ended.
    item_id: Mapped[int | None] = mapped_column(BigInteger, index=True, nullable=True)
    tracker_id: Mapped[int | None] = mapped_column(BigInteger, index=True, nullable=True)
    callback: Mapped[str] = mapped_column(String(2000))
    # The origin of the instance that signed the verified request; None: unsigned, so
    # only public fields are exported to it.
    subscriber_origin: Mapped[str | None] = mapped_column(String(300), nullable=True)
    secret: Mapped[str | None] = mapped_column(String(200), nullable=True)
    state: Mapped[str] = mapped_column(String(24))
    lease_seconds: Mapped[int | None] = mapped_column(Integer, nullable=True)
    lease_expires_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True),
                                                              nullable=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    verified_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    last_success_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True),
                                                             nullable=True)
    last_error: Mapped[str | None] = mapped_column(Text, nullable=True)
    last_error_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)


class FederationIntent(Base):
    """A request the hub still has to act on: verify a (un)subscribe, or send a denial.

    Durable, so a restart does not lose a pending subscribe. At most one per (topic,
    callback): a newer request replaces an older one (REC §5.1, the latest request
    counts). ``challenge`` is drawn afresh for every attempt and is the guard a result
    must match to be applied: a replaced or re-claimed intent cannot take an old answer.
    """

    __tablename__ = "federation_intents"
    __table_args__ = (UniqueConstraint("topic", "callback", name="uq_federation_intents_pair"),
                      NO_ID_REUSE)
    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    mode: Mapped[str] = mapped_column(String(12))  # subscribe, unsubscribe or denied
    topic: Mapped[str] = mapped_column(String(500))
    # The topic's item or feed tracker; neither for a denial of a feed that does not
    # exist (an item topic names its id, a feed only a slug).
    item_id: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    tracker_id: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    callback: Mapped[str] = mapped_column(String(2000))
    subscriber_origin: Mapped[str | None] = mapped_column(String(300), nullable=True)
    secret: Mapped[str | None] = mapped_column(String(200), nullable=True)
    lease_seconds: Mapped[int | None] = mapped_column(Integer, nullable=True)
    reason: Mapped[str | None] = mapped_column(String(500), nullable=True)  # for denials
    challenge: Mapped[str | None] = mapped_column(String(100), nullable=True)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), index=True)
    claimed_until: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    last_error: Mapped[str | None] = mapped_column(Text, nullable=True)


class FederationDelivery(Base):
    """The delivery queue: the notification owed to one subscription for one topic.

    Coalescing: at most one *waiting* row (pending or retry) per (subscription, topic),
    enforced by a partial unique index, so the projector upserts - a newer event raises
    ``event_id``/``item_version`` and adds to ``fields`` - while a row in flight is left
    alone. Done and dead rows may be deleted or kept for the admin view.
    """

    __tablename__ = "federation_deliveries"
    __table_args__ = (
        Index("uq_federation_deliveries_waiting", "subscription_id", "topic", unique=True,
              sqlite_where=text("state IN ('pending', 'retry')"),
              postgresql_where=text("state IN ('pending', 'retry')")),
        Index("ix_federation_deliveries_due", "state", "next_attempt_at"),
        CheckConstraint(ONE_TARGET, name="one_target"),
        NO_ID_REUSE,
    )
    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    subscription_id: Mapped[int] = mapped_column(
        ForeignKey("federation_subscriptions.id", ondelete="CASCADE")
    )
    topic: Mapped[str] = mapped_column(String(500))
    # As the subscription's: the item of an item topic, or the tracker of a feed.
    item_id: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    tracker_id: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    event_id: Mapped[int] = mapped_column(BigInteger)  # the newest event coalesced here
    # The topic version the ping announces (hub.projector.Owed); 0 for a feed.
    item_version: Mapped[int] = mapped_column(BigInteger)
    fields: Mapped[list] = mapped_column(JSON, default=list)  # changed field names, union
    state: Mapped[str] = mapped_column(String(12))
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    claimed_until: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    last_status: Mapped[int | None] = mapped_column(Integer, nullable=True)
    last_error: Mapped[str | None] = mapped_column(Text, nullable=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class FederationCursor(Base):
    """A durable reader position in the change log (the federation projector's)."""

    __tablename__ = "federation_cursors"
    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    event_id: Mapped[int] = mapped_column(BigInteger, default=0)
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


# ---- federation, subscriber side ---------------------------------------------------------
# instance/remote/ owns these tables: what this instance subscribed to on other instances'
# hubs, and which of its items mirror which foreign topic.


class RemoteSubscription(Base):
    """One foreign topic this instance follows: its WebSub subscription on the host's hub
    and its durable fetch job (at most one per topic, by construction: ``fetch_due_at``).

    ``state`` is a ``protocol.states.SubscriptionState`` string, as the hub sees it;
    ``awaiting`` the verification mode the callback accepts (REC §5.3.1: only what this
    instance asked for). ``sync_state`` is what a person sees: live, stale (the host did
    not answer since ``stale_since``) or gone (no longer shared, ``reason``).
    """

    __tablename__ = "remote_subscriptions"
    __table_args__ = (Index("ix_remote_subscriptions_fetch_due", "fetch_due_at"), NO_ID_REUSE)
    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    topic: Mapped[str] = mapped_column(String(500), unique=True)
    instance: Mapped[str] = mapped_column(String(300))  # the host's origin
    tracker: Mapped[str | None] = mapped_column(String(64), nullable=True)  # host's slug
    hub: Mapped[str] = mapped_column(String(2000))
    # The last path segment of the callback URL: random, so callbacks cannot be guessed.
    token: Mapped[str] = mapped_column(String(64), unique=True)
    state: Mapped[str] = mapped_column(String(24))
    awaiting: Mapped[str | None] = mapped_column(String(12), nullable=True)
    lease_seconds: Mapped[int | None] = mapped_column(Integer, nullable=True)
    lease_expires_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True),
                                                              nullable=True)
    renew_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    # A subscribe or unsubscribe still to send to the hub (renewal, unlink), and when.
    hub_request: Mapped[str | None] = mapped_column(String(12), nullable=True)
    hub_request_due_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True),
                                                                nullable=True)
    hub_request_attempts: Mapped[int] = mapped_column(Integer, default=0)
    denied_reason: Mapped[str | None] = mapped_column(Text, nullable=True)
    # The host's item version last stored, and the newest one a ping announced.
    remote_version: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    pinged_version: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    etag: Mapped[str | None] = mapped_column(String(200), nullable=True)
    last_ping_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    synced_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    fetch_due_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    fetch_attempts: Mapped[int] = mapped_column(Integer, default=0)
    fetch_claimed_until: Mapped[datetime | None] = mapped_column(DateTime(timezone=True),
                                                                 nullable=True)
    sync_state: Mapped[str] = mapped_column(String(12), default="live")
    stale_since: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    reason: Mapped[str | None] = mapped_column(Text, nullable=True)
    last_error: Mapped[str | None] = mapped_column(Text, nullable=True)
    last_error_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class RemoteLink(Base):
    """An item of this instance mirroring a foreign item (its topic's subscription).

    ``unshared`` maps the names of this item's remote fields the host stopped exporting
    to the sentence saying so (the field is cleared and shown "no longer shared").
    """

    __tablename__ = "remote_links"
    item_id: Mapped[int] = mapped_column(
        ForeignKey("items.id", ondelete="CASCADE"), primary_key=True)
    subscription_id: Mapped[int] = mapped_column(
        ForeignKey("remote_subscriptions.id", ondelete="CASCADE"), index=True)
    item_url: Mapped[str] = mapped_column(String(2000))  # the host's page of the item
    unshared: Mapped[dict] = mapped_column(JSON, default=dict)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
