"""federation: a subscription (and its deliveries) targets an item or a tracker's feed

``item_id`` becomes nullable and ``tracker_id`` joins it on subscriptions, intents and
deliveries; subscriptions and deliveries check that exactly one is set. Existing rows
all have an item and no tracker, so they satisfy the check as they are.

Revision ID: 0006
Revises: 0005
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None

ONE_TARGET = "(item_id IS NULL) <> (tracker_id IS NULL)"
_CHECKED = ("federation_subscriptions", "federation_deliveries")
#: SQLite: the deliveries, kept aside while ``federation_subscriptions`` is re-created
#: (the columns both before and after; ``tracker_id`` is new, NULL for them).
_KEEP = ("CREATE TEMP TABLE _fc_0005_deliveries AS SELECT id, subscription_id, topic, "
         "item_id, event_id, item_version, fields, state, attempts, next_attempt_at, "
         "claimed_until, last_status, last_error, created_at, updated_at "
         "FROM federation_deliveries")
_RESTORE = (
    "DELETE FROM federation_deliveries WHERE id IN (SELECT id FROM _fc_0005_deliveries)",
    "INSERT INTO federation_deliveries (id, subscription_id, topic, item_id, event_id, "
    "item_version, fields, state, attempts, next_attempt_at, claimed_until, last_status, "
    "last_error, created_at, updated_at) SELECT id, subscription_id, topic, item_id, "
    "event_id, item_version, fields, state, attempts, next_attempt_at, claimed_until, "
    "last_status, last_error, created_at, updated_at FROM _fc_0005_deliveries",
    "DROP TABLE _fc_0005_deliveries",
)


def _keep_deliveries() -> bool:
    """SQLite: batch mode re-creates ``federation_subscriptions``, and with foreign keys
    on (they are, and the PRAGMA cannot change inside the migration's transaction)
    dropping the old table cascades to every delivery. Keep a copy to put back."""
    if op.get_bind().dialect.name != "sqlite":
        return False
    op.execute(_KEEP)
    return True


def _restore_deliveries() -> None:
    for statement in _RESTORE:
        op.execute(statement)


def upgrade() -> None:
    kept = _keep_deliveries()
    for table in ("federation_subscriptions", "federation_intents", "federation_deliveries"):
        with op.batch_alter_table(table) as batch:
            batch.add_column(sa.Column("tracker_id", sa.BigInteger(), nullable=True))
            batch.alter_column("item_id", existing_type=sa.BigInteger(), nullable=True)
            if table in _CHECKED:
                batch.create_check_constraint(op.f(f"ck_{table}_one_target"), ONE_TARGET)
            if table == "federation_subscriptions":
                batch.create_index(op.f("ix_federation_subscriptions_tracker_id"),
                                   ["tracker_id"], unique=False)
    if kept:
        _restore_deliveries()


def downgrade() -> None:
    # Feed subscriptions have no item to fall back to: they go, with their deliveries.
    op.execute("DELETE FROM federation_deliveries WHERE item_id IS NULL")
    op.execute("DELETE FROM federation_intents WHERE item_id IS NULL")
    op.execute("DELETE FROM federation_subscriptions WHERE item_id IS NULL")
    kept = _keep_deliveries()
    for table in ("federation_subscriptions", "federation_intents", "federation_deliveries"):
        with op.batch_alter_table(table) as batch:
            if table == "federation_subscriptions":
                batch.drop_index(op.f("ix_federation_subscriptions_tracker_id"))
            if table in _CHECKED:
                batch.drop_constraint(op.f(f"ck_{table}_one_target"), type_="check")
            batch.alter_column("item_id", existing_type=sa.BigInteger(), nullable=False)
            batch.drop_column("tracker_id")
    if kept:
        _restore_deliveries()
