"""change log: a partial index on a tracker's export and field-deletion rows

A federation topic's ``version`` is the newest change-log event among the item's
exported values and its tracker's ``export`` / ``field_deleted`` rows
(instance/federation/exports.py, ``federation_version``). Those rows are few; the index
holds only them, so saves pay nothing for it and the topic finds its tracker's newest one
without reading the log.

Revision ID: 0009
Revises: 0008
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None

_WHERE = sa.text("kind IN ('export', 'field_deleted')")


def upgrade() -> None:
    op.create_index("ix_change_log_tracker_exports", "change_log", ["tracker_id", "id"],
                    sqlite_where=_WHERE, postgresql_where=_WHERE)


def downgrade() -> None:
    op.drop_index("ix_change_log_tracker_exports", table_name="change_log")
