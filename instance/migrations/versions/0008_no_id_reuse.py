"""ids are never used twice: SQLite tables get AUTOINCREMENT

Without it SQLite hands out max(id) + 1, so deleting the newest item and creating
another gave the new one the old id: the change log then mixed the two items' histories,
old links and federation topics named the new item, and a live client's position for
the old one applied to the new one. With AUTOINCREMENT, SQLite never goes below the
highest id ever used (``sqlite_sequence``). Every table with a surrogate id is rebuilt
(batch mode copies rows, indexes, foreign keys and named checks; other indexes and
triggers are put back as they were), and its high-water
mark starts above every id the change log or federation rows still name, so an id
deleted before this migration is not handed out again either.

PostgreSQL's sequences never go back: nothing to do there.

Foreign keys must be off on SQLite while this runs (``instance.db.run_migrations``
does that): re-creating ``items`` with them on would cascade-delete its field values.

Revision ID: 0008
Revises: 0007
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy import func, select, text

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None

#: Each table with a surrogate id, and the columns elsewhere that may still name one of
#: its ids after the row is gone (plain columns, no foreign key).
TABLES: dict[str, tuple[tuple[str, str], ...]] = {
    "users": (("change_log", "actor_id"), ("change_log", "subject_id")),
    "groups": (),
    "api_tokens": (),
    "trackers": (("change_log", "tracker_id"), ("federation_subscriptions", "tracker_id"),
                 ("federation_intents", "tracker_id"), ("federation_deliveries", "tracker_id")),
    "fields": (("change_log", "field_id"),),
    "items": (("change_log", "item_id"), ("federation_subscriptions", "item_id"),
              ("federation_intents", "item_id"), ("federation_deliveries", "item_id")),
    "federation_subscriptions": (),
    "federation_intents": (),
    "federation_deliveries": (),
    "remote_subscriptions": (),
}


def _require_foreign_keys_off() -> None:
    if op.get_bind().exec_driver_sql("PRAGMA foreign_keys").scalar():
        raise RuntimeError(
            "migration 0008 re-creates SQLite tables and needs foreign keys off (else the "
            "rows referring to them are deleted): run it through instance.db.migrate")


def _rebuild(autoincrement: bool) -> None:
    conn = op.get_bind()
    for table in TABLES:
        # Batch mode re-creates the indexes it can reflect; an expression index or a
        # trigger (which DROP TABLE removes) would be lost, so each comes back as it was.
        extras = conn.execute(text(
            "SELECT name, sql FROM sqlite_master WHERE tbl_name = :t "
            "AND type IN ('index', 'trigger') AND sql IS NOT NULL"), {"t": table}).all()
        with op.batch_alter_table(table, recreate="always",
                                  table_kwargs={"sqlite_autoincrement": autoincrement}):
            pass
        for name, sql in extras:
            if conn.execute(text("SELECT 1 FROM sqlite_master WHERE name = :n"),
                            {"n": name}).first() is None:
                conn.exec_driver_sql(sql)


def upgrade() -> None:
    if op.get_bind().dialect.name != "sqlite":
        return
    _require_foreign_keys_off()
    _rebuild(autoincrement=True)
    conn = op.get_bind()
    for table, recorded in TABLES.items():
        highs = [func.coalesce(select(func.max(sa.column(col))).select_from(sa.table(other))
                               .scalar_subquery(), 0)
                 for other, col in ((table, "id"), *recorded)]
        # SQLite's max() of several values is the greatest.
        high = conn.execute(select(func.max(*highs, 0))).scalar()
        conn.execute(text("DELETE FROM sqlite_sequence WHERE name = :t"), {"t": table})
        if high:
            conn.execute(text("INSERT INTO sqlite_sequence (name, seq) VALUES (:t, :s)"),
                         {"t": table, "s": high})


def downgrade() -> None:
    if op.get_bind().dialect.name != "sqlite":
        return
    _require_foreign_keys_off()
    _rebuild(autoincrement=False)
