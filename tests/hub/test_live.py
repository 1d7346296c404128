"""/live through the ASGI interface: filtering by rights now, catch-up, sessions."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from quart import Quart
from quart.testing.connections import WebsocketDisconnectError

from hub.hub import HubConfig
from instance.app import create_app
from instance.config import Settings
from instance.db import Database
from tests.conftest import Env, fast_settings


@pytest.fixture
async def app(request: pytest.FixtureRequest, tmp_path: Path, database_url: str
              ) -> AsyncIterator[Quart]:
    settings: Settings = fast_settings(tmp_path, database_url)
    # A short poll so a change made outside the process is seen quickly, and a small
    # replay limit; a test marked hub(heartbeat=…) gets short heartbeats.
    marker = request.node.get_closest_marker("hub")
    heartbeat = marker.kwargs["heartbeat"] if marker else 30.0
    app = create_app(settings, database=Database(settings.effective_database_url),
                     hub_config=HubConfig(poll_interval=0.2, heartbeat=heartbeat,
                                          replay_limit=20))
    async with app.test_app():
        yield app


class Socket:
    """A test websocket that keeps every raw frame it received."""

    def __init__(self, ws: Any) -> None:
        self.ws = ws
        self.frames: list[str] = []

    async def send(self, **msg: Any) -> None:
        await self.ws.send(json.dumps(msg))

    async def next(self, kind: str, wait_s: float = 3.0) -> dict[str, Any]:
        async def wait() -> dict[str, Any]:
            while True:
                raw = await self.ws.receive()
                self.frames.append(raw)
                msg = json.loads(raw)
                if msg["type"] == kind:
                    return msg

        return await asyncio.wait_for(wait(), wait_s)

    async def updates(self, count: int, wait_s: float = 3.0) -> list[dict[str, Any]]:
        got: list[dict[str, Any]] = []
        while len(got) < count:
            got.extend((await self.next("updates", wait_s))["updates"])
        return got

    async def quiet(self, seconds: float = 0.5) -> list[str]:
        """Frames that arrive within ``seconds`` (pings excluded)."""
        seen: list[str] = []
        try:
            while True:
                raw = await asyncio.wait_for(self.ws.receive(), seconds)
                self.frames.append(raw)
                if json.loads(raw)["type"] != "ping":
                    seen.append(raw)
        except TimeoutError:
            return seen


async def setup(env: Env) -> int:
    admin = await env.client("admin")
    assert (await admin.post("/api/groups", json={"name": "Staff"})).status_code == 201
    await admin.post("/api/trackers", json={"slug": "bugs"})
    await admin.post("/api/trackers/bugs/fields", json={"name": "title"})
    await admin.post("/api/trackers/bugs/fields", json={
        "name": "notes", "read_groups": ["Staff"], "edit_groups": ["Staff"]})
    await env.user("alice", groups=("Staff",))
    await env.user("bob")
    r = await admin.post("/api/trackers/bugs/items", json={"fields": {"title": "t0"}})
    return (await r.get_json())["id"]


async def test_updates_reach_only_readers_of_the_field(env: Env) -> None:
    item = await setup(env)
    alice, bob = await env.client("alice"), await env.client("bob")
    async with alice.websocket("/live") as wa, bob.websocket("/live") as wb:
        sa, sb = Socket(wa), Socket(wb)
        hello = await sa.next("hello")
        assert hello["user"] == "alice" and hello["epoch"]
        await sb.next("hello")
        for s in (sa, sb):
            await s.send(type="subscribe", items=[item])
            sub = await s.next("subscribed")
            assert sub["recovered"] is None and sub["items"] == [item]
        await alice.patch(f"/api/items/{item}/fields/notes", json={"value": "TOPSECRET"})
        await alice.patch(f"/api/items/{item}/fields/title", json={"value": "public"})
        got = await sa.updates(2)
        assert [(u["field"], u["value"]) for u in got] == [("notes", "TOPSECRET"),
                                                           ("title", "public")]
        assert got[0]["by"] == "alice" and got[0]["version"] == 1
        assert got[1]["event"] > got[0]["event"] and got[1]["epoch"] == hello["epoch"]
        bob_got = await sb.updates(1)
        assert [(u["field"], u["value"]) for u in bob_got] == [("title", "public")]
        await sb.quiet(0.3)
        assert not any("TOPSECRET" in f or '"notes"' in f for f in sb.frames)


async def test_rights_change_applies_to_open_connections(env: Env) -> None:
    item = await setup(env)
    admin, alice, bob = (await env.client("admin"), await env.client("alice"),
                         await env.client("bob"))
    async with bob.websocket("/live") as wb:
        sb = Socket(wb)
        await sb.send(type="subscribe", items=[item])
        await sb.next("subscribed")
        # Bob joins Staff: the open connection learns it may read notes, and gets them.
        assert (await admin.put("/api/groups/Staff/members/bob")).status_code == 204
        fields = await sb.next("fields")
        assert fields == {"type": "fields", "item": item, "readable": ["notes", "title"],
                          "editable": ["notes", "title"]}
        await alice.patch(f"/api/items/{item}/fields/notes", json={"value": "for staff"})
        assert (await sb.updates(1))[0]["value"] == "for staff"
        # Bob leaves Staff; the very next notes change must not reach him.
        assert (await admin.delete("/api/groups/Staff/members/bob")).status_code == 204
        await alice.patch(f"/api/items/{item}/fields/notes", json={"value": "NOT-FOR-BOB"})
        await alice.patch(f"/api/items/{item}/fields/title", json={"value": "marker"})
        fields = await sb.next("fields")
        assert fields["readable"] == ["title"]
        got = await sb.updates(1)
        assert [(u["field"], u["value"]) for u in got] == [("title", "marker")]
        # A field's read groups changing works the same way.
        r = await admin.patch("/api/trackers/bugs/fields/title", json={"read_groups": ["Staff"]})
        assert r.status_code == 200
        assert (await sb.next("fields"))["readable"] == []
        await alice.patch(f"/api/items/{item}/fields/title", json={"value": "HIDDEN-TITLE"})
        await sb.quiet(0.4)
        assert not any("NOT-FOR-BOB" in f or "HIDDEN-TITLE" in f for f in sb.frames)


async def test_logout_and_password_change_close_the_socket(env: Env) -> None:
    item = await setup(env)
    admin = await env.client("admin")
    for end in ("logout", "password"):
        bob = await env.client("bob")
        async with bob.websocket("/live") as wb:
            sb = Socket(wb)
            await sb.send(type="subscribe", items=[item])
            await sb.next("subscribed")
            if end == "logout":
                await bob.post("/api/logout")
            else:
                r = await admin.patch("/api/users/bob",
                                      json={"password": "correct horse battery"})
                assert r.status_code == 200
            with pytest.raises(WebsocketDisconnectError) as info:
                await sb.next("never", wait_s=3)
            assert "4401" in repr(info.value)


async def test_catch_up_replays_missed_changes_once(env: Env) -> None:
    item = await setup(env)
    alice = await env.client("alice")
    async with alice.websocket("/live") as wa:
        sa = Socket(wa)
        hello = await sa.next("hello")
    position = {"epoch": hello["epoch"], "offset": hello["offset"]}
    # Changes while no socket is open.
    for i in range(3):
        await alice.patch(f"/api/items/{item}/fields/title", json={"value": f"v{i}"})
    await alice.patch(f"/api/items/{item}/fields/notes", json={"value": "n"})
    async with alice.websocket("/live") as wa:
        sa = Socket(wa)
        await sa.send(type="subscribe", items=[item], position=position)
        got = await sa.updates(4)
        sub = await sa.next("subscribed")
        assert sub["recovered"] is True
        # Every missed change, once each, in log order.
        assert [(u["field"], u["value"], u["version"]) for u in got] == [
            ("title", "v0", 2), ("title", "v1", 3), ("title", "v2", 4), ("notes", "n", 1)]
        events = [u["event"] for u in got]
        assert events == sorted(events) and sub["offset"] >= events[-1]
        # Live updates follow, with no repeat of the replayed ones.
        await alice.patch(f"/api/items/{item}/fields/title", json={"value": "live"})
        live = await sa.updates(1)
        assert [(u["value"], u["event"] > events[-1]) for u in live] == [("live", True)]
        assert len(await sa.quiet(0.3)) == 0
    # A position from another epoch, or too far back, cannot be recovered.
    async with alice.websocket("/live") as wa:
        sa = Socket(wa)
        await sa.send(type="subscribe", items=[item], position={"epoch": "other", "offset": 1})
        assert (await sa.next("subscribed"))["recovered"] is False
    for i in range(25):
        await alice.patch(f"/api/items/{item}/fields/title", json={"value": f"w{i}"})
    async with alice.websocket("/live") as wa:
        sa = Socket(wa)
        await sa.send(type="subscribe", items=[item], position=position)
        assert (await sa.next("subscribed"))["recovered"] is False


async def test_catch_up_uses_rights_now(env: Env) -> None:
    item = await setup(env)
    admin, alice, bob = (await env.client("admin"), await env.client("alice"),
                         await env.client("bob"))
    await admin.put("/api/groups/Staff/members/bob")
    async with bob.websocket("/live") as wb:
        hello = await Socket(wb).next("hello")
    await alice.patch(f"/api/items/{item}/fields/notes", json={"value": "MISSED-SECRET"})
    await alice.patch(f"/api/items/{item}/fields/title", json={"value": "missed title"})
    await admin.delete("/api/groups/Staff/members/bob")
    async with bob.websocket("/live") as wb:
        sb = Socket(wb)
        await sb.send(type="subscribe", items=[item],
                      position={"epoch": hello["epoch"], "offset": hello["offset"]})
        got = await sb.updates(1)
        assert (await sb.next("subscribed"))["recovered"] is True
        assert [(u["field"], u["value"]) for u in got] == [("title", "missed title")]
        assert not any("MISSED-SECRET" in f for f in sb.frames)


async def test_change_from_another_process_is_seen(env: Env, settings: Settings) -> None:
    """The CLI writes to the database directly; the poll finds its log rows."""
    item = await setup(env)
    bob = await env.client("bob")
    async with bob.websocket("/live") as wb:
        sb = Socket(wb)
        await sb.send(type="subscribe", items=[item])
        await sb.next("subscribed")
        # A second Database on the same URL stands for another process.
        other = Database(settings.effective_database_url)
        from instance import items as items_service
        from instance.changelog import ChangeLog
        from instance.rights import principal_for

        async with ChangeLog(other).write() as session:
            who = await principal_for(session, None)
            who = who.__class__(None, "cli", True, who.group_ids)
            await session.sync(lambda log: items_service.save_field(
                log, item, "title", "from cli", who, if_match=None))
        await other.dispose()
        got = await sb.updates(1, wait_s=3)
        assert got[0]["value"] == "from cli"


@pytest.mark.hub(heartbeat=0.6)
async def test_bad_messages_and_heartbeat(env: Env) -> None:
    await setup(env)
    bob = await env.client("bob")
    async with bob.websocket("/live") as wb:
        sb = Socket(wb)
        await sb.next("hello")
        await sb.send(type="subscribe", items="all")
        assert "items must be" in (await sb.next("error"))["detail"]
        await sb.send(type="dance")
        assert "unknown message type" in (await sb.next("error"))["detail"]
        # Pings come every heartbeat (0.6 s here); answering keeps the socket open...
        for _ in range(4):
            await sb.next("ping", wait_s=2)
            await sb.send(type="pong")
        # ...and silence for three heartbeats closes it.
        with pytest.raises(WebsocketDisconnectError) as info:
            while True:
                await sb.next("never", wait_s=4)
        assert "4000" in repr(info.value)


async def test_cross_site_cookie_socket_refused(env: Env) -> None:
    await setup(env)
    bob = await env.client("bob")
    async with bob.websocket("/live", headers={"Origin": "https://evil.example"}) as wb:
        with pytest.raises(WebsocketDisconnectError) as info:
            await asyncio.wait_for(wb.receive(), 3)
        assert "4403" in repr(info.value)


async def test_revoked_token_closes_its_socket(env: Env) -> None:
    item = await setup(env)
    bob = await env.client("bob")
    token = (await (await bob.post("/api/tokens", json={"name": "script"})).get_json())
    script = await env.client()
    headers = {"Authorization": f"Bearer {token['token']}"}
    async with script.websocket("/live", headers=headers) as ws:
        s = Socket(ws)
        assert (await s.next("hello"))["user"] == "bob"
        await s.send(type="subscribe", items=[item])
        await s.next("subscribed")
        assert (await bob.delete(f"/api/tokens/{token['id']}")).status_code == 204
        with pytest.raises(WebsocketDisconnectError) as info:
            await s.next("never", wait_s=3)
        assert "4401" in repr(info.value)
    async with script.websocket("/live", headers=headers) as ws:
        with pytest.raises(WebsocketDisconnectError) as info:
            await asyncio.wait_for(ws.receive(), 3)
        assert "4401" in repr(info.value)


async def test_deleted_item_is_announced_and_unsubscribed(env: Env) -> None:
    item = await setup(env)
    admin, bob = await env.client("admin"), await env.client("bob")
    async with bob.websocket("/live") as wb:
        sb = Socket(wb)
        await sb.send(type="subscribe", items=[item])
        await sb.next("subscribed")
        assert (await admin.delete(f"/api/items/{item}")).status_code == 204
        assert await sb.next("deleted") == {"type": "deleted", "item": item}


async def test_messages_that_used_to_raise_are_client_errors(
        env: Env, caplog: pytest.LogCaptureFixture) -> None:
    """An id past 64 bits, deep nesting: the client's fault, counted, no traceback."""
    item = await setup(env)
    bob = await env.client("bob")
    hostile = [
        json.dumps({"type": "subscribe", "items": [2**63]}),
        json.dumps({"type": "subscribe", "items": [item],
                    "position": {"epoch": "e", "offset": 10**30}}),
        json.dumps({"type": "unsubscribe", "items": [2**64]}),
        "[" * 5000 + "]" * 5000,
        '{"type":"subscribe","items":' + "[" * 5000 + "]" * 5000 + "}",
    ]
    async with bob.websocket("/live") as wb:
        sb = Socket(wb)
        await sb.next("hello")
        for raw in hostile:
            await wb.send(raw)
            error = await sb.next("error")
            assert "retry" not in error, (raw[:40], error)
        # Each one counted toward the limit of malformed messages.
        for _ in range(20):
            await wb.send(hostile[0])
        with pytest.raises(WebsocketDisconnectError) as info:
            await sb.next("never", wait_s=3)
        assert "4400" in repr(info.value)
    assert not [r for r in caplog.records if r.exc_info], "no traceback for a client's error"


