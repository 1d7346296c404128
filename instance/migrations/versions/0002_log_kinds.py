"""change_log carries rights and session events beside value changes

Revision ID: 0002
Revises: 0001
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

_NULLABLE = ("item_id", "tracker_id", "field_id", "old_version", "new_version", "item_version")


def upgrade() -> None:
    with op.batch_alter_table("change_log") as batch:
        batch.add_column(
            sa.Column("kind", sa.String(length=10), nullable=False, server_default="value")
        )
        batch.add_column(sa.Column("subject_id", sa.BigInteger(), nullable=True))
        for name in _NULLABLE:
            batch.alter_column(name, existing_type=sa.BigInteger(), nullable=True)
        batch.alter_column("field_name", existing_type=sa.String(length=64), nullable=True)


def downgrade() -> None:
    op.execute("DELETE FROM change_log WHERE kind <> 'value'")
    with op.batch_alter_table("change_log") as batch:
        batch.alter_column("field_name", existing_type=sa.String(length=64), nullable=False)
        for name in _NULLABLE:
            batch.alter_column(name, existing_type=sa.BigInteger(), nullable=False)
        batch.drop_column("subject_id")
        batch.drop_column("kind")
