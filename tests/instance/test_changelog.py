"""The change log's owner: kinds readers react to, listeners after commit, and the edges
where the log meets a slow broker or a protocol error. SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import AsyncIterator, Callable, Sequence
from pathlib import Path
from typing import Any

import pytest
from quart import Quart
from sqlalchemy import select

from hub.changes import Appended, ChangeKind
from hub.hub import HubConfig
from instance import changelog
from instance.app import create_app
from instance.clock import now
from instance.db import Database
from instance.live.service import LIVE_KEY
from protocol.errors import LocalProtocolError, RemoteProtocolError
from tests.conftest import Env, fast_settings
from tests.hub.test_live import Socket


@pytest.fixture
async def app(tmp_path: Path, database_url: str) -> AsyncIterator[Quart]:
    settings = fast_settings(tmp_path, database_url)
    app = create_app(settings, database=Database(settings.effective_database_url),
                     hub_config=HubConfig(poll_interval=0.2))

    # Stand-ins for handlers that meet a peer's bad message, registered before serving.
    @app.get("/test/remote-error")
    async def remote_error() -> None:
        raise RemoteProtocolError("the signature does not verify", status_hint=401)

    @app.get("/test/odd-hint")
    async def odd_hint() -> None:
        raise LocalProtocolError("refused", status_hint=299)

    async with app.test_app():
        yield app


async def log_after(env: Env, after: int) -> list[tuple[ChangeKind, str | None]]:
    rows = await env.state.change_log.read(after, 100)
    return [(c.kind, c.field) for c in rows]


async def setup(env: Env) -> int:
    admin = await env.client("admin")
    assert (await admin.post("/api/trackers", json={"slug": "bugs"})).status_code == 201
    for name in ("title", "status"):
        r = await admin.post("/api/trackers/bugs/fields", json={"name": name})
        assert r.status_code == 201
    r = await admin.post("/api/trackers/bugs/items", json={"fields": {"title": "t0"}})
    return int((await r.get_json())["id"])


async def test_export_changes_are_logged_once_per_real_change(env: Env) -> None:
    await setup(env)
    admin = await env.client("admin")
    head = await env.state.change_log.head()
    url = "/api/trackers/bugs/fields/status"
    partners = {"mode": "partners", "partners": ["https://b.example"]}
    assert (await admin.patch(url, json={"export": partners})).status_code == 200
    # The same settings again change nothing a reader must react to.
    assert (await admin.patch(url, json={"export": partners})).status_code == 200
    assert (await admin.patch(url, json={"label": "State"})).status_code == 200
    assert (await admin.patch(url, json={"export": {"mode": "none"}})).status_code == 200
    assert await log_after(env, head) == [(ChangeKind.EXPORT, "status"),
                                          (ChangeKind.EXPORT, "status")]
    # A field created exported is an export change too (and a rights change).
    head = await env.state.change_log.head()
    r = await admin.post("/api/trackers/bugs/fields",
                         json={"name": "summary", "export": {"mode": "public"}})
    assert r.status_code == 201
    assert await log_after(env, head) == [(ChangeKind.RIGHTS, None),
                                          (ChangeKind.EXPORT, "summary")]
    # Export events are for the instance's own readers, not in /api/changes.
    body = await (await admin.get(f"/api/changes?since={head}")).get_json()
    assert body["changes"] == [] and body["next"] == head + 2


async def test_field_deletion_is_logged_and_reaches_open_sockets(env: Env) -> None:
    item = await setup(env)
    admin = await env.client("admin")
    await env.user("bob")
    bob = await env.client("bob")
    r = await admin.patch(f"/api/items/{item}/fields/status", json={"value": "open"})
    assert r.status_code == 200
    async with bob.websocket("/live") as wb:
        sb = Socket(wb)
        await sb.send(type="subscribe", items=[item])
        assert (await sb.next("subscribed"))["items"] == [item]
        head = await env.state.change_log.head()
        assert (await bob.delete("/api/trackers/bugs/fields/status")).status_code == 403
        assert (await admin.delete("/api/trackers/bugs/fields/status")).status_code == 204
        assert (await admin.delete("/api/trackers/bugs/fields/status")).status_code == 404
        assert await log_after(env, head) == [(ChangeKind.FIELD_DELETED, "status")]
        # The socket learns the field is gone, as after a rights change.
        fields = await sb.next("fields")
        assert fields["readable"] == ["title"] and fields["editable"] == ["title"]
    tracker = await (await admin.get("/api/trackers/bugs")).get_json()
    assert [f["name"] for f in tracker["fields"]] == ["title"]
    got = await (await admin.get(f"/api/items/{item}")).get_json()
    assert list(got["fields"]) == ["title"]
    # The history stays in the log, but no reader is shown values of a field that is gone.
    changes = (await (await admin.get("/api/changes")).get_json())["changes"]
    assert [c.get("field") for c in changes] == [None, "title"]  # the creation, a value


async def test_listeners_hear_each_commit_after_it_and_a_failing_one_harms_nothing(
    env: Env,
) -> None:
    item = await setup(env)
    admin = await env.client("admin")
    heard: list[list[Appended]] = []

    def failing(_: Sequence[Appended]) -> None:
        raise RuntimeError("a broken reader")

    def listener(appended: Sequence[Appended]) -> None:
        heard.append(list(appended))

    undo_failing = env.state.change_log.on_commit(failing)
    undo = env.state.change_log.on_commit(listener)
    try:
        r = await admin.patch(f"/api/items/{item}/fields/status", json={"value": "a"})
        assert r.status_code == 200
        event = (await r.get_json())["event"]
        assert heard == [[(event, item)]]
        # A save that changes nothing appends nothing, and nobody is told.
        r = await admin.patch(f"/api/items/{item}/fields/status", json={"value": "a"})
        assert r.status_code == 200 and heard == [[(event, item)]]
        # A refused save commits nothing either.
        r = await admin.patch(f"/api/items/{item}/fields/status", json={"value": "b"},
                              headers={"If-Match": '"99"'})
        assert r.status_code == 412 and heard == [[(event, item)]]
    finally:
        undo()
        undo_failing()
    r = await admin.patch(f"/api/items/{item}/fields/status", json={"value": "c"})
    assert r.status_code == 200 and len(heard) == 1


async def test_queued_saves_share_a_commit_and_a_conflict_fails_alone(env: Env) -> None:
    item = await setup(env)
    admin = await env.client("admin")
    r = await admin.patch(f"/api/items/{item}/fields/status", json={"value": "v0"})
    assert r.status_code == 200 and (await r.get_json())["version"] == 1
    heard: list[list[Appended]] = []
    undo = env.state.change_log.on_commit(lambda appended: heard.append(list(appended)))
    log = env.state.change_log
    head = await log.head()
    # Edits of title (last write wins) and of status, all sent with If-Match "1": the
    # first status edit to take its turn wins, the others conflict.
    edits = [("title", f"x{i}", None) for i in range(6)] + [
        ("status", f"s{i}", '"1"') for i in range(3)]
    try:
        # A write holding the turn, which appends and then fails: the saves queue
        # behind it and, with group commit (SQLite), share a transaction; nothing of
        # the failed one is kept, not even its event id.
        with pytest.raises(RuntimeError):
            async with log.write() as session:
                await changelog.rights_changed(session, now())
                tasks = [asyncio.create_task(admin.patch(
                    f"/api/items/{item}/fields/{name}", json={"value": value},
                    headers={"If-Match": tag} if tag else {})) for name, value, tag in edits]
                await asyncio.sleep(0.3)
                raise RuntimeError("the first writer fails")
        responses = [await t for t in tasks]
    finally:
        undo()
    statuses = [r.status_code for r in responses]
    bodies = [await r.get_json() for r in responses]
    assert statuses[:6] == [200] * 6 and sorted(statuses[6:]) == [200, 412, 412], bodies
    won = [b for b, (name, _, _) in zip(bodies, edits, strict=True)
           if name == "status" and "event" in b]
    assert len(won) == 1 and won[0]["version"] == 2
    for b in bodies:
        if b.get("error") == "version_conflict":
            assert b["current"]["version"] == 2 and b["current"]["value"] == won[0]["value"]
    # Each save its own event id: gap-free, in commit order, each told once, in order.
    events = sorted(b["event"] for b in bodies if "event" in b)
    assert events == list(range(head + 1, head + 8))
    assert [e for batch in heard for e, _ in batch] == events
    rows = await log.read(head, 100)
    assert [c.event for c in rows] == events
    title = [c for c in rows if c.field == "title"]
    assert [(c.old_version, c.version) for c in title] == [(v, v + 1) for v in range(1, 7)]
    assert [c.item_version for c in rows] == list(range(rows[0].item_version,
                                                         rows[0].item_version + 7))
    current = await (await admin.get(f"/api/items/{item}")).get_json()
    assert current["fields"]["title"]["version"] == 7
    assert current["fields"]["title"]["value"] == title[-1].value
    assert current["fields"]["status"] == {**current["fields"]["status"], "version": 2,
                                           "value": won[0]["value"]}
    if env.state.change_log.group_commit:
        assert len(heard) < len(events), heard  # commits were shared


async def test_a_writer_cancelled_in_the_queue_does_not_strand_the_shared_commit(
    env: Env,
) -> None:
    log = env.state.change_log
    if not log.group_commit:
        pytest.skip("group commit is SQLite's")
    release = asyncio.Event()

    async def first() -> int:
        async with log.write() as session:
            event = await changelog.rights_changed(session, now())
            await release.wait()
        return event

    async def queued() -> None:
        async with log.write():
            pass

    holder = asyncio.create_task(first())
    await asyncio.sleep(0.1)
    waiter = asyncio.create_task(queued())
    await asyncio.sleep(0.1)
    release.set()
    # The holder leaves the transaction open for the one queued behind it and hands
    # over the turn; that one is cancelled before it takes it.
    while log._turn.locked() and not holder.done():  # noqa: ASYNC110 (no event for it)
        await asyncio.sleep(0)
    waiter.cancel()
    event = await asyncio.wait_for(holder, 10)
    assert [c.event for c in await log.read(event - 1, 10)] == [event]


def _appender(fail: str | None = None) -> Callable[[changelog.LogConnection], int]:
    """A unit's work: append a rights row, then raise if told to (before or after)."""
    def work(log: changelog.LogConnection) -> int:
        if fail == "before":
            raise ValueError("refused before appending")
        event = log.append(ChangeKind.RIGHTS, at=now())
        if fail == "after":
            raise ValueError("refused after appending")
        return event
    return work


