"""federation, subscriber side: remote subscriptions and item links

Revision ID: 0005
Revises: 0004
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None

_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def _at(name: str, nullable: bool = True) -> sa.Column:
    return sa.Column(name, sa.DateTime(timezone=True), nullable=nullable)


def upgrade() -> None:
    op.create_table(
        "remote_subscriptions",
        sa.Column("id", _ID, autoincrement=True, nullable=False),
        sa.Column("topic", sa.String(length=500), nullable=False),
        sa.Column("instance", sa.String(length=300), nullable=False),
        sa.Column("tracker", sa.String(length=64), nullable=True),
        sa.Column("hub", sa.String(length=2000), nullable=False),
        sa.Column("token", sa.String(length=64), nullable=False),
        sa.Column("state", sa.String(length=24), nullable=False),
        sa.Column("awaiting", sa.String(length=12), nullable=True),
        sa.Column("lease_seconds", sa.Integer(), nullable=True),
        _at("lease_expires_at"),
        _at("renew_at"),
        sa.Column("hub_request", sa.String(length=12), nullable=True),
        _at("hub_request_due_at"),
        sa.Column("hub_request_attempts", sa.Integer(), nullable=False),
        sa.Column("denied_reason", sa.Text(), nullable=True),
        sa.Column("remote_version", sa.BigInteger(), nullable=True),
        sa.Column("pinged_version", sa.BigInteger(), nullable=True),
        sa.Column("etag", sa.String(length=200), nullable=True),
        _at("last_ping_at"),
        _at("synced_at"),
        _at("fetch_due_at"),
        sa.Column("fetch_attempts", sa.Integer(), nullable=False),
        _at("fetch_claimed_until"),
        sa.Column("sync_state", sa.String(length=12), nullable=False),
        _at("stale_since"),
        sa.Column("reason", sa.Text(), nullable=True),
        sa.Column("last_error", sa.Text(), nullable=True),
        _at("last_error_at"),
        _at("created_at", False),
        _at("updated_at", False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_remote_subscriptions")),
        sa.UniqueConstraint("topic", name=op.f("uq_remote_subscriptions_topic")),
        sa.UniqueConstraint("token", name=op.f("uq_remote_subscriptions_token")),
    )
    op.create_index("ix_remote_subscriptions_fetch_due", "remote_subscriptions",
                    ["fetch_due_at"])
    op.create_table(
        "remote_links",
        sa.Column("item_id", _ID, nullable=False),
        sa.Column("subscription_id", _ID, nullable=False),
        sa.Column("item_url", sa.String(length=2000), nullable=False),
        sa.Column("unshared", sa.JSON(), nullable=False),
        _at("created_at", False),
        sa.ForeignKeyConstraint(["item_id"], ["items.id"], ondelete="CASCADE",
                                name=op.f("fk_remote_links_item_id_items")),
        sa.ForeignKeyConstraint(["subscription_id"], ["remote_subscriptions.id"],
                                ondelete="CASCADE",
                                name=op.f("fk_remote_links_subscription_id_remote_subscriptions")),
        sa.PrimaryKeyConstraint("item_id", name=op.f("pk_remote_links")),
    )
    op.create_index(op.f("ix_remote_links_subscription_id"), "remote_links",
                    ["subscription_id"])


def downgrade() -> None:
    op.drop_index(op.f("ix_remote_links_subscription_id"), table_name="remote_links")
    op.drop_table("remote_links")
    op.drop_index("ix_remote_subscriptions_fetch_due", table_name="remote_subscriptions")
    op.drop_table("remote_subscriptions")
