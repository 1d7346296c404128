"""Field saves per second, end to end: HTTP PATCH -> rights -> locked update -> change log.

Starts a real `fieldcast serve` per database (the test harness), then runs concurrent
keep-alive clients that save one field at a time for a fixed time, and prints saves/s and
latency percentiles. PostgreSQL is measured when reachable (FIELDCAST_TEST_POSTGRES_URL or
the local default), with 1 and 2 Hypercorn workers.

    python bench/writes.py [--seconds 5] [--clients 1,32] [--items 200]

One client shows the latency of a save on an idle server; many show saturation.
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
from pathlib import Path

import asyncpg
import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.harness import RunningInstance

PG_ADMIN_URL = os.environ.get(
    "FIELDCAST_TEST_POSTGRES_URL", "postgresql+asyncpg://postgres@127.0.0.1:5432/postgres"
)
FIELDS = ("title", "status", "notes", "owner_note")


async def _setup(inst: RunningInstance, items: int) -> list[int]:
    admin = await inst.client()
    (await admin.post("/api/trackers", json={"slug": "bench"})).raise_for_status()
    for name in FIELDS:
        (await admin.post("/api/trackers/bench/fields", json={"name": name})).raise_for_status()
    ids = []
    for i in range(items):
        r = await admin.post("/api/trackers/bench/items", json={"fields": {"title": f"#{i}"}})
        r.raise_for_status()
        ids.append(r.json()["id"])
    await admin.aclose()
    return ids


async def _load(inst: RunningInstance, ids: list[int], clients: int, seconds: float
                ) -> tuple[int, int, list[float]]:
    admin = await inst.client()
    cookies = admin.cookies
    await admin.aclose()
    latencies: list[float] = []
    errors = 0
    stop_at = time.perf_counter() + seconds
    rng = random.Random(7)

    async def worker(n: int) -> None:
        nonlocal errors
        limits = httpx.Limits(max_connections=1, max_keepalive_connections=1)
        async with httpx.AsyncClient(base_url=inst.base_url, cookies=cookies, timeout=30,
                                     limits=limits) as c:
            i = 0
            while time.perf_counter() < stop_at:
                item, field = rng.choice(ids), rng.choice(FIELDS)
                t0 = time.perf_counter()
                r = await c.patch(f"/api/items/{item}/fields/{field}",
                                  json={"value": f"client {n} save {i}"})
                latencies.append(time.perf_counter() - t0)
                if r.status_code != 200:
                    errors += 1
                i += 1

    await asyncio.gather(*(worker(n) for n in range(clients)))
    return len(latencies), errors, latencies


def _pct(values: list[float], p: float) -> float:
    return statistics.quantiles(values, n=100)[int(p) - 1] * 1000 if len(values) > 1 else 0.0


async def _pg_create() -> str | None:
    dsn = PG_ADMIN_URL.replace("postgresql+asyncpg://", "postgresql://", 1)
    try:
        conn = await asyncpg.connect(dsn, timeout=3)
    except (OSError, asyncpg.PostgresError, TimeoutError):
        return None
    name = f"fc_bench_{uuid.uuid4().hex[:8]}"
    await conn.execute(f'CREATE DATABASE "{name}"')
    await conn.close()
    return name


async def _pg_drop(name: str) -> None:
    dsn = PG_ADMIN_URL.replace("postgresql+asyncpg://", "postgresql://", 1)
    conn = await asyncpg.connect(dsn)
    await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    await conn.close()


async def run_one(label: str, root: Path, args: argparse.Namespace, *,
                  database_url: str | None, workers: int) -> None:
    inst = RunningInstance.create(root, label.replace(" ", "_").replace(",", ""),
                                  database_url=database_url, workers=workers)
    inst.start()
    try:
        ids = await _setup(inst, args.items)
        for clients in args.client_counts:
            count, errors, lat = await _load(inst, ids, clients, args.seconds)
            print(f"{label:<28} {clients:>7} {count / args.seconds:>10.0f} {_pct(lat, 50):>9.1f} "
                  f"{_pct(lat, 99):>9.1f} {errors:>7}", flush=True)
    finally:
        inst.stop()


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--clients", default="1,32", help="comma-separated client counts")
    parser.add_argument("--items", type=int, default=200)
    args = parser.parse_args()
    args.client_counts = [int(c) for c in args.clients.split(",")]
    print(f"field saves end to end (HTTP PATCH, last write wins), {args.seconds:.0f} s per row, "
          f"{args.items} items x {len(FIELDS)} fields, {os.cpu_count()} cores shared by the "
          "server, the database and this load generator")
    print(f"{'database':<28} {'clients':>7} {'saves/s':>10} {'p50 ms':>9} {'p99 ms':>9} "
          f"{'errors':>7}")
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        await run_one("SQLite, 1 worker", root, args, database_url=None, workers=1)
        for workers in (1, 2):
            name = await _pg_create()
            if name is None:
                print("PostgreSQL unreachable: skipped")
                break
            url = PG_ADMIN_URL.rsplit("/", 1)[0] + "/" + name
            try:
                await run_one(f"PostgreSQL, {workers} worker(s)", root, args,
                              database_url=url, workers=workers)
            finally:
                await _pg_drop(name)


if __name__ == "__main__":
    asyncio.run(main())