async def _queued_behind_a_writer(log: changelog.ChangeLog,
                                  works: Sequence[Callable[[changelog.LogConnection], Any]]
                                  ) -> list[Any]:
    """``works`` as units queued while another write holds the turn, so that with
    group commit they share one transaction; each one's result or error."""
    async with log.write():
        tasks = [asyncio.create_task(log.unit(w)) for w in works]
        await asyncio.sleep(0.2)
    return list(await asyncio.gather(*tasks, return_exceptions=True))


async def test_units_that_share_a_transaction_fail_alone(env: Env) -> None:
    log = env.state.change_log
    heard: list[list[Appended]] = []
    undo = log.on_commit(lambda appended: heard.append(list(appended)))
    threads: list[str] = []

    def noting(work: Callable[[changelog.LogConnection], int]
               ) -> Callable[[changelog.LogConnection], int]:
        def run(conn: changelog.LogConnection) -> int:
            threads.append(threading.current_thread().name)
            return work(conn)
        return run

    head = await log.head()
    try:
        got = await _queued_behind_a_writer(log, [
            noting(_appender()), noting(_appender("after")), noting(_appender()),
            noting(_appender("before")), noting(_appender())])
    finally:
        undo()
    assert [type(g) for g in got] == [int, ValueError, int, ValueError, int]
    # The failed ones left nothing, not even an event id: the others' are gap-free.
    assert sorted(got[0::2]) == [head + 1, head + 2, head + 3]
    assert [c.event for c in await log.read(head, 10)] == [head + 1, head + 2, head + 3]
    assert sorted(e for batch in heard for e, _ in batch) == [head + 1, head + 2, head + 3]
    if log.group_commit:
        # One transaction, in queue order, one commit, told once.
        assert got[0::2] == [head + 1, head + 2, head + 3]
        assert len(heard) == 1, heard
    if env.state.db.is_sqlite:
        # The whole transaction on the writer thread: one hop, not one a statement.
        assert set(threads) == {threads[0]} and threads[0].startswith("fieldcast-writer")


