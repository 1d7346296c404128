"""Finding items on 100,000 items: the queries of GET /api/trackers/SLUG/items, timed.

Fills a freshly migrated database (SQLite, and PostgreSQL when reachable) with one
tracker of N items (text, dropdown, number, date, user and a hidden textarea field),
ANALYZEs it, then times what the list handler runs for one page (``finding.find_items``
and ``items.items_json``: the SQL and the JSON, without HTTP) for typical queries, beside
the plain first page in id order measured in the same run. Each query prints the plan
of its statement(s), so you can see which use an index and which scan.

    python bench/search.py [--items 100000] [--runs 15] [--only sqlite|postgres]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import statistics
import sys
import tempfile
import time
import uuid
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg
from sqlalchemy import insert, select, text

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from instance import finding, items
from instance.db import Database, make_engine, migrate
from instance.models import (
    Field,
    FieldValue,
    Group,
    Item,
    Tracker,
    User,
    field_read_groups,
)
from instance.rights import Principal, load_fields

PG_ADMIN_URL = os.environ.get(
    "FIELDCAST_TEST_POSTGRES_URL", "postgresql+asyncpg://postgres@127.0.0.1:5432/postgres"
)
STATUSES = ["open", "in progress", "closed", "wontfix"]
WORDS = ("login page button export import search report layout font colour menu "
         "cache upload download timeout slow error printer mobile tablet dark").split()
USERS = [f"user{i}" for i in range(20)]

QUERIES: list[tuple[str, dict[str, Any]]] = [
    ("baseline: first page, id order", {}),
    ("first page, sort=title", {"sort": "title"}),
    ("first page, sort=-estimate", {"sort": "-estimate"}),
    ("filter status=open (id order)", {"status": "open"}),
    ("filter status=wontfix&owner=user3, sort=due", {"status": "wontfix", "owner": "user3",
                                                     "sort": "due"}),
    ("filter due in March (id order)", {"due.from": "2026-03-01", "due.to": "2026-03-31"}),
    ("q=crash (common word, id order)", {"q": "crash"}),
    ("q=zebra (10 items match)", {"q": "zebra"}),
    ("q=crash&sort=title", {"q": "crash", "sort": "title"}),
]


class Args(dict[str, list[str]]):
    """The MultiDict face parse_query reads."""

    def getlist(self, key: str) -> list[str]:
        return self.get(key, [])


def args_of(params: dict[str, Any]) -> Args:
    return Args({k: [str(v)] for k, v in params.items()})


async def fill(db: Database, n: int) -> tuple[int, Principal]:
    rng = random.Random(7)
    at = datetime(2026, 1, 1, tzinfo=UTC)
    async with db.write() as s:
        staff = Group(name="Staff", description="", builtin=False)
        s.add(staff)
        users = [User(username=u, display_name="", password_hash="x", is_admin=False,
                      disabled=False, created_at=at) for u in USERS]
        s.add_all(users)
        tracker = Tracker(slug="bench", name="Bench", description="", require_if_match=False,
                          created_at=at)
        s.add(tracker)
        await s.flush()
        registered = (await s.execute(select(Group.id).where(Group.name == "Registered"))
                      ).scalar_one()
        specs = [("title", "text", {}), ("status", "dropdown", {"choices": STATUSES}),
                 ("estimate", "number", {}), ("due", "date", {}), ("owner", "user", {}),
                 ("notes", "textarea", {})]
        fields = []
        for pos, (name, kind, options) in enumerate(specs):
            f = Field(tracker_id=tracker.id, name=name, label=name.title(), type=kind,
                      options=options, position=pos, export_mode="none", export_partners=[],
                      created_at=at)
            s.add(f)
            fields.append(f)
        await s.flush()
        await s.execute(insert(field_read_groups), [
            {"field_id": f.id, "group_id": staff.id if f.name == "notes" else registered}
            for f in fields])
        tracker_id, registered_id = tracker.id, registered
        by_name = {f.name: f.id for f in fields}
        anonymous = (await s.execute(select(Group.id).where(Group.name == "Anonymous"))
                     ).scalar_one()
    chunk = 5000
    for start in range(0, n, chunk):
        count = min(chunk, n - start)
        async with db.write() as s:
            rows = [{"tracker_id": tracker_id, "version": 1, "created_at": at}
                    for _ in range(count)]
            await s.execute(insert(Item), rows)
            ids = list((await s.execute(select(Item.id).where(Item.tracker_id == tracker_id)
                                        .order_by(Item.id.desc()).limit(count))).scalars())
            values = []
            for item_id in ids:
                words = rng.sample(WORDS, 3)
                if rng.random() < 0.05:
                    words[1] = "crash"
                title = " ".join(words).capitalize() + f" {item_id}"
                row = {"title": title, "status": rng.choices(STATUSES, (5, 2, 10, 1))[0],
                       "owner": rng.choice(USERS),
                       "notes": "a hidden note about " + rng.choice(WORDS)}
                if rng.random() < 0.9:
                    row["estimate"] = rng.randint(0, 100)
                if rng.random() < 0.8:
                    row["due"] = (date(2026, 1, 1) + timedelta(days=rng.randint(0, 364))
                                  ).isoformat()
                for name, value in row.items():
                    values.append({"item_id": item_id, "field_id": by_name[name],
                                   "value": value, "version": 1, "updated_at": at})
            await s.execute(insert(FieldValue), values)
    async with db.write() as s:  # ten rare needles
        rare = list((await s.execute(select(Item.id).where(Item.tracker_id == tracker_id)
                                     .order_by(Item.id).offset(n // 2).limit(10))).scalars())
        for item_id in rare:
            await s.execute(text("UPDATE field_values SET value = :v WHERE item_id = :i AND "
                                 "field_id = :f"),
                            {"v": '"zebra crossing"', "i": item_id, "f": by_name["title"]})
    who = Principal(1, USERS[0], False, frozenset({registered_id, anonymous}))
    return tracker_id, who


async def explain(db: Database, query: finding.ItemQuery, tracker_id: int) -> list[str]:
    lines = []
    segments = [0] if query.sort_field is None else [0, 1]
    async with db.read() as s:
        dialect = s.get_bind().dialect
        for segment in segments:
            c = query.cursor
            bound = (c.key, c.item) if c is not None and c.segment == segment else None
            stmt = finding.segment_query(query, tracker_id, segment, not query.descending,
                                         bound, query.limit + 1)
            sql = str(stmt.compile(dialect=dialect, compile_kwargs={"literal_binds": True}))
            if dialect.name == "sqlite":
                rows = (await s.execute(text("EXPLAIN QUERY PLAN " + sql))).all()
                lines += [f"  [segment {segment}] {r[-1]}" for r in rows]
            else:
                rows = (await s.execute(text("EXPLAIN (COSTS OFF) " + sql))).all()
                lines += [f"  [segment {segment}] {r[0]}" for r in rows]
    return lines


async def timed(db: Database, tracker_id: int, fields: Any, who: Principal,
                query: finding.ItemQuery, runs: int) -> tuple[float, int]:
    tracker = Tracker(id=tracker_id, slug="bench", name="Bench")
    times = []
    count = 0
    for _ in range(runs + 2):
        started = time.perf_counter()
        async with db.read() as s:
            page = await finding.find_items(s, tracker_id, query)
            body = await items.items_json(s, page.items, tracker, fields, who)
        times.append(time.perf_counter() - started)
        count = len(body)
    return statistics.median(times[2:]) * 1000, count


async def deep_cursor(db: Database, tracker_id: int, query: finding.ItemQuery, depth: int
                      ) -> finding.Cursor:
    """The cursor a client holds after ``depth`` items (as if it paged there)."""
    async with db.read() as s:
        stmt = finding.segment_query(query, tracker_id, 0, True, None, depth)
        rows = (await s.execute(stmt)).all()
    last = rows[-1]
    return finding.Cursor(True, query.sort, 0, last[1] if len(last) > 1 else None, last[0])


async def bench(name: str, url: str, n: int, runs: int) -> None:
    engine = make_engine(url)
    await migrate(engine)
    await engine.dispose()
    db = Database(url)
    started = time.perf_counter()
    tracker_id, who = await fill(db, n)
    async with db.write() as s:
        await s.execute(text("ANALYZE"))
    print(f"\n== {name}: {n} items filled in {time.perf_counter() - started:.0f} s ==")
    async with db.read() as s:
        fields = (await load_fields(s, [tracker_id]))[tracker_id]
    cases = [(label, finding.parse_query(args_of(p), "bench", fields, who))
             for label, p in QUERIES]
    for depth, sort in ((10_000, "title"), (90_000, "id")):
        q = finding.parse_query(args_of({"sort": sort}), "bench", fields, who)
        cursor = await deep_cursor(db, tracker_id, q, depth)
        cases.append((f"deep page: after {depth} items, sort={sort}",
                      finding.ItemQuery(q.sort_field, q.descending, (), None, q.q_fields,
                                        q.limit, cursor)))
    baseline = None
    for label, query in cases:
        ms, count = await timed(db, tracker_id, fields, who, query, runs)
        baseline = baseline or ms
        print(f"{label:<52} {ms:8.1f} ms  ({ms / baseline:4.1f}x baseline, {count} items)")
        for line in await explain(db, query, tracker_id):
            print("     " + line)
    await db.dispose()


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--items", type=int, default=100_000)
    parser.add_argument("--runs", type=int, default=15)
    parser.add_argument("--only", choices=("sqlite", "postgres"))
    args = parser.parse_args()
    if args.only != "postgres":
        with tempfile.TemporaryDirectory() as tmp:
            await bench("SQLite", f"sqlite+aiosqlite:///{tmp}/search.db", args.items, args.runs)
    if args.only == "sqlite":
        return
    admin_dsn = PG_ADMIN_URL.replace("postgresql+asyncpg://", "postgresql://", 1)
    dbname = f"fc_bench_search_{uuid.uuid4().hex[:8]}"
    try:
        conn = await asyncpg.connect(admin_dsn, timeout=5)
    except (OSError, asyncpg.PostgresError) as exc:
        print(f"\nPostgreSQL at {PG_ADMIN_URL} unreachable ({exc!r}): skipped")
        return
    await conn.execute(f'CREATE DATABASE "{dbname}"')
    try:
        await bench("PostgreSQL", PG_ADMIN_URL.rsplit("/", 1)[0] + "/" + dbname, args.items,
                    args.runs)
    finally:
        await conn.execute(f'DROP DATABASE IF EXISTS "{dbname}" WITH (FORCE)')
        await conn.close()


if __name__ == "__main__":
    asyncio.run(main())
