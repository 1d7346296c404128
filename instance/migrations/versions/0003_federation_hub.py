"""federation hub: subscriptions, intents, delivery queue, cursors

Revision ID: 0003
Revises: 0002
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "federation_cursors",
        sa.Column("name", sa.String(length=64), nullable=False),
        sa.Column("event_id", sa.BigInteger(), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("name", name=op.f("pk_federation_cursors")),
    )
    op.create_table(
        "federation_intents",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column("mode", sa.String(length=12), nullable=False),
        sa.Column("topic", sa.String(length=500), nullable=False),
        sa.Column("item_id", sa.BigInteger(), nullable=False),
        sa.Column("callback", sa.String(length=2000), nullable=False),
        sa.Column("subscriber_origin", sa.String(length=300), nullable=True),
        sa.Column("secret", sa.String(length=200), nullable=True),
        sa.Column("lease_seconds", sa.Integer(), nullable=True),
        sa.Column("reason", sa.String(length=500), nullable=True),
        sa.Column("challenge", sa.String(length=100), nullable=True),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("next_attempt_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("claimed_until", sa.DateTime(timezone=True), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_federation_intents")),
        sa.UniqueConstraint("topic", "callback", name="uq_federation_intents_pair"),
    )
    with op.batch_alter_table("federation_intents", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_federation_intents_next_attempt_at"), ["next_attempt_at"], unique=False
        )

    op.create_table(
        "federation_subscriptions",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column("topic", sa.String(length=500), nullable=False),
        sa.Column("item_id", sa.BigInteger(), nullable=False),
        sa.Column("callback", sa.String(length=2000), nullable=False),
        sa.Column("subscriber_origin", sa.String(length=300), nullable=True),
        sa.Column("secret", sa.String(length=200), nullable=True),
        sa.Column("state", sa.String(length=24), nullable=False),
        sa.Column("lease_seconds", sa.Integer(), nullable=True),
        sa.Column("lease_expires_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("verified_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("last_success_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.Column("last_error_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_federation_subscriptions")),
        sa.UniqueConstraint("topic", "callback", name="uq_federation_subscriptions_pair"),
    )
    with op.batch_alter_table("federation_subscriptions", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_federation_subscriptions_item_id"), ["item_id"], unique=False
        )
        batch_op.create_index(
            "ix_federation_subscriptions_state_lease", ["state", "lease_expires_at"], unique=False
        )

    op.create_table(
        "federation_deliveries",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column(
            "subscription_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False
        ),
        sa.Column("topic", sa.String(length=500), nullable=False),
        sa.Column("item_id", sa.BigInteger(), nullable=False),
        sa.Column("event_id", sa.BigInteger(), nullable=False),
        sa.Column("item_version", sa.BigInteger(), nullable=False),
        sa.Column("fields", sa.JSON(), nullable=False),
        sa.Column("state", sa.String(length=12), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("next_attempt_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("claimed_until", sa.DateTime(timezone=True), nullable=True),
        sa.Column("last_status", sa.Integer(), nullable=True),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["subscription_id"],
            ["federation_subscriptions.id"],
            name=op.f("fk_federation_deliveries_subscription_id_federation_subscriptions"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_federation_deliveries")),
    )
    with op.batch_alter_table("federation_deliveries", schema=None) as batch_op:
        batch_op.create_index(
            "ix_federation_deliveries_due", ["state", "next_attempt_at"], unique=False
        )
        batch_op.create_index(
            "uq_federation_deliveries_waiting",
            ["subscription_id", "topic"],
            unique=True,
            sqlite_where=sa.text("state IN ('pending', 'retry')"),
            postgresql_where=sa.text("state IN ('pending', 'retry')"),
        )


def downgrade() -> None:
    with op.batch_alter_table("federation_deliveries", schema=None) as batch_op:
        batch_op.drop_index(
            "uq_federation_deliveries_waiting",
            sqlite_where=sa.text("state IN ('pending', 'retry')"),
            postgresql_where=sa.text("state IN ('pending', 'retry')"),
        )
        batch_op.drop_index("ix_federation_deliveries_due")

    op.drop_table("federation_deliveries")
    with op.batch_alter_table("federation_subscriptions", schema=None) as batch_op:
        batch_op.drop_index("ix_federation_subscriptions_state_lease")
        batch_op.drop_index(batch_op.f("ix_federation_subscriptions_item_id"))

    op.drop_table("federation_subscriptions")
    with op.batch_alter_table("federation_intents", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_federation_intents_next_attempt_at"))

    op.drop_table("federation_intents")
    op.drop_table("federation_cursors")