async def test_a_failed_commit_fails_every_unit_of_it(env: Env) -> None:
    log = env.state.change_log
    heard: list[Sequence[Appended]] = []
    undo = log.on_commit(heard.append)

    def breaks_the_commit(log: changelog.LogConnection) -> None:
        # A foreign key checked only at COMMIT: the statement passes, the COMMIT fails.
        if log.conn.dialect.name == "sqlite":
            log.conn.exec_driver_sql("PRAGMA defer_foreign_keys=ON")
        else:
            log.conn.exec_driver_sql("SET CONSTRAINTS ALL DEFERRED")
        log.conn.exec_driver_sql(
            "INSERT INTO field_values (item_id, field_id, value, version, updated_at) "
            "VALUES (987654, 987654, NULL, 0, '2026-01-01 00:00:00')")

    head = await log.head()
    try:
        if log.group_commit:
            got = await _queued_behind_a_writer(
                log, [_appender(), breaks_the_commit, _appender()])
            assert all(isinstance(g, Exception) for g in got), got
        else:
            with pytest.raises(Exception, match=r"(?i)foreign key"):
                await log.unit(breaks_the_commit)
        assert await log.unit(_appender()) == head + 1  # nothing of it was kept
    finally:
        undo()
    assert [e for batch in heard for e, _ in batch] == [head + 1]


