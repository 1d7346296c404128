"""The save path's statements on the driver (``instance.db.execute``: SQLite's stdlib
driver, asyncpg) answer and write exactly what ``Connection.execute`` does: the same
rows, the same names, the same stored values."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import select, text
from sqlalchemy.engine import Connection
from sqlalchemy.sql import Executable

from instance import accounts, changelog, items, rights
from instance.clock import now
from instance.db import Rows, execute
from instance.federation import queue
from instance.security import digest
from tests.conftest import Env


def _rows(result: Any) -> list[tuple[tuple[Any, ...], dict[str, Any]]]:
    if not getattr(result, "returns_rows", True):  # a Result of an UPDATE: no rows
        return []
    return [(tuple(r), r._asdict() if hasattr(r, "_asdict") else dict(r._mapping))
            for r in result.all()]


def _table(conn: Connection, name: str) -> list[tuple[Any, ...]]:
    return [tuple(r) for r in conn.execute(text(f"SELECT * FROM {name} ORDER BY 1, 2"))]


def _both(conn: Connection, statement: Executable, params: dict[str, Any],
          tables: tuple[str, ...] = ()) -> Any:
    """Run ``statement`` the fast way and SQLAlchemy's, each from the same state;
    compare what they answer and what they leave in ``tables`` (raw, as stored)."""
    seen = []
    for run in (execute, Connection.execute):
        savepoint = conn.begin_nested()
        result = run(conn, statement, params)
        if run is execute:
            assert isinstance(result, Rows), f"the fast path, for {statement}"
        answer = _rows(result)
        seen.append((answer, [_table(conn, t) for t in tables]))
        savepoint.rollback()
    assert seen[0] == seen[1]
    return seen[0][0]


async def test_the_fast_statements_answer_and_store_as_sqlalchemy_does(env: Env) -> None:
    admin = await env.client("admin")
    assert (await admin.post("/api/trackers", json={"slug": "bugs"})).status_code == 201
    for body in ({"name": "title"}, {"name": "notes", "type": "textarea"},
                 {"name": "n", "type": "number"}):
        assert (await admin.post("/api/trackers/bugs/fields", json=body)).status_code == 201
    r = await admin.post("/api/trackers/bugs/items", json={"fields": {"title": "t", "n": 2.5}})
    item = (await r.get_json())["id"]
    assert (await admin.post("/api/groups", json={"name": "devs"})).status_code == 201
    token = (await (await admin.post("/api/tokens", json={"name": "t"})).get_json())["token"]
    at = now()

    def compare(conn: Connection) -> None:
        field = conn.execute(select(rights._fields.c.id).where(
            rights._fields.c.name == "notes")).scalar()
        cases: list[tuple[Executable, dict[str, Any], tuple[str, ...]]] = [
            (items._TARGET, {"b_item": item, "b_name": "title"}, ()),
            (items._TARGET, {"b_item": item, "b_name": "nope"}, ()),
            (items._TARGET, {"b_item": 10**9, "b_name": "title"}, ()),
            (items._LOCK_VALUE, {"b_item": item, "b_field": 1}, ()),
            (items._SET_VALUE, {"b_item": item, "b_field": field, "b_version": 9,
                                "b_value": {"a": [1, 2.5, None, "ü"]}, "b_at": at,
                                "b_by": 1}, ("field_values",)),
            (items._SET_VALUE, {"b_item": item, "b_field": field, "b_version": 9,
                                "b_value": None, "b_at": at, "b_by": None},
             ("field_values",)),
            (items._INSERT_MISSING[conn.dialect.name], {"b_item": item, "b_field": field,
                                                        "b_at": at}, ("field_values",)),
            (items._BUMP_ITEM, {"b_item": item}, ("items",)),
            (items._BUMP_SEEN_BY_ADMIN, {"b_item": item}, ("items",)),
            (items._BUMP_SEEN_BY_READER, {"b_item": item, "b_groups": [1, 2, 3]},
             ("items",)),
            (items._USER_NAMED, {"b_name": "admin"}, ()),
            (items._USERNAME, {"b_id": 1}, ()),
            (accounts._HOLDER_OF_TOKEN, {"h": digest(token)}, ()),
            (accounts._HOLDER_OF_SESSION, {"h": digest("no such")}, ()),
            (accounts._TOUCH, {"h": digest(token), "at": at}, ("api_tokens",)),
            (changelog._NEXT_EVENT, {}, ("event_counter",)),
            (changelog._INSERT_EVENT, {
                "id": 10**6, "kind": "value", "at": at, "item_id": item, "tracker_id": 1,
                "field_id": field, "field_name": "notes", "old_version": 0,
                "new_version": 1, "item_version": 4, "old_value": None,
                "new_value": ["x", {"y": 1}], "actor_id": 1, "source": "user"},
             ("change_log",)),
            # No source: its default is the column's.
            (changelog._INSERT_EVENT, {"id": 10**6 + 1, "kind": "rights", "at": at},
             ("change_log",)),
            (changelog._USERNAME, {"id": 1}, ()),
            (rights._FIELDS_OF, {"trackers": [1, 2]}, ()),
            (rights._GROUPS_OF, {"fields": [1, 2, 3]}, ()),
            (queue._AUDIENCE, {"items": [item], "feeds": [1], "now": at - timedelta(1)}, ()),
        ]
        for statement, params, tables in cases:
            _both(conn, statement, params, tables)
        # Datetimes, JSON and booleans come back converted, not as stored text.
        (row,) = execute(conn, items._LOCK_VALUE, {"b_item": item, "b_field": 1}).all()
        assert row.value == "t" and row.updated_at.year == at.year
        holder = execute(conn, accounts._HOLDER_OF_TOKEN, {"h": digest(token)}).first()
        assert holder.is_admin is True and holder.disabled is False
        raise _RolledBack

    with pytest.raises(_RolledBack):
        await env.state.db.write_sync(compare)


class _RolledBack(Exception):
    """Leaves write_sync's transaction without committing."""


def test_a_statement_whose_default_is_computed_at_execution_takes_the_usual_path(
) -> None:
    from sqlalchemy import Column, Integer, MetaData, Table, create_engine, insert

    table = Table("t", MetaData(), Column("id", Integer, primary_key=True),
                  Column("n", Integer, default=lambda: 7))
    engine = create_engine("sqlite://")
    table.metadata.create_all(engine)
    with engine.begin() as conn:
        execute(conn, insert(table), {"id": 1})
        assert [tuple(r) for r in conn.execute(select(table))] == [(1, 7)]





async def test_the_first_statement_of_a_transaction_begins_it_through_sqlalchemy(
    env: Env,
) -> None:
    """On asyncpg, SQLAlchemy begins the transaction at its first statement: one sent
    on the driver before would run on its own (its FOR UPDATE lock gone at once)."""
    def kinds(conn: Connection) -> list[bool]:
        return [isinstance(execute(conn, items._USERNAME, {"b_id": 1}), Rows)
                for _ in range(2)]

    got = await env.state.db.write_sync(kinds)
    # SQLite's writer thread has begun (BEGIN IMMEDIATE) before the work runs.
    assert got == ([True, True] if env.state.db.is_sqlite else [False, True])
