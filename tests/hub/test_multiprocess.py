"""Several server processes on one PostgreSQL database, woken through Redis or through
PostgreSQL's LISTEN/NOTIFY: a change saved through one reaches a socket on another, also
across a broker outage."""

from __future__ import annotations

import asyncio
import json
import os
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest
import redis
from websockets.asyncio.client import connect

from tests.conftest import IN_CI
from tests.harness import RunningInstance

REDIS_URL = os.environ.get("FIELDCAST_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")


def _redis_reachable() -> str:
    try:
        redis.Redis.from_url(REDIS_URL, socket_timeout=2).ping()
    except redis.RedisError as exc:
        if IN_CI:
            pytest.fail(f"Redis at {REDIS_URL} is unreachable under CI=true: {exc!r}")
        pytest.skip(f"Redis at {REDIS_URL} is unreachable: {exc!r}")
    return REDIS_URL


@pytest.fixture(params=[pytest.param("redis", marks=pytest.mark.redis), "pgnotify"])
def broker_url(request: pytest.FixtureRequest) -> str:
    return _redis_reachable() if request.param == "redis" else "postgresql"


@pytest.fixture
def pg_url(database_url: str) -> str:
    if database_url.startswith("sqlite"):
        pytest.skip("several processes need PostgreSQL")
    return database_url


def _env(broker: str, poll_ms: int) -> dict[str, str]:
    return {"FIELDCAST_BROKER_URL": broker, "FIELDCAST_LIVE_POLL_MS": str(poll_ms)}


@pytest.fixture
def two_servers(tmp_path: Path, pg_url: str, broker_url: str
                ) -> Iterator[list[RunningInstance]]:
    """Two processes serving the same database, as two workers behind a load balancer.
    A long poll interval, so only the broker's wake-ups can explain a prompt delivery."""
    servers = [RunningInstance.create(tmp_path, f"w{n}", database_url=pg_url,
                                      extra_env=_env(broker_url, 60_000)) for n in (1, 2)]
    # The second init found the database set up: it created no second admin, but its
    # own data directory and config. Both serve the same data.
    for s in servers:
        s.start()
    yield servers
    for s in servers:
        s.stop()


async def _item(server: RunningInstance) -> tuple[httpx.AsyncClient, int]:
    admin = await server.client()
    (await admin.post("/api/trackers", json={"slug": "bugs"})).raise_for_status()
    (await admin.post("/api/trackers/bugs/fields", json={"name": "title"})).raise_for_status()
    r = await admin.post("/api/trackers/bugs/items", json={"fields": {"title": "t"}})
    return admin, r.json()["id"]


async def _socket(server: RunningInstance, admin: httpx.AsyncClient, item: int) -> Any:
    """A /live socket on ``server`` with the admin's session, subscribed to ``item``."""
    cookie = admin.cookies.get("fieldcast_session")
    ws = await connect(server.base_url.replace("http", "ws") + "/live",
                       additional_headers={"Cookie": f"fieldcast_session={cookie}"})
    assert json.loads(await ws.recv())["type"] == "hello"
    await ws.send(json.dumps({"type": "subscribe", "items": [item]}))
    assert json.loads(await ws.recv())["type"] == "subscribed"
    return ws


async def _next_update(ws: Any, timeout_s: float) -> dict[str, Any]:
    deadline = time.monotonic() + timeout_s
    while True:
        msg = json.loads(await asyncio.wait_for(ws.recv(), deadline - time.monotonic()))
        if msg["type"] == "updates":
            return msg["updates"][-1]


async def test_change_through_one_process_reaches_a_socket_on_another(
    two_servers: list[RunningInstance],
) -> None:
    first, second = two_servers
    admin, item = await _item(first)
    ws = await _socket(second, admin, item)
    for n in range(3):
        value = f"via first {n}"
        started = time.monotonic()
        (await admin.patch(f"/api/items/{item}/fields/title", json={"value": value})
         ).raise_for_status()
        update = await _next_update(ws, 5)
        assert update["value"] == value
        # Far below the 60 s poll: the Redis wake-up carried it.
        assert time.monotonic() - started < 5
    # A socket watching the tracker hears of a new item, whatever broker shard its id
    # falls in (the process watches them all while it has a tracker watcher).
    tracker = (await admin.get("/api/trackers/bugs")).json()["id"]
    await ws.send(json.dumps({"type": "subscribe", "trackers": [tracker]}))
    started = time.monotonic()
    new = (await admin.post("/api/trackers/bugs/items", json={"fields": {"title": "new"}})
           ).json()["id"]
    while True:
        msg = json.loads(await asyncio.wait_for(ws.recv(), 5))
        if msg["type"] == "created":
            assert msg["item"] == new and msg["tracker"] == tracker
            break
    assert time.monotonic() - started < 5
    await ws.close()
    await admin.aclose()


async def _cut_broker_listeners(broker_url: str, pg_url: str) -> int:
    if broker_url.startswith("redis"):
        return redis.Redis.from_url(broker_url).client_kill_filter(_type="pubsub")
    conn = await asyncpg.connect(pg_url.replace("+asyncpg", "", 1))
    try:
        return await conn.fetchval(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
            "WHERE datname = current_database() AND query LIKE 'LISTEN%'"
        )
    finally:
        await conn.close()


async def test_broker_reconnect_catches_up(
    two_servers: list[RunningInstance], broker_url: str, pg_url: str,
) -> None:
    first, second = two_servers
    admin, item = await _item(first)
    ws = await _socket(second, admin, item)
    # Cut both servers' broker listeners, then save at once: the wake-up is sent while
    # the second server is not listening, so only its reconnect (which reads the log
    # from its cursor) can deliver the change before the 60 s poll.
    assert await _cut_broker_listeners(broker_url, pg_url) >= 2
    value = f"during the outage {uuid.uuid4().hex[:6]}"
    (await admin.patch(f"/api/items/{item}/fields/title", json={"value": value})
     ).raise_for_status()
    update = await _next_update(ws, 15)
    assert update["value"] == value
    await ws.close()
    await admin.aclose()


async def test_two_hypercorn_workers(tmp_path: Path, pg_url: str, broker_url: str) -> None:
    """`fieldcast serve` with workers = 2: sockets land on either worker; every one of
    them gets a change saved through whichever worker took the PATCH."""
    server = RunningInstance.create(tmp_path, "multi", database_url=pg_url, workers=2,
                                    extra_env=_env(broker_url, 60_000))
    server.start()
    try:
        admin, item = await _item(server)
        sockets = [await _socket(server, admin, item) for _ in range(8)]
        for n in range(3):
            value = f"to all {n}"
            (await admin.patch(f"/api/items/{item}/fields/title", json={"value": value})
             ).raise_for_status()
            got = await asyncio.gather(*(_next_update(ws, 5) for ws in sockets))
            assert [u["value"] for u in got] == [value] * len(sockets)
        for ws in sockets:
            await ws.close()
        await admin.aclose()
    finally:
        server.stop()

