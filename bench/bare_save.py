"""The least a field save needs, as a yardstick for bench/writes.py.

A bare Quart app under Hypercorn: parse the JSON body, UPDATE the value and its version,
INSERT a change-log row, commit, answer. No auth, no rights, no validation, no
listeners. SQLite through aiosqlite (WAL, synchronous=NORMAL, one connection: SQLite has
one writer anyway) or PostgreSQL through asyncpg (a pool). It is what fieldcast's save
is measured against, in the same run on the same machine.

    python bench/bare_save.py --bind 127.0.0.1:18101 --database sqlite:///tmp/bare.db \
        --items 200 --fields title,status,notes,owner_note [--workers 2]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import sys
from datetime import UTC, datetime
from typing import Any

from hypercorn.asyncio import serve
from hypercorn.config import Config
from quart import Quart, request

SCHEMA = [
    "CREATE TABLE IF NOT EXISTS vals (item INTEGER NOT NULL, field TEXT NOT NULL, "
    "value TEXT, version INTEGER NOT NULL, PRIMARY KEY (item, field))",
    "CREATE TABLE IF NOT EXISTS log (id INTEGER PRIMARY KEY, item INTEGER NOT NULL, "
    "field TEXT NOT NULL, value TEXT, version INTEGER NOT NULL, at TEXT NOT NULL)",
]
PG_SCHEMA = [s.replace("INTEGER PRIMARY KEY", "BIGSERIAL PRIMARY KEY") for s in SCHEMA]


class Sqlite:
    def __init__(self, path: str) -> None:
        self.path = path
        self.lock = asyncio.Lock()

    async def open(self) -> None:
        import aiosqlite

        self.conn = await aiosqlite.connect(self.path, isolation_level=None)
        await self.conn.execute("PRAGMA journal_mode=WAL")
        await self.conn.execute("PRAGMA synchronous=NORMAL")

    async def save(self, item: int, field: str, value: Any) -> int:
        # One connection: each save is its own transaction, one after the other.
        async with self.lock:
            await self.conn.execute("BEGIN IMMEDIATE")
            try:
                cur = await self.conn.execute(
                    "UPDATE vals SET value = ?, version = version + 1 WHERE item = ? AND "
                    "field = ? RETURNING version", (json.dumps(value), item, field))
                row = await cur.fetchone()
                version = row[0] if row else 0
                await self.conn.execute(
                    "INSERT INTO log (item, field, value, version, at) VALUES (?, ?, ?, ?, ?)",
                    (item, field, json.dumps(value), version, datetime.now(UTC).isoformat()))
                await self.conn.execute("COMMIT")
            except BaseException:
                await self.conn.execute("ROLLBACK")
                raise
        return int(version)

    async def close(self) -> None:
        await self.conn.close()


class Postgres:
    def __init__(self, dsn: str) -> None:
        self.dsn = dsn

    async def open(self) -> None:
        import asyncpg

        self.pool = await asyncpg.create_pool(self.dsn, min_size=2, max_size=20)

    async def save(self, item: int, field: str, value: Any) -> int:
        async with self.pool.acquire() as conn, conn.transaction():
            version = await conn.fetchval(
                "UPDATE vals SET value = $1, version = version + 1 WHERE item = $2 AND "
                "field = $3 RETURNING version", json.dumps(value), item, field)
            await conn.execute(
                "INSERT INTO log (item, field, value, version, at) VALUES ($1, $2, $3, $4, $5)",
                item, field, json.dumps(value), version or 0, datetime.now(UTC).isoformat())
        return int(version or 0)

    async def close(self) -> None:
        await self.pool.close()


def _store(url: str) -> Sqlite | Postgres:
    if url.startswith("sqlite:///"):
        return Sqlite(url.removeprefix("sqlite:///"))
    return Postgres(url)


async def setup(url: str, items: int, fields: list[str]) -> None:
    """Create the tables and the rows (once, before the workers start)."""
    rows = [(i, f) for i in range(1, items + 1) for f in fields]
    if url.startswith("sqlite:///"):
        import aiosqlite

        async with aiosqlite.connect(url.removeprefix("sqlite:///")) as conn:
            for s in SCHEMA:
                await conn.execute(s)
            await conn.executemany(
                "INSERT OR IGNORE INTO vals VALUES (?, ?, NULL, 0)", rows)
            await conn.commit()
        return
    import asyncpg

    conn = await asyncpg.connect(url)
    try:
        for s in PG_SCHEMA:
            await conn.execute(s)
        await conn.executemany("INSERT INTO vals VALUES ($1, $2, NULL, 0) "
                               "ON CONFLICT DO NOTHING", rows)
    finally:
        await conn.close()


def create_app(url: str) -> Quart:
    app = Quart(__name__)
    store = _store(url)

    @app.before_serving
    async def _open() -> None:
        await store.open()

    @app.after_serving
    async def _close() -> None:
        await store.close()

    @app.patch("/api/items/<int:item>/fields/<name>")
    async def save(item: int, name: str) -> Any:
        data = await request.get_json()
        version = await store.save(item, name, data["value"])
        return {"item": item, "field": name, "value": data["value"], "version": version}

    @app.get("/healthz")
    async def healthz() -> Any:
        return {"ok": True}

    return app


def _app_from_env() -> Quart:
    return create_app(os.environ["BARE_SAVE_URL"])


async def _serve_one(app: Quart, config: Config) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await serve(app, config, shutdown_trigger=stop.wait)  # type: ignore[arg-type]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--bind", required=True)
    p.add_argument("--database", required=True, help="sqlite:///PATH or postgresql://...")
    p.add_argument("--items", type=int, default=200)
    p.add_argument("--fields", default="title,status,notes,owner_note")
    p.add_argument("--workers", type=int, default=1)
    args = p.parse_args()
    asyncio.run(setup(args.database, args.items, args.fields.split(",")))
    config = Config()
    config.bind = [args.bind]
    config.accesslog = None
    config.errorlog = "-"
    config.graceful_timeout = 2
    if args.workers == 1:
        asyncio.run(_serve_one(create_app(args.database), config))
        return
    from hypercorn.run import run

    os.environ["BARE_SAVE_URL"] = args.database
    # Workers are new interpreters: they find this module through PYTHONPATH.
    here = os.path.dirname(os.path.abspath(__file__))
    os.environ["PYTHONPATH"] = os.pathsep.join(
        p for p in (here, os.environ.get("PYTHONPATH")) if p)
    config.workers = args.workers
    config.application_path = "bare_save:_app_from_env()"
    sys.exit(run(config))


if __name__ == "__main__":
    main()