async def test_a_unit_whose_caller_stops_waiting_still_commits(env: Env) -> None:
    log = env.state.change_log
    head = await log.head()
    async with log.write() as session:
        # The counter row locked: on PostgreSQL too the units wait, inside their work.
        await session.execute(select(changelog._counter.c.value).with_for_update())
        gone = asyncio.create_task(log.unit(_appender()))
        stays = asyncio.create_task(log.unit(_appender()))
        await asyncio.sleep(0.1)
        gone.cancel()
    assert await stays in (head + 1, head + 2)
    with pytest.raises(asyncio.CancelledError):
        await gone
    # Queued is run (as a request whose body has arrived runs to its end).
    for _ in range(50):
        if await log.head() == head + 2:
            break
        await asyncio.sleep(0.05)
    assert [c.event for c in await log.read(head, 10)] == [head + 1, head + 2]


def _held(gate: threading.Event) -> Callable[[changelog.LogConnection], int]:
    """A unit's work that holds its transaction, on its thread, until ``gate`` opens."""
    def work(log: changelog.LogConnection) -> int:
        assert gate.wait(10)
        return log.append(ChangeKind.RIGHTS, at=now())
    return work


async def test_a_batch_under_way_at_shutdown_is_answered_and_told(env: Env) -> None:
    log = env.state.change_log
    if not log.group_commit:
        pytest.skip("group commit is SQLite's")
    heard: list[Sequence[Appended]] = []
    undo = log.on_commit(heard.append)
    head, gate = await log.head(), threading.Event()
    try:
        saving = asyncio.create_task(log.unit(_held(gate)))
        await asyncio.sleep(0.1)  # on the writer thread
        queued = asyncio.create_task(log.unit(_appender()))
        await asyncio.sleep(0)
        assert log._draining is not None
        log._draining.cancel()  # as the loop's end cancels what runs
        await asyncio.sleep(0.05)
        gate.set()
        # The batch on the thread committed: its unit hears so, and so do listeners.
        assert await asyncio.wait_for(saving, 10) == head + 1
        assert [e for batch in heard for e, _ in batch] == [head + 1]
        # The one queued behind it never ran, and hears so.
        with pytest.raises(asyncio.CancelledError):
            await queued
        assert await log.head() == head + 1
    finally:
        gate.set()
        undo()


async def test_a_write_cancelled_twice_keeps_the_lock_until_it_has_ended(env: Env) -> None:
    db = env.state.db
    if not db.is_sqlite:
        pytest.skip("SQLite's writer thread")
    log, gate = env.state.change_log, threading.Event()
    head = await log.head()
    writing = asyncio.create_task(db.write_sync(
        lambda conn: _held(gate)(changelog.LogConnection(conn, []))))
    try:
        await asyncio.sleep(0.1)
        for _ in range(2):
            writing.cancel()
            await asyncio.sleep(0.05)
            assert db._write_lock is not None and db._write_lock.locked()
        gate.set()
        with pytest.raises(asyncio.CancelledError):
            await writing
    finally:
        gate.set()
    assert await log.head() == head + 1  # it committed; its caller had stopped waiting


