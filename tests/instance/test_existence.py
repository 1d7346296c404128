"""Existence and timing leaks: what a user may not see answers as what does not exist,
and nothing they may read moves when only what they may not read changes.

Each answer for an item or tracker hidden from the caller is compared, whole (status,
body bytes, the headers that could differ), with the answer for one that never existed,
once the id or slug is swapped. One app per module and database.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
from quart import Quart
from quart.testing import QuartClient

from hub.hub import HubConfig
from instance.app import create_app
from instance.db import Database
from instance.live.service import LIVE_KEY
from tests.conftest import Env, fast_settings
from tests.federation.conftest import module_database_url  # noqa: F401  (a fixture)
from tests.harness.wait import eventually
from tests.hub.test_live import Socket

pytestmark = pytest.mark.asyncio(loop_scope="module")

ABSENT = 987654321  # an item id that never exists
NOSUCH = "nosuch"  # a tracker slug that never exists
# Small limits, so that the live answers that depend on them can be told apart.
LIVE = HubConfig(poll_interval=0.2, replay_limit=3, max_items=3)


@dataclass
class World:
    env: Env
    open_items: list[int]  # tracker "open": title (Registered), secret (Staff only)
    vault_item: int  # tracker "vault": plan (Staff only); bob reads nothing of it
    bob: QuartClient
    alice: QuartClient  # in Staff: reads everything
    anonymous: QuartClient


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def world(module_database_url: str,  # noqa: F811
                tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[World]:
    settings = fast_settings(Path(tmp_path_factory.mktemp("existence")), module_database_url)
    app: Quart = create_app(settings, database=Database(settings.effective_database_url),
                            hub_config=LIVE)
    async with app.test_app():
        env = Env(app)
        await env.user("admin", admin=True)
        admin = await env.client("admin")
        assert (await admin.post("/api/groups", json={"name": "Staff"})).status_code == 201
        for slug in ("open", "vault"):
            assert (await admin.post("/api/trackers", json={"slug": slug})).status_code == 201
        staff = {"read_groups": ["Staff"], "edit_groups": ["Staff"]}
        for slug, field in (("open", {"name": "title"}), ("open", {"name": "secret", **staff}),
                            ("vault", {"name": "plan", **staff})):
            r = await admin.post(f"/api/trackers/{slug}/fields", json=field)
            assert r.status_code == 201, await r.get_data(as_text=True)
        await env.user("alice", groups=("Staff",))
        await env.user("bob")
        alice = await env.client("alice")
        open_items = []
        for n in range(3):
            r = await alice.post("/api/trackers/open/items",
                                 json={"fields": {"title": f"t{n}", "secret": f"s{n}"}})
            open_items.append((await r.get_json())["id"])
        r = await alice.post("/api/trackers/vault/items", json={"fields": {"plan": "p"}})
        vault_item = (await r.get_json())["id"]
        yield World(env, open_items, vault_item, await env.client("bob"), alice,
                    await env.client())


async def answer(response: Any, swap: tuple[str, str] | None = None) -> dict[str, Any]:
    """Everything of an answer that could tell two apart, with ``swap`` (absent, hidden)
    replaced in its text."""
    def text(value: str) -> str:
        return value.replace(*swap) if swap else value
    return {"status": response.status_code,
            "body": text(await response.get_data(as_text=True)),
            **{h: text(response.headers.get(h, "")) for h in
               ("Content-Type", "Location", "ETag", "Link", "Cache-Control")}}


async def same(client: QuartClient, method: str, hidden: str, absent: str,
               swap: tuple[str, str], **kwargs: Any) -> dict[str, Any]:
    got_hidden = await answer(await client.open(hidden, method=method, **kwargs))
    got_absent = await answer(await client.open(absent, method=method, **kwargs), swap)
    assert got_hidden == got_absent, f"{method} {hidden} differs from {absent}"
    return got_hidden


async def test_hidden_items_and_trackers_answer_as_absent_ones(world: World) -> None:
    v, swap = world.vault_item, (str(ABSENT), str(world.vault_item))
    slug = (NOSUCH, "vault")
    # Before the patch's sequence: If-Match, then a body; both apply to both alike.
    value = {"json": {"value": "x"}}
    for client in (world.bob, world.anonymous):
        for method, path, kwargs in (
            ("GET", "/api/items/{}", {}),
            ("GET", "/api/items/{}", {"headers": {"If-None-Match": "*"}}),
            ("GET", "/api/items/{}/fields/plan", {}),
            ("GET", "/api/items/{}/fields/nope", {}),
            ("PATCH", "/api/items/{}/fields/plan", value),
            ("PATCH", "/api/items/{}/fields/plan", {**value, "headers": {"If-Match": '"1"'}}),
            ("PATCH", "/api/items/{}/fields/nope", value),
            ("DELETE", "/api/items/{}", {}),
            ("PUT", "/api/items/{}/link", {"json": {"url": "https://a.example/items/1"}}),
            ("GET", "/federation/items/{}", {}),
            ("GET", "/api/changes?item={}", {}),
            ("GET", "/api/changes?item={}&since=0&limit=1", {}),
        ):
            got = await same(client, method, path.format(v), path.format(ABSENT), swap,
                             **kwargs)
            assert got["status"] in (200, 401, 403, 404), (path, got)
        for method, path, kwargs in (
            ("GET", "/api/trackers/{}", {}),
            ("GET", "/api/trackers/{}/items", {}),
            ("POST", "/api/trackers/{}/items", {"json": {"fields": {"plan": "x"}}}),
            ("GET", "/api/changes?tracker={}", {}),
            ("GET", "/api/changes?tracker={}&since=0&limit=1", {}),
            ("GET", "/federation/trackers/{}/feed.atom", {}),
        ):
            got = await same(client, method, path.format("vault"), path.format(NOSUCH),
                             slug, **kwargs)
            assert got["status"] == 404, (path, got)
    # The item's own events are not stepped through: the cursor is the head.
    body = json.loads((await same(world.bob, "GET", f"/api/changes?item={v}&since=0&limit=1",
                                  f"/api/changes?item={ABSENT}&since=0&limit=1", swap))["body"])
    assert body["changes"] == [] and body["next"] == body["head"] and not body["more"]
    # A hidden field of a visible item answers as a field that does not exist.
    item = world.open_items[0]
    for method, kwargs in (("GET", {}), ("PATCH", value)):
        await same(world.bob, method, f"/api/items/{item}/fields/secret",
                   f"/api/items/{item}/fields/nosuch", ("nosuch", "secret"), **kwargs)


async def test_pages_of_hidden_and_absent_things_are_one_answer(world: World) -> None:
    v, swap = world.vault_item, (str(ABSENT), str(world.vault_item))
    # Not logged in: both send to the login page (a logged-in user may well see it).
    got = await same(world.anonymous, "GET", f"/items/{v}", f"/items/{ABSENT}", swap)
    assert got["status"] == 302 and "/login?next=" in got["Location"]
    got = await same(world.anonymous, "GET", "/trackers/vault", f"/trackers/{NOSUCH}",
                     (NOSUCH, "vault"))
    assert got["status"] == 302 and "/login?next=" in got["Location"]
    # Logged in: both are the one 404.
    got = await same(world.bob, "GET", f"/items/{v}", f"/items/{ABSENT}", swap)
    assert got["status"] == 404
    got = await same(world.bob, "GET", "/trackers/vault", f"/trackers/{NOSUCH}",
                     (NOSUCH, "vault"))
    assert got["status"] == 404
    # What bob may see still shows.
    r = await world.bob.get(f"/items/{world.open_items[0]}")
    assert r.status_code == 200 and "s0" not in await r.get_data(as_text=True)


async def walk(client: QuartClient, query: str, since: int) -> tuple[list[int], list[int]]:
    """Page through /api/changes one row at a time: the events read and every cursor."""
    events, cursors = [], []
    while True:
        body = await (await client.get(f"/api/changes?{query}&since={since}&limit=1")).get_json()
        events += [c["event"] for c in body["changes"]]
        cursors.append(body["next"])
        if not body["more"]:
            return events, cursors
        since = body["next"]


async def test_cursors_do_not_step_through_hidden_events(world: World) -> None:
    a, b = world.open_items[:2]
    start = (await (await world.alice.get("/api/changes?limit=1")).get_json())["head"]
    # Hidden events (the secret field, the vault) between the ones bob may read.
    saves = [(a, "title"), (a, "secret"), (world.vault_item, "plan"), (b, "secret"),
             (a, "secret"), (b, "title"), (world.vault_item, "plan"), (a, "title")]
    for n, (item, field) in enumerate(saves):
        r = await world.alice.patch(f"/api/items/{item}/fields/{field}", json={"value": f"c{n}"})
        assert r.status_code == 200
    log = (await (await world.alice.get(f"/api/changes?since={start}")).get_json())["changes"]
    head = log[-1]["event"]
    visible = {c["event"] for c in log if c["field"] == "title"}
    for query, wanted in (("", visible), ("tracker=open", visible),
                          (f"item={a}", {c["event"] for c in log if c["field"] == "title"
                                         and c["item"] == a})):
        events, cursors = await walk(world.bob, query, start)
        assert events == sorted(wanted), query
        # Each cursor is a row bob read, or the head: never a hidden event's id.
        assert set(cursors) <= wanted | {head}, (query, cursors, wanted)
        assert cursors[-1] == head


async def test_versions_and_etags_move_only_with_readable_fields(world: World) -> None:
    item = world.open_items[2]
    r = await world.bob.get(f"/api/items/{item}")
    before, etag = await r.get_json(), r.headers["ETag"]
    assert before["version"] == sum(f["version"] for f in before["fields"].values()) == 1
    listed = (await (await world.bob.get("/api/trackers/open/items")).get_json())["items"]
    assert next(i for i in listed if i["id"] == item)["version"] == 1
    # Hidden edits: bob's item, its ETag and its list row stay as they were.
    for n in range(3):
        r = await world.alice.patch(f"/api/items/{item}/fields/secret", json={"value": f"h{n}"})
        assert r.status_code == 200
    r = await world.bob.get(f"/api/items/{item}", headers={"If-None-Match": etag})
    assert r.status_code == 304
    r = await world.bob.get(f"/api/items/{item}")
    assert await r.get_json() == before and r.headers["ETag"] == etag
    listed = (await (await world.bob.get("/api/trackers/open/items")).get_json())["items"]
    assert next(i for i in listed if i["id"] == item)["version"] == 1
    # A readable edit moves it by one, in the item, the save's answer and the log.
    r = await world.bob.patch(f"/api/items/{item}/fields/title", json={"value": "new"})
    assert r.status_code == 200 and (await r.get_json())["item_version"] == 2
    r = await world.bob.get(f"/api/items/{item}")
    assert (await r.get_json())["version"] == 2 and r.headers["ETag"] != etag
    log = (await (await world.bob.get(f"/api/changes?item={item}")).get_json())["changes"]
    # The creation row comes first, at version 0: the item had no values yet.
    assert [c["item_version"] for c in log] == [0, 1, 2] and log[0]["created"]
    # From a cursor inside the item's history, too; and alice counts every field.
    page = (await (await world.bob.get(
        f"/api/changes?item={item}&since={log[1]['event']}")).get_json())["changes"]
    assert [c["item_version"] for c in page] == [2]
    # The item's history (newest first, a page at a time) gives the same numbers.
    history = (await (await world.bob.get(
        f"/api/items/{item}/history?limit=1")).get_json())
    older = (await (await world.bob.get(
        f"/api/items/{item}/history?before={history['next_before']}")).get_json())
    assert [c["item_version"] for c in history["changes"] + older["changes"]] == [2, 1]
    everything = (await (await world.alice.get(f"/api/items/{item}/history")).get_json())
    assert [c["item_version"] for c in everything["changes"]] == list(range(6, 0, -1))
    full = (await (await world.alice.get(f"/api/changes?item={item}")).get_json())["changes"]
    assert [c["item_version"] for c in full] == list(range(7))
    assert (await (await world.alice.get(f"/api/items/{item}")).get_json())["version"] == 6


async def reply(s: Socket) -> dict[str, Any]:
    """The answer to a message: ``subscribed`` or ``error``, whichever comes."""
    while True:
        msg = json.loads(await asyncio.wait_for(s.ws.receive(), 3))
        if msg["type"] in ("subscribed", "error"):
            return dict(msg)


async def test_live_answers_for_hidden_and_absent_items_are_one(world: World) -> None:
    v = world.vault_item
    head = (await (await world.alice.get("/api/changes?limit=1")).get_json())["head"]
    assert head > LIVE.replay_limit
    # The hub has read all of it: both sockets subscribe at the same offset.
    hub = world.env.app.extensions[LIVE_KEY].hub

    async def caught_up() -> bool:
        return bool(hub.cursor >= head)
    await eventually(caught_up, within=5, every=0.02)
    async with world.bob.websocket("/live") as w1, world.bob.websocket("/live") as w2:
        sockets = {v: Socket(w1), ABSENT: Socket(w2)}
        got: dict[int, list[Any]] = {}
        for item, s in sockets.items():
            hello = await s.next("hello")
            # A catch-up from far back (past the replay limit), then a subscription
            # that fills the item limit only if the first item was kept.
            await s.send(type="subscribe", items=[item],
                         position={"epoch": hello["epoch"], "offset": 0})
            got[item] = [await s.next("subscribed")]
            await s.send(type="subscribe", items=world.open_items)
            got[item].append(await reply(s))
        r = await world.alice.patch(f"/api/items/{v}/fields/plan", json={"value": "live"})
        assert r.status_code == 200
        for item, s in sockets.items():
            got[item].append(await s.quiet(0.5))
    def swapped(item: int) -> list[Any]:
        for msg in got[item][:2]:
            msg["items"] = ["ID" if i == item else i for i in msg.get("items", [])]
            for f in msg.get("fields", []):
                f["item"] = "ID" if f["item"] == item else f["item"]
        return got[item]
    assert swapped(v) == swapped(ABSENT)
    first, second, quiet = got[ABSENT]
    assert first["recovered"] is True and second["type"] == "subscribed" and quiet == []
