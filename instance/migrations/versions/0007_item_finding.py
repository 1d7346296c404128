"""indexes for finding items: sort keys of field values, items of a tracker by id

``field_values`` gets two partial expression indexes, (field, key, item): one over text
values (lowercased, first 200 characters), one over numbers. The expressions are
``instance.finding.SQL``'s, so the queries that sort and filter by them match them
exactly. ``items`` gets (tracker_id, id) for a tracker's items in id order (SQLite's
index on tracker_id holds the rowid already; PostgreSQL's does not).

On PostgreSQL, where the pg_trgm extension is available and may be created, a trigram
index over text values serves ``q=`` (ILIKE '%…%'); elsewhere ``q`` scans, and
bench/search.py says so.

Revision ID: 0007
Revises: 0006
"""

from __future__ import annotations

import logging

import sqlalchemy as sa
from alembic import op

from instance.finding import SQL

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None

log = logging.getLogger("alembic.runtime.migration")


def upgrade() -> None:
    bind = op.get_bind()
    sql = SQL["sqlite" if bind.dialect.name == "sqlite" else "postgresql"]
    text_key, num_key = sql["text_key"].format("value"), sql["num_key"].format("value")
    op.execute(f"CREATE INDEX ix_field_values_text_key ON field_values "
               f"(field_id, {text_key}, item_id) WHERE {sql['is_text'].format('value')}")
    op.execute(f"CREATE INDEX ix_field_values_num_key ON field_values "
               f"(field_id, {num_key}, item_id) WHERE {sql['is_num'].format('value')}")
    op.create_index("ix_items_tracker_id_id", "items", ["tracker_id", "id"])
    if bind.dialect.name == "postgresql":
        _trigram_index(bind)


def _trigram_index(bind: sa.Connection) -> None:
    if bind.execute(sa.text(
            "SELECT 1 FROM pg_available_extensions WHERE name = 'pg_trgm'")).first() is None:
        log.info("pg_trgm is not available: q= searches scan text values")
        return
    raw = SQL["postgresql"]["raw_text"].format("value")
    try:
        with bind.begin_nested():
            bind.execute(sa.text("CREATE EXTENSION IF NOT EXISTS pg_trgm"))
            bind.execute(sa.text(
                f"CREATE INDEX ix_field_values_trigram ON field_values USING gin "
                f"({raw} gin_trgm_ops) WHERE {SQL['postgresql']['is_text'].format('value')}"))
    except sa.exc.DBAPIError as exc:  # no right to create extensions: search still works
        log.warning("no trigram index (%s): q= searches scan text values", exc.orig)


def downgrade() -> None:
    op.execute("DROP INDEX IF EXISTS ix_field_values_trigram")
    op.drop_index("ix_items_tracker_id_id", table_name="items")
    op.execute("DROP INDEX ix_field_values_num_key")
    op.execute("DROP INDEX ix_field_values_text_key")