async def test_reads_after_a_commit_answer_as_the_table_does(env: Env) -> None:
    """The readers after each commit (live hub, federation) are answered from the rows
    this process committed, on SQLite: exactly the rows a read of the table gives,
    and another process's rows from the table."""
    log = env.state.change_log
    head = await log.head()
    item = await setup(env)
    admin = await env.client("admin")
    await env.user("ann")
    r = await admin.post("/api/trackers/bugs/fields", json={"name": "notes",
                                                           "type": "textarea"})
    assert r.status_code == 201
    for name, value in (("status", "a"), ("status", "b"), ("notes", "x" * 3000),
                        ("notes", "c"), ("status", None)):
        r = await admin.patch(f"/api/items/{item}/fields/{name}", json={"value": value})
        assert r.status_code == 200
    assert (await admin.post("/api/groups", json={"name": "devs"})).status_code == 201
    r = await admin.put("/api/groups/devs/members/ann")
    assert r.status_code in (200, 201, 204), await r.get_data()
    assert (await admin.delete(f"/api/items/{item}")).status_code == 204

    async def table(after: int) -> list[Any]:
        async with env.state.db.read() as session:
            return await changelog.read(session, after, 100)

    kinds = {c.kind for c in await table(head)}
    assert {ChangeKind.CREATED, ChangeKind.VALUE, ChangeKind.RIGHTS,
            ChangeKind.ITEM_DELETED} <= kinds
    for after in range(head, await log.head() + 1):
        assert await log.read(after, 100) == await table(after)
        assert await log.read(after, 2) == (await table(after))[:2]
    if env.state.db.is_sqlite:
        assert log._tail, "answered from the committed rows"
        # Rows of large values are not kept (the tail's memory is bounded): reads that
        # need them read the table, as compared above.
        assert all(c.value != "x" * 3000 and c.old_value != "x" * 3000 for c in log._tail)

    # Another process (a second Database on the same file stands for it) commits,
    # then this one: its row is read from the table, in order, with nothing skipped.
    other = Database(env.state.settings.effective_database_url)
    try:
        async with changelog.ChangeLog(other).write() as session:
            theirs = await changelog.rights_changed(session, now())
    finally:
        await other.dispose()
    mine = await log.unit(_appender())
    assert mine == theirs + 1
    assert [c.event for c in await log.read(theirs - 1, 10)] == [theirs, mine]
    assert await log.read(theirs - 1, 10) == await table(theirs - 1)


class StuckBroker:
    """A broker whose publish never returns, as a Redis that stopped answering."""

    def __init__(self) -> None:
        self.calls = 0

    async def start(self, wake: object) -> None:
        pass

    async def publish(self, events: list[Appended]) -> None:
        self.calls += 1
        await asyncio.Event().wait()

    def watch(self, item: int) -> None:
        pass

    def unwatch(self, item: int) -> None:
        pass

    async def close(self) -> None:
        pass


async def test_a_stuck_broker_does_not_hold_up_saves_or_local_sockets(env: Env) -> None:
    item = await setup(env)
    admin = await env.client("admin")
    hub = env.app.extensions[LIVE_KEY].hub
    broker = StuckBroker()
    hub.broker = broker
    async with admin.websocket("/live") as ws:
        socket = Socket(ws)
        await socket.send(type="subscribe", items=[item])
        await socket.next("subscribed")
        started = time.monotonic()
        for n in range(3):
            r = await asyncio.wait_for(
                admin.patch(f"/api/items/{item}/fields/status", json={"value": f"v{n}"}), 5)
            assert r.status_code == 200
        assert time.monotonic() - started < 5
        got = await socket.updates(3)
        assert [u["value"] for u in got] == ["v0", "v1", "v2"]
    # The publish task is stuck in the first call; later commits wait for it, merged.
    assert broker.calls == 1


async def test_protocol_errors_answer_their_status_hint(env: Env) -> None:
    client = await env.client()
    r = await client.get("/test/remote-error")
    assert r.status_code == 401
    assert await r.get_json() == {"error": "unauthorized",
                                  "detail": "the signature does not verify"}
    # A hint that is no error status still answers a client error, never a 5xx.
    r = await client.get("/test/odd-hint")
    assert r.status_code == 400
    assert await r.get_json() == {"error": "bad_request", "detail": "refused"}
