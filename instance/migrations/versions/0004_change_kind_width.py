"""change_log.kind holds the longer kinds (export, field_deleted)

Revision ID: 0004
Revises: 0003
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("change_log") as batch:
        batch.alter_column("kind", existing_type=sa.String(length=10), type_=sa.String(length=20),
                           existing_nullable=False, existing_server_default="value")


def downgrade() -> None:
    op.execute("DELETE FROM change_log WHERE length(kind) > 10")
    with op.batch_alter_table("change_log") as batch:
        batch.alter_column("kind", existing_type=sa.String(length=20), type_=sa.String(length=10),
                           existing_nullable=False, existing_server_default="value")
