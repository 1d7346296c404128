"""Ids are never used twice, on SQLite and PostgreSQL: an item (token, field, group)
deleted, then another created, gets a new id. Before, SQLite handed the newest deleted
id out again, so the change log mixed two items' histories and old links opened another
item. Also: every table with a surrogate id says so (models and migrated schema), and
migration 0008 keeps the data of a database made before it, ids the log still names
included."""

from __future__ import annotations

import sqlite3
from datetime import UTC, datetime
from pathlib import Path

import pytest
from alembic import command
from sqlalchemy import Integer, func, select, text
from sqlalchemy.engine import Connection

from instance.db import _alembic_config, make_engine, run_migrations
from instance.models import Base, Field, Group
from tests.conftest import Env

# Single integer primary keys that are not surrogate ids handed out by the database.
NOT_SURROGATE = {"change_log": "the event counter hands its ids out",
                 "event_counter": "one row, id 1"}


def test_every_surrogate_id_never_reused_on_sqlite(sqlite_template: Path) -> None:
    surrogate = set()
    for table in Base.metadata.tables.values():
        key = list(table.primary_key.columns)
        # One integer column of its own (not another table's id, as remote_links has).
        if (len(key) == 1 and isinstance(key[0].type, Integer) and not key[0].foreign_keys
                and table.name not in NOT_SURROGATE):
            surrogate.add(table.name)
    assert {"items", "trackers", "fields", "users", "groups", "api_tokens"} <= surrogate
    undeclared = {name for name in surrogate
                  if not Base.metadata.tables[name].dialect_options["sqlite"]["autoincrement"]}
    assert not undeclared, "declare __table_args__ = NO_ID_REUSE (instance/models.py)"
    with sqlite3.connect(sqlite_template) as conn:
        schema = dict(conn.execute("SELECT name, sql FROM sqlite_master WHERE type = 'table'"))
    assert {name for name in surrogate if "AUTOINCREMENT" not in schema[name]} == set()


async def _ids(env: Env, model: type[Field] | type[Group]) -> list[int]:
    async with env.state.db.read() as session:
        return list((await session.scalars(select(model.id).order_by(model.id))).all())


async def test_deleted_ids_are_not_handed_out_again(env: Env) -> None:
    admin = await env.client("admin")
    assert (await admin.post("/api/trackers", json={"slug": "bugs"})).status_code == 201
    for name in ("title", "spare"):
        r = await admin.post("/api/trackers/bugs/fields", json={"name": name})
        assert r.status_code == 201

    async def new_item() -> int:
        r = await admin.post("/api/trackers/bugs/items", json={"fields": {"title": "x"}})
        assert r.status_code == 201
        return int((await r.get_json())["id"])

    items = [await new_item() for _ in range(3)]
    assert (await admin.delete(f"/api/items/{items[-1]}")).status_code == 204
    again = await new_item()
    assert again > items[-1]
    # Its history is its own: none of the deleted item's changes (its deletion last).
    r = await admin.get(f"/api/changes?item={again}")
    assert not any(c.get("deleted") for c in (await r.get_json())["changes"])
    for item in (*items[:-1], again):  # every item gone: the next id still climbs
        assert (await admin.delete(f"/api/items/{item}")).status_code == 204
    assert await new_item() > again

    r = await admin.post("/api/tokens", json={"name": "a"})
    token = (await r.get_json())["id"]
    assert (await admin.delete(f"/api/tokens/{token}")).status_code == 204
    assert (await (await admin.post("/api/tokens", json={"name": "b"})).get_json())["id"] > token

    spare = (await _ids(env, Field))[-1]
    assert (await admin.delete("/api/trackers/bugs/fields/spare")).status_code == 204
    assert (await admin.post("/api/trackers/bugs/fields", json={"name": "later"})
            ).status_code == 201
    assert (await _ids(env, Field))[-1] > spare

    assert (await admin.post("/api/groups", json={"name": "Staff"})).status_code == 201
    staff = (await _ids(env, Group))[-1]
    assert (await admin.delete("/api/groups/Staff")).status_code == 204
    assert (await admin.post("/api/groups", json={"name": "Staff"})).status_code == 201
    assert (await _ids(env, Group))[-1] > staff


NOW = datetime(2025, 1, 1, tzinfo=UTC)


def _to(revision: str, *, down: bool = False) -> object:
    def action(conn: Connection) -> None:
        (command.downgrade if down else command.upgrade)(_alembic_config(conn), revision)
    return action