async def test_a_writer_that_fails_closes_its_socket_with_1011(
        env: Env, caplog: pytest.LogCaptureFixture) -> None:
    item = await setup(env)
    bob = await env.client("bob")
    hub = env.app.extensions["fieldcast.live"].hub
    async with bob.websocket("/live") as wb:
        sb = Socket(wb)
        await sb.next("hello")
        await sb.send(type="subscribe", items=[item])
        await sb.next("subscribed")
        (conn,) = hub.connections
        # Whatever the failure, here the one a lone surrogate in a frame used to cause.
        def failing_send(frame: str) -> Any:
            raise UnicodeEncodeError("utf-8", "\ud800", 0, 1, "surrogates not allowed")
        conn._send = failing_send
        conn.push_control({"type": "ping"})
        with pytest.raises(WebsocketDisconnectError) as info:
            await sb.next("never", wait_s=3)
        assert "1011" in repr(info.value)
    assert any("writer failed" in r.getMessage() and r.exc_info for r in caplog.records)


async def test_tracker_subscription_new_items_values_and_rights(env: Env) -> None:
    """A socket subscribed to a tracker gets its new items and every readable change of
    any of its items; a hidden field's value is in no frame, before or after a rights
    change."""
    await setup(env)
    admin, alice, bob = (await env.client("admin"), await env.client("alice"),
                         await env.client("bob"))
    tracker = (await (await bob.get("/api/trackers/bugs")).get_json())["id"]
    async with alice.websocket("/live") as wa, bob.websocket("/live") as wb:
        sa, sb = Socket(wa), Socket(wb)
        for s in (sa, sb):
            await s.send(type="subscribe", trackers=[tracker, 999_999])
            sub = await s.next("subscribed")
            assert sub["trackers"] == [tracker, 999_999] and sub["items"] == []
        # A tracker that does not exist answers as one the user may read nothing of.
        assert sub["trackers_fields"] == [
            {"tracker": tracker, "readable": ["title"], "editable": ["title"]},
            {"tracker": 999_999, "readable": [], "editable": []}]
        r = await admin.post("/api/trackers/bugs/items",
                             json={"fields": {"title": "fresh", "notes": "HIDDEN-1"}})
        item = (await r.get_json())["id"]
        # One commit: its updates frame and the created frame come in one flush round.
        got = [json.loads(f) for f in await sb.quiet(0.5)]
        assert [m for m in got if m["type"] == "created"] == [{
            "type": "created", "item": item, "tracker": tracker,
            "event": created_event(got), "epoch": sub["epoch"]}]
        assert [(u["item"], u["field"], u["value"]) for m in got if m["type"] == "updates"
                for u in m["updates"]] == [(item, "title", "fresh")]
        assert {u["field"] for u in await sa.updates(2)} == {"title", "notes"}
        await alice.patch(f"/api/items/{item}/fields/notes", json={"value": "HIDDEN-2"})
        await alice.patch(f"/api/items/{item}/fields/title", json={"value": "changed"})
        assert [u["value"] for u in await sb.updates(1)] == ["changed"]
        # Bob joins Staff: a fields frame for the tracker, then notes reach him.
        assert (await admin.put("/api/groups/Staff/members/bob")).status_code == 204
        fields = await sb.next("fields")
        assert fields == {"type": "fields", "tracker": tracker,
                          "readable": ["notes", "title"], "editable": ["notes", "title"]}
        await alice.patch(f"/api/items/{item}/fields/notes", json={"value": "for staff"})
        assert [u["value"] for u in await sb.updates(1)] == ["for staff"]
        # And leaves: nothing of notes after that point.
        assert (await admin.delete("/api/groups/Staff/members/bob")).status_code == 204
        await alice.patch(f"/api/items/{item}/fields/notes", json={"value": "HIDDEN-3"})
        await alice.patch(f"/api/items/{item}/fields/title", json={"value": "marker"})
        assert (await sb.next("fields"))["readable"] == ["title"]
        assert [u["value"] for u in await sb.updates(1)] == ["marker"]
        # Subscribed to the item too: each update still arrives once.
        await sb.send(type="subscribe", items=[item])
        await sb.next("subscribed")
        await alice.patch(f"/api/items/{item}/fields/title", json={"value": "once"})
        assert [u["value"] for u in await sb.updates(1)] == ["once"]
        assert (await admin.delete(f"/api/items/{item}")).status_code == 204
        assert (await sb.next("deleted"))["item"] == item
        # Unsubscribed from the tracker: its new items no longer announced.
        await sb.send(type="unsubscribe", trackers=[tracker])
        await admin.post("/api/trackers/bugs/items", json={"fields": {"title": "later"}})
        assert await sb.quiet(0.4) == []
        frames = "".join(sb.frames)
        for secret in ("HIDDEN-1", "HIDDEN-2", "HIDDEN-3"):
            assert secret not in frames
        await sb.send(type="subscribe", trackers="all")
        assert "trackers must be" in (await sb.next("error"))["detail"]


def created_event(messages: list[dict[str, Any]]) -> int:
    """The creation comes first in the log: one event before the item's first value."""
    first = min(u["event"] for m in messages if m["type"] == "updates" for u in m["updates"])
    return first - 1
