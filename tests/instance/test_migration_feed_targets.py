"""Migration 0006 on both databases: item subscriptions and deliveries from before stay
valid, a feed subscription (tracker, no item) is allowed, neither-or-both is refused, and
the downgrade drops the feed rows only."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime

import pytest
from alembic import command
from sqlalchemy import text
from sqlalchemy.engine import Connection
from sqlalchemy.exc import IntegrityError

from instance.db import _alembic_config, make_engine, run_migrations

NOW = datetime(2025, 1, 1, tzinfo=UTC)
SUB = ("INSERT INTO federation_subscriptions (topic, item_id, {extra} callback, state, "
       "created_at, updated_at) VALUES (:topic, :item, {values} :cb, 'active', :now, :now)")


def _to(conn: Connection, revision: str, *, down: bool = False) -> None:
    (command.downgrade if down else command.upgrade)(_alembic_config(conn), revision)


def _item_rows(conn: Connection) -> None:
    conn.execute(text(SUB.format(extra="", values="")),
                 {"topic": "t/1", "item": 1, "cb": "cb1", "now": NOW})
    sub = conn.execute(text("SELECT id FROM federation_subscriptions")).scalar()
    conn.execute(text(
        "INSERT INTO federation_deliveries (subscription_id, topic, item_id, event_id, "
        "item_version, fields, state, attempts, next_attempt_at, created_at, updated_at) "
        "VALUES (:sub, 't/1', 1, 5, 2, '[]', 'pending', 0, :now, :now, :now)"),
        {"sub": sub, "now": NOW})


def _targets(conn: Connection) -> list[tuple[object, ...]]:
    return [tuple(r) for r in conn.execute(text(
        "SELECT topic, item_id, tracker_id FROM federation_subscriptions ORDER BY id"))]


def _check(conn: Connection) -> None:
    assert _targets(conn) == [("t/1", 1, None)]
    assert conn.execute(text("SELECT item_id, tracker_id FROM federation_deliveries")
                        ).all() == [(1, None)]
    insert = text(SUB.format(extra="tracker_id,", values=":tracker,"))
    conn.execute(insert, {"topic": "feed", "item": None, "tracker": 3, "cb": "cb2", "now": NOW})
    for item, tracker in ((None, None), (1, 3)):
        with pytest.raises(IntegrityError), conn.begin_nested():
            conn.execute(insert, {"topic": f"bad{item}", "item": item, "tracker": tracker,
                                  "cb": "cb3", "now": NOW})


async def test_0006_keeps_item_rows_and_checks_one_target(database_url: str) -> None:
    engine = make_engine(database_url)

    def to(revision: str, *, down: bool = False) -> Callable[[Connection], None]:
        return lambda conn: _to(conn, revision, down=down)

    try:
        # Each step in a transaction of its own, as instance.db.migrate runs migrations.
        async with engine.connect() as conn:
            for step in (to("0005", down=True), _item_rows, to("head"), _check,
                         to("0005", down=True)):
                await conn.run_sync(run_migrations, step)
            rows = await conn.execute(text("SELECT topic, item_id FROM federation_subscriptions"))
            assert [tuple(r) for r in rows] == [("t/1", 1)]  # the feed row went
            await conn.commit()
            await conn.run_sync(run_migrations, to("head"))
    finally:
        await engine.dispose()
