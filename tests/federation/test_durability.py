"""Delivery durability against real `fieldcast serve` processes (PROTOCOL.md
"Notifications", "Durability"): kill -9 in the middle of many deliveries and restart;
two worker processes on one PostgreSQL database.

Subscribers are partner peers in this process (``capture.CapturePeer``), subscribed
through the host's real hub with signed requests, so every ping is a thin notification
naming the item, its version, the newest event and the changed fields. Each save changes
a field of its own round (``f0``..``f9``), so "no change skipped" is checked exactly: for
every change in the host's change log, each subscription of its item received a ping
naming that field with an event at least as new.
"""

from __future__ import annotations

import asyncio
import os
import signal
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest
from sqlalchemy import select, update

from instance.db import Database
from instance.models import FederationCursor, FederationDelivery
from keys.store import KeyStore
from tests.conftest import IN_CI, PG_ADMIN_URL, RUN_ID, _pg_exec, _with_db
from tests.federation.capture import (
    CALLBACK_ENV,
    CapturePeer,
    Ping,
    change_log,
    last_pings,
    newest,
    path_of,
    socket_owners,
    subscribe,
    wait_active,
)
from tests.federation.conftest import serving
from tests.harness import RunningInstance, gather_limited

ROUNDS = 10
FIELDS = [f"f{r}" for r in range(ROUNDS)]


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def host_database(request: pytest.FixtureRequest) -> Iterator[str | None]:
    """None: SQLite in the host's data dir; else an empty PostgreSQL database (`fieldcast
    serve` migrates it)."""
    if request.param == "sqlite":
        yield None
        return
    yield from _pg_database()


@pytest.fixture(params=[pytest.param("postgres", marks=pytest.mark.postgres)])
def pg_database() -> Iterator[str | None]:
    yield from _pg_database()