def _rows_before_0008(conn: Connection) -> None:
    """A tracker, a field, four items with values and the log, the newest item deleted
    (the log still names it), a link, a subscription with a delivery, a user in the
    groups with a token and a session."""
    def x(sql: str, **params: object) -> None:
        conn.execute(text(sql), {"now": NOW, **params})

    def new(sql: str, **params: object) -> int:
        return int(conn.execute(text(sql + " RETURNING id"), {"now": NOW, **params}
                                ).scalar_one())

    user = new("INSERT INTO users (username, display_name, password_hash, is_admin, disabled, "
             "created_at) VALUES ('u', '', 'h', false, false, :now)")
    x("INSERT INTO user_groups (user_id, group_id) SELECT :u, id FROM groups", u=user)
    x("INSERT INTO api_tokens (user_id, name, token_hash, created_at) "
      "VALUES (:u, 't', 'hash', :now)", u=user)
    x("INSERT INTO sessions (token_hash, user_id, created_at, expires_at) "
      "VALUES ('s', :u, :now, :now)", u=user)
    tracker = new("INSERT INTO trackers (slug, name, description, require_if_match, "
                "created_at) VALUES ('bugs', 'Bugs', '', false, :now)")
    field = new("INSERT INTO fields (tracker_id, name, label, type, options, position, "
              "export_mode, export_partners, created_at) VALUES (:t, 'title', 'Title', "
              "'text', '{}', 0, 'none', '[]', :now)", t=tracker)
    x("INSERT INTO field_read_groups (field_id, group_id) SELECT :f, id FROM groups", f=field)
    items = []
    for n in range(1, 5):
        item = new("INSERT INTO items (tracker_id, version, created_at, created_by) "
                 "VALUES (:t, 1, :now, :u)", t=tracker, u=user)
        items.append(item)
        x("INSERT INTO field_values (item_id, field_id, value, version, updated_at, "
          "updated_by) VALUES (:i, :f, :v, 1, :now, :u)", i=item, f=field, v=f'"v{n}"', u=user)
        x("INSERT INTO change_log (id, kind, item_id, tracker_id, field_id, field_name, "
          "old_version, new_version, item_version, new_value, actor_id, source, at) "
          "VALUES (:n, 'value', :i, :t, :f, 'title', 0, 1, 1, :v, :u, 'user', :now)",
          n=n, i=item, t=tracker, f=field, v=f'"v{n}"', u=user)
    x("DELETE FROM items WHERE id = :i", i=items[-1])
    remote = new("INSERT INTO remote_subscriptions (topic, instance, hub, token, state, "
               "hub_request_attempts, fetch_attempts, sync_state, created_at, updated_at) "
               "VALUES ('t', 'https://a.example', 'h', 'tok', 'active', 0, 0, 'live', :now, "
               ":now)")
    x("INSERT INTO remote_links (item_id, subscription_id, item_url, unshared, created_at) "
      "VALUES (:i, :r, 'https://a.example/items/9', '{}', :now)", i=items[0], r=remote)
    sub = new("INSERT INTO federation_subscriptions (topic, item_id, callback, state, "
            "created_at, updated_at) VALUES ('t/1', :i, 'cb', 'active', :now, :now)",
            i=items[0])
    x("INSERT INTO federation_deliveries (subscription_id, topic, item_id, event_id, "
      "item_version, fields, state, attempts, next_attempt_at, created_at, updated_at) "
      "VALUES (:s, 't/1', :i, 1, 1, '[]', 'pending', 0, :now, :now, :now)", s=sub, i=items[0])


COUNTED = ("users", "user_groups", "api_tokens", "sessions", "trackers", "fields",
           "field_read_groups", "items", "field_values", "change_log", "remote_subscriptions",
           "remote_links", "federation_subscriptions", "federation_deliveries", "groups")


def _counts(conn: Connection) -> dict[str, int]:
    return {t: conn.execute(select(func.count()).select_from(text(t))).scalar_one()
            for t in COUNTED}


def _indexes_and_triggers(conn: Connection) -> list[tuple[str, str]]:
    return [tuple(r) for r in conn.exec_driver_sql(
        "SELECT name, sql FROM sqlite_master WHERE type IN ('index', 'trigger') "
        "AND sql IS NOT NULL ORDER BY name")]


# Batch mode says it skips the expression index; the migration puts it back.
@pytest.mark.filterwarnings("ignore:Skipped unsupported reflection of expression-based index")
async def test_0008_keeps_the_data_and_starts_above_every_id_used(database_url: str) -> None:
    engine = make_engine(database_url)
    sqlite = database_url.startswith("sqlite")
    try:
        async with engine.connect() as conn:
            await conn.run_sync(run_migrations, _to("0007", down=True))
        async with engine.begin() as conn:  # foreign keys on, as the app has them
            await conn.run_sync(_rows_before_0008)
            if sqlite:  # what batch mode cannot reflect (a later migration might add)
                await conn.execute(text("CREATE INDEX ix_items_odd ON items (id % 2)"))
                await conn.execute(text(
                    "CREATE TRIGGER tr_items_noop AFTER UPDATE ON items BEGIN SELECT 1; END"))
        async with engine.connect() as conn:
            schema = await conn.run_sync(_indexes_and_triggers) if sqlite else None
            before = await conn.run_sync(_counts)
            values = (await conn.execute(text(
                "SELECT item_id, value FROM field_values ORDER BY item_id"))).all()
            await conn.commit()
            # To 0008 itself: later migrations may add indexes of their own.
            await conn.run_sync(run_migrations, _to("0008"))
            assert await conn.run_sync(_counts) == before
            if sqlite:
                assert await conn.run_sync(_indexes_and_triggers) == schema
            assert (await conn.execute(text(
                "SELECT item_id, value FROM field_values ORDER BY item_id"))).all() == values
            await conn.commit()
            # The newest item is gone but the log names it: the next id is above it.
            logged = (await conn.execute(text("SELECT max(item_id) FROM change_log"))
                      ).scalar_one()
            first, tracker = (await conn.execute(text(
                "SELECT min(id), min(tracker_id) FROM items"))).one()
            new = (await conn.execute(text(
                "INSERT INTO items (tracker_id, version, created_at) VALUES (:t, 0, :now) "
                "RETURNING id"), {"t": tracker, "now": NOW})).scalar_one()
            assert new > logged
            # Foreign keys still act (they were off while the tables were rebuilt).
            await conn.execute(text("DELETE FROM items WHERE id = :i"), {"i": first})
            assert (await conn.execute(text(
                "SELECT count(*) FROM field_values WHERE item_id = :i"), {"i": first}
                                       )).scalar_one() == 0
            assert (await conn.execute(text(
                "SELECT count(*) FROM remote_links"))).scalar_one() == 0
            await conn.commit()
            await conn.run_sync(run_migrations, _to("0007", down=True))
            await conn.run_sync(run_migrations, _to("head"))
    finally:
        await engine.dispose()