def _pg_database() -> Iterator[str]:
    name = f"fc_dur_{RUN_ID}_{uuid.uuid4().hex[:8]}"
    try:
        asyncio.run(_pg_exec(f'CREATE DATABASE "{name}"'))
    except (OSError, asyncpg.PostgresError, TimeoutError) as exc:
        message = f"PostgreSQL at {PG_ADMIN_URL} is unreachable: {exc!r}"
        if IN_CI:
            pytest.fail(message)
        pytest.skip(message)
    yield _with_db(PG_ADMIN_URL, name)
    asyncio.run(_pg_exec(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


def peers(root: Path, count: int, delay: float) -> list[CapturePeer]:
    out = []
    for n in range(count):
        store = KeyStore(root / f"peer{n}")
        store.generate(time.time())
        out.append(CapturePeer(f"peer{n}", store, delay=delay))
    return out


async def setup_host(host: RunningInstance, items: int) -> tuple[httpx.AsyncClient, list[int]]:
    """A tracker whose round fields are all public, and ``items`` items."""
    admin = await host.client()
    (await admin.post("/api/trackers", json={"slug": "d"})).raise_for_status()
    for name in FIELDS:
        (await admin.post("/api/trackers/d/fields", json={
            "name": name, "label": name, "export": {"mode": "public", "partners": []}})
         ).raise_for_status()
    ids = []
    for i in range(items):
        r = await admin.post("/api/trackers/d/items", json={"fields": {"f0": f"#{i}"}})
        r.raise_for_status()
        ids.append(int(r.json()["id"]))
    return admin, ids


async def subscribe_all(host: RunningInstance, admin: httpx.AsyncClient, ids: list[int],
                        subscribers: list[CapturePeer], per_peer: int
                        ) -> dict[int, list[str]]:
    """``per_peer`` callbacks of each peer subscribed to every item: item -> callbacks."""
    callbacks = {p.name: [p.callback(f"c{k}") for k in range(per_peer)] for p in subscribers}
    by_item: dict[int, list[str]] = {i: [] for i in ids}
    async with httpx.AsyncClient(timeout=30) as http:
        jobs = []
        for p in subscribers:
            for cb in callbacks[p.name]:
                for i in ids:
                    jobs.append(subscribe(http, host.base_url, i, cb, p))
                    by_item[i].append(cb)
        await gather_limited(jobs, 8)
    await wait_active(admin, {cb for cbs in callbacks.values() for cb in cbs}, within=40)
    return by_item


async def save_rounds(host: RunningInstance, cookies: httpx.Cookies, ids: list[int],
                      rounds: range) -> dict[int, tuple[int, int]]:
    """Each round saves its own field on every item; item -> (event, item version) of
    the last save."""
    out: dict[int, tuple[int, int]] = {}
    async with httpx.AsyncClient(base_url=host.base_url, cookies=cookies, timeout=30) as c:
        async def save(item: int, r: int) -> None:
            resp = await c.patch(f"/api/items/{item}/fields/{FIELDS[r]}",
                                 json={"value": f"round {r}"})
            assert resp.status_code == 200, resp.text
            body = resp.json()
            out[item] = max(out.get(item, (0, 0)), (body["event"], body["item_version"]))
        for r in rounds:
            await gather_limited([save(i, r) for i in ids], 4)
    return out


def all_pings(subscribers: list[CapturePeer]) -> list[Ping]:
    return [p for s in subscribers for p in s.pings]


def missing(pings: list[Ping], want: dict[int, tuple[int, int]],
            by_item: dict[int, list[str]]) -> list[tuple[str, int]]:
    """(callback path, item) pairs whose newest ping is not yet the item's newest event."""
    best: dict[tuple[str, int], int] = {}
    for p in pings:
        best[(p.path, p.item)] = max(best.get((p.path, p.item), 0), p.event)
    return [(path_of(cb), i) for i, cbs in by_item.items() for cb in cbs
            if best.get((path_of(cb), i), 0) < want[i][0]]


async def wait_delivered(subscribers: list[CapturePeer], want: dict[int, tuple[int, int]],
                         by_item: dict[int, list[str]], within: float, settle: float = 1.0
                         ) -> None:
    deadline = time.monotonic() + within
    while left := missing(all_pings(subscribers), want, by_item):
        if time.monotonic() > deadline:
            raise AssertionError(f"{len(left)} subscription(s) never got the newest version "
                                 f"within {within} s, e.g. {left[:3]}")
        await asyncio.sleep(0.05)
    await asyncio.sleep(settle)  # anything still on its way (a late, older re-send) lands


def check_nothing_skipped(changes: list[dict[str, Any]], pings: list[Ping],
                          by_item: dict[int, list[str]]) -> None:
    """Every change of the log reached every subscription of its item, and each one's
    last ping carries the item's newest event, as its event and as its version (every
    field here is exported to them: the version is the newest event they may see)."""
    want = newest(changes)
    named: dict[tuple[str, int, str], int] = {}  # (path, item, field) -> newest event naming it
    for p in pings:
        for f in p.fields:
            key = (p.path, p.item, f)
            named[key] = max(named.get(key, 0), p.event)
    skipped = [(c["event"], c["item"], c["field"], path_of(cb))
               for c in changes if c.get("field") in FIELDS
               for cb in by_item.get(c["item"], ())
               if named.get((path_of(cb), c["item"], c["field"]), 0) < c["event"]]
    assert not skipped, f"{len(skipped)} (change, subscription) pairs never notified: " \
                        f"{skipped[:5]}"
    last = last_pings(pings)
    stale = [(path_of(cb), i, last[(path_of(cb), i)].version, want[i][0])
             for i, cbs in by_item.items() for cb in cbs
             if (last[(path_of(cb), i)].version, last[(path_of(cb), i)].event) != (
                 want[i][0], want[i][0])]
    assert not stale, f"last ping not the newest version: {stale[:5]}"


async def queue_state(url: str) -> tuple[int, Counter[str], list[str]]:
    """The projector's cursor, delivery rows per state, and errors of dead rows."""
    db = Database(url)
    try:
        async with db.read() as session:
            cursor = await session.scalar(select(FederationCursor.event_id))
            rows = (await session.execute(
                select(FederationDelivery.state, FederationDelivery.last_error))).all()
    finally:
        await db.dispose()
    return int(cursor or 0), Counter(r[0] for r in rows), [
        r[1] or "" for r in rows if r[0] == "dead"]


async def expire_claims(url: str) -> int:
    """What 60 s of waiting would do to a killed worker's claims (DeliveryConfig.claim_hold):
    they run out. Only ``claimed_until`` moves; state and attempts stay as the crash left
    them, so the restarted worker takes the rows through its own "claim ran out" path."""
    db = Database(url)
    try:
        async with db.write() as session:
            result = await session.execute(
                update(FederationDelivery).where(FederationDelivery.state == "in_flight")
                .values(claimed_until=datetime.now(UTC) - timedelta(seconds=1)))
            return int(result.rowcount)  # type: ignore[attr-defined]
    finally:
        await db.dispose()


def kill9(host: RunningInstance) -> None:
    assert host.process is not None
    os.killpg(host.process.pid, signal.SIGKILL)
    host.process.wait(timeout=10)


def database_url(host: RunningInstance) -> str:
    return host.env.get("FIELDCAST_DATABASE_URL") or \
        f"sqlite+aiosqlite:///{(host.data_dir / 'fieldcast.db').resolve()}"


async def test_kill9_mid_delivery_restart_delivers_newest_and_skips_nothing(
        tmp_path: Path, host_database: str | None) -> None:
    """The issue: kill -9 of the host in the middle of ~1,000 deliveries, restart on the
    same data; every subscriber ends with the newest version and no change is skipped."""
    started = time.monotonic()
    items, per_peer = 10, 5
    subscribers = peers(tmp_path, 2, delay=0.04)  # 16 slots / 40 ms: ~400 pings/s at most
    host = RunningInstance.create(tmp_path, "host", database_url=host_database,
                                  extra_env=CALLBACK_ENV)
    async with serving(list(subscribers)):
        await asyncio.to_thread(host.start)
        try:
            admin, ids = await setup_host(host, items)
            by_item = await subscribe_all(host, admin, ids, subscribers, per_peer)
            await asyncio.sleep(0.5)
            for s in subscribers:
                s.pings.clear()  # nothing is owed for changes before the subscriptions
            # 10 rounds x 10 items x 10 subscriptions: 1,000 pings owed. The first six
            # rounds are each delivered before the next (600 pings); the last four are
            # saved at once (up to 400 more, fewer where a waiting ping coalesces saves)
            # and the host is killed while they go out.
            for r in range(6):
                done = await save_rounds(host, admin.cookies, ids, range(r, r + 1))
                await wait_delivered(subscribers, done, by_item, within=20, settle=0)
            before = len(all_pings(subscribers))
            await save_rounds(host, admin.cookies, ids, range(6, ROUNDS))
            for _ in range(4000):  # at most 20 s
                if len(all_pings(subscribers)) >= before + 60:
                    break
                await asyncio.sleep(0.005)
            kill9(host)
            at_kill = all_pings(subscribers)
            url = database_url(host)
            cursor, states, _ = await queue_state(url)
            expired = await expire_claims(url)

            await asyncio.to_thread(host.start)  # same data dir, same database
            changes = await change_log(admin)
            want = newest(changes)
            # The crash really interrupted the work: some pings had come, not all.
            assert at_kill, "no ping arrived before the kill"
            assert missing(at_kill, want, by_item), "everything arrived before the kill"
            await wait_delivered(subscribers, want, by_item, within=30)
            pings = all_pings(subscribers)
            check_nothing_skipped(changes, pings, by_item)

            end_cursor, end_states, dead = await queue_state(url)
            head = max(c["event"] for c in changes)
            assert end_cursor == head
            assert set(end_states) <= {"done", "dead"}, end_states
            assert all("superseded" in e for e in dead), dead
            # At least once, and no more than that: only what was in flight when the
            # host died may arrive twice.
            sent = Counter((p.path, p.item, p.event) for p in pings)
            twice = sum(n - 1 for n in sent.values())
            assert twice <= expired, (twice, expired)
            print(f"\n[{'postgres' if host_database else 'sqlite'}] {len(pings)} pings "
                  f"({len(at_kill)} before the kill, cursor {cursor}/{head}, rows {dict(states)}"
                  f"), {expired} in flight at the kill, {twice} sent twice; "
                  f"{time.monotonic() - started:.1f} s")
            await admin.aclose()
        finally:
            host.stop()


@pytest.mark.postgres
async def test_two_workers_on_postgres_send_each_ping_once(
        tmp_path: Path, pg_database: str) -> None:
    """`fieldcast serve --workers 2`: two projectors and two delivery workers on one
    database. Every (callback, topic, event) arrives exactly once, never two at once for
    one (callback, topic), and nothing failed."""
    items, per_peer = 10, 5
    subscribers = peers(tmp_path, 2, delay=0.02)
    host = RunningInstance.create(tmp_path, "host", database_url=pg_database, workers=2,
                                  extra_env=CALLBACK_ENV)
    async with serving(list(subscribers)):
        await asyncio.to_thread(host.start)
        try:
            admin, ids = await setup_host(host, items)
            by_item = await subscribe_all(host, admin, ids, subscribers, per_peer)
            await asyncio.sleep(0.5)
            for s in subscribers:
                s.pings.clear()
            # Saves land on both workers (new connections per round), so both
            # projectors are woken and race for the cursor.
            for r in range(ROUNDS):
                await save_rounds(host, admin.cookies, ids, range(r, r + 1))
            changes = await change_log(admin)
            want = newest(changes)
            await wait_delivered(subscribers, want, by_item, within=30)
            pings = all_pings(subscribers)
            check_nothing_skipped(changes, pings, by_item)
            sent = Counter((p.path, p.item, p.event) for p in pings)
            dup = {k: n for k, n in sent.items() if n > 1}
            assert not dup, f"{len(dup)} pings sent more than once, e.g. {list(dup.items())[:3]}"
            at_once = {k: n for s in subscribers for k, n in s.max_active.items() if n > 1}
            assert not at_once, f"two requests at once for one (callback, topic): {at_once}"
            _, states, dead = await queue_state(pg_database)
            assert set(states) <= {"done", "dead"}, states
            assert all("superseded" in e for e in dead), dead
            # Both processes delivered (else this proves nothing about two workers).
            assert host.process is not None
            owners = socket_owners(host.process.pid, {p.client_port for p in pings})
            by_pid = Counter(owners.get(p.client_port) for p in pings)
            senders = [pid for pid in by_pid if pid is not None]
            assert len(senders) == 2, by_pid
            print(f"\n[postgres, 2 workers] {len(pings)} pings, {len(sent)} distinct, "
                  f"rows {dict(states)}; pings per worker pid {dict(by_pid)}")
            await admin.aclose()
        finally:
            host.stop()
