"""Notifications end to end over real HTTP: a save -> change log -> projector -> queue ->
delivery worker -> the subscriber's callback (REC §7; PROTOCOL.md "Notifications")."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import pytest
import pytest_asyncio
from quart import Quart, request
from sqlalchemy import select

from hub.delivery import DeliveryConfig
from hub.projector import ProjectorConfig
from instance.db import Database
from instance.federation.service import FEDERATION_KEY, FederationService
from instance.models import FederationDelivery
from protocol.delivery import RetryPolicy
from protocol.signatures import verify_request
from tests.federation.conftest import Peer, World, open_world

pytestmark = pytest.mark.asyncio(loop_scope="module")

TEST_DELIVERY = DeliveryConfig(poll_interval=0.05, timeout=2.0, claim_hold=5.0,
                               retry=RetryPolicy(base=30.0, cap=60.0, max_attempts=3, jitter=0))


@dataclass
class Post:
    path: str
    headers: dict[str, str]
    body: bytes


@dataclass
class Subscriber(Peer):
    """A Peer whose callbacks also record POSTs with their headers and can misbehave:
    ``post_status[name]`` answers that status; ``hold[name]`` is an Event awaited first."""

    posts: list[Post] = field(default_factory=list)
    post_status: dict[str, int] = field(default_factory=dict)
    hold: dict[str, asyncio.Event] = field(default_factory=dict)

    def app(self) -> Quart:
        app = super().app()
        get_view = app.view_functions["callback"]

        async def callback(name: str) -> Any:
            if request.method != "POST":
                return await get_view(name)
            body = await request.get_data()
            if name in self.hold:
                await self.hold[name].wait()
            self.posts.append(Post(request.path, dict(request.headers), body))
            return "", self.post_status.get(name, 202)

        app.view_functions["callback"] = callback
        return app

    def posted(self, callback: str) -> list[Post]:
        path = callback.split(self.base, 1)[1].split("?")[0]
        return [p for p in self.posts if p.path == path]

    async def wait_posts(self, callback: str, count: int = 1, within: float = 10.0
                         ) -> list[Post]:
        deadline = time.monotonic() + within
        while len(self.posted(callback)) < count:
            if time.monotonic() > deadline:
                raise AssertionError(f"{count} POST(s) to {callback} expected, got "
                                     f"{len(self.posted(callback))}")
            await asyncio.sleep(0.02)
        return self.posted(callback)


def name_of(callback: str) -> str:
    return callback.split("/callback/")[1].split("?")[0]


def _fast_delivery(app: Quart) -> None:
    service: FederationService = app.extensions[FEDERATION_KEY]
    service.delivery_config = TEST_DELIVERY
    service.projector_config = ProjectorConfig(poll_interval=0.2)


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def world(module_database_url: str, tmp_path_factory: pytest.TempPathFactory
                ) -> AsyncIterator[World]:
    async with open_world(module_database_url, tmp_path_factory, Subscriber,
                          _fast_delivery) as world:
        yield world


def svc(world: World) -> FederationService:
    service: FederationService = world.app.extensions[FEDERATION_KEY]
    return service


async def save(world: World, item: int, name: str, value: Any) -> dict[str, Any]:
    r = await world.admin.patch(f"/api/items/{item}/fields/{name}", json={"value": value})
    assert r.status_code == 200, await r.get_data(as_text=True)
    result: dict[str, Any] = await r.get_json()
    return result


async def subscribed(world: World, item: int, peer: Peer, *, signed: bool = False,
                     **extra: str) -> str:
    callback = peer.callback()
    await world.subscribe(world.topic(item), callback, signer=peer if signed else None, **extra)
    await world.wait_state(callback, "active")
    return callback


async def rows(world: World, callback: str) -> list[FederationDelivery]:
    sub = (await world.subscriptions(callback))[0]
    db: Database = world.app.extensions["fieldcast"].db
    async with db.read() as session:
        return list((await session.execute(
            select(FederationDelivery).where(FederationDelivery.subscription_id == sub["id"])
            .order_by(FederationDelivery.id))).scalars())


async def test_fat_ping_is_the_topic_bytes_with_hmac_only_with_secret(world: World) -> None:
    item = await world.item(title="first", plan="secret plan", internal="x")
    public: Subscriber = world.public  # type: ignore[assignment]
    with_secret = await subscribed(world, item, public, **{"hub.secret": "s3cret"})
    without = await subscribed(world, item, public)
    await save(world, item, "title", "second")
    (a,) = await public.wait_posts(with_secret)
    (b,) = await public.wait_posts(without)
    topic = await world.client.get(f"/federation/items/{item}")
    assert a.body == b.body == await topic.get_data()  # byte for byte (REC §7)
    assert a.headers["Content-Type"] == "application/json"
    assert a.headers["Link"] == topic.headers["Link"]
    assert f'<{world.topic(item)}>; rel="self"' in a.headers["Link"]
    assert f'<{world.hub}>; rel="hub"' in a.headers["Link"]
    expected = hmac.new(b"s3cret", a.body, hashlib.sha256).hexdigest()
    assert a.headers["X-Hub-Signature"] == f"sha256={expected}"
    assert "X-Hub-Signature" not in b.headers  # websub.rocks hub test 100
    doc = json.loads(a.body)
    assert doc["fields"]["title"]["value"] == "second" and "plan" not in doc["fields"]
    assert b"secret plan" not in a.body and b"internal" not in a.body
    # A change only to a field the subscriber may not see sends it nothing.
    await save(world, item, "plan", "another secret")
    await save(world, item, "internal", "y")
    await asyncio.sleep(0.5)
    assert len(public.posted(without)) == 1


async def test_thin_ping_signed_and_names_only_visible_fields(world: World) -> None:
    item = await world.item(title="t", plan="p")
    partner: Subscriber = world.partner  # type: ignore[assignment]
    stranger: Subscriber = world.stranger  # type: ignore[assignment]
    cb_partner = await subscribed(world, item, partner, signed=True)
    cb_stranger = await subscribed(world, item, stranger, signed=True)
    result = await save(world, item, "plan", "new plan")
    await save(world, item, "internal", "hidden")
    (ping,) = await partner.wait_posts(cb_partner)
    doc = json.loads(ping.body)
    assert doc["type"] == "notification" and doc["fields"] == ["plan"]
    assert doc["item"] == item and doc["topic"] == world.topic(item)
    assert doc["version"] == doc["event"] >= result["event"]
    assert b"new plan" not in ping.body  # a refresh signal, never the data
    # Verifiable with the key this instance publishes.
    wk = await (await world.client.get("/.well-known/fieldcast")).get_json()
    from keys.publish import parse_well_known
    keys = {k.key_id: k.public_key for k in parse_well_known(wk).keys}
    url = f"{partner.base}{ping.path}?token=t1"
    verified = verify_request("POST", url, list(ping.headers.items()), ping.body,
                              resolve_key=lambda kid: keys.get(kid), now=time.time(),
                              replay_cache=None)
    assert verified.key_id.startswith(world.base)
    # The stranger may see only the public title: it never hears of plan or internal.
    await save(world, item, "title", "t2")
    (seen,) = await stranger.wait_posts(cb_stranger)
    assert json.loads(seen.body)["fields"] == ["title"]
    for p in stranger.posted(cb_stranger):
        assert b"plan" not in p.body and b"internal" not in p.body


async def test_coalescing_ten_saves_one_ping_and_in_flight_rule(world: World) -> None:
    item = await world.item(title="v0")
    public: Subscriber = world.public  # type: ignore[assignment]
    callback = await subscribed(world, item, public)
    service = svc(world)
    assert service.delivery is not None
    await service.delivery.stop()
    for i in range(10):
        last = await save(world, item, "title", f"v{i + 1}")
    await asyncio.sleep(0.4)  # the projector queues them while no worker sends
    (row,) = await rows(world, callback)
    assert row.state == "pending" and row.item_version == last["event"]
    await service.delivery.start()
    (ping,) = await public.wait_posts(callback)
    assert json.loads(ping.body)["fields"]["title"]["value"] == "v10"
    await asyncio.sleep(0.3)
    assert len(public.posted(callback)) == 1

    # In flight: the row stays as it is; new saves go to a new pending row sent after.
    gate = public.hold[name_of(callback)] = asyncio.Event()
    await save(world, item, "title", "w1")
    await asyncio.sleep(0.4)
    for i in range(5):
        await save(world, item, "title", f"w{i + 2}")
    await asyncio.sleep(0.4)
    states = sorted(r.state for r in await rows(world, callback))
    assert states == ["done", "in_flight", "pending"]
    gate.set()
    pings = await public.wait_posts(callback, 3)
    assert json.loads(pings[-1].body)["fields"]["title"]["value"] == "w6"
    await asyncio.sleep(0.3)
    assert len(public.posted(callback)) == 3


async def test_500_and_timeout_back_off_and_410_ends(world: World) -> None:
    item = await world.item(title="x")
    public: Subscriber = world.public  # type: ignore[assignment]
    failing = await subscribed(world, item, public)
    slow = await subscribed(world, item, public)
    gone = await subscribed(world, item, public)
    fine = await subscribed(world, item, public)
    public.post_status[name_of(failing)] = 500
    public.hold[name_of(slow)] = asyncio.Event()  # never answers
    public.post_status[name_of(gone)] = 410
    started = time.monotonic()
    await save(world, item, "title", "y")
    await public.wait_posts(fine)  # not held up by the hanging callback
    assert time.monotonic() - started < 1.0
    await public.wait_posts(failing)
    await world.wait_state(gone, "unsubscribed")
    deadline = time.monotonic() + 6
    while True:
        (f,) = await rows(world, failing)
        (s,) = await rows(world, slow)
        if f.state == s.state == "retry" or time.monotonic() > deadline:
            break
        await asyncio.sleep(0.05)
    assert f.state == "retry" and f.attempts == 1 and f.last_status == 500
    assert s.state == "retry" and s.last_status is None and "no answer" in (s.last_error or "")
    from instance.clock import as_utc
    assert as_utc(f.next_attempt_at).timestamp() > time.time() + 20  # 30 s, no jitter
    (g,) = await rows(world, gone)
    assert g.state == "dead" and g.last_status == 410
    # An ended subscription is sent nothing more.
    await save(world, item, "title", "z")
    await public.wait_posts(fine, 2)
    assert len(public.posted(gone)) == 1  # the one answered 410, nothing after
    public.hold[name_of(slow)].set()


async def test_export_revoked_denies_and_stops(world: World) -> None:
    r = await world.admin.post("/api/trackers", json={"slug": "revoke"})
    assert r.status_code == 201
    r = await world.admin.post("/api/trackers/revoke/fields", json={
        "name": "title", "label": "title", "export": {"mode": "public", "partners": []}})
    assert r.status_code == 201
    item = await world.item("revoke", title="a")
    public: Subscriber = world.public  # type: ignore[assignment]
    callback = await subscribed(world, item, public)
    r = await world.admin.patch("/api/trackers/revoke/fields/title",
                                json={"export": {"mode": "none", "partners": []}})
    assert r.status_code == 200, await r.get_data(as_text=True)
    await world.wait_state(callback, "denied")
    gets = await public.wait_gets(callback, 2)
    assert gets[-1].args["hub.mode"] == "denied" and gets[-1].args["hub.reason"]
    await save(world, item, "title", "b")
    await asyncio.sleep(0.5)
    assert public.posted(callback) == []
    assert (await world.client.get(f"/federation/items/{item}")).status_code == 404


async def test_a_partners_version_moves_only_with_what_it_is_exported(world: World) -> None:
    r = await world.admin.post("/api/trackers", json={"slug": "versions"})
    assert r.status_code == 201
    to_b = {"mode": "partners", "partners": [world.partner.base]}
    for name, export in (("title", to_b), ("note", to_b), ("secret", None)):
        r = await world.admin.post("/api/trackers/versions/fields", json={
            "name": name, "label": name, **({"export": export} if export else {})})
        assert r.status_code == 201, await r.get_data(as_text=True)
    item = await world.item("versions", title="t", note="n", secret="s")
    partner: Subscriber = world.partner  # type: ignore[assignment]
    callback = await subscribed(world, item, partner, signed=True)
    path = f"/federation/items/{item}"

    async def topic(tag: str | None = None) -> Any:
        headers = {"If-None-Match": tag} if tag else {}
        return await world.client.get(path, headers=world.partner.sign(
            "GET", world.base + path, headers, b""))

    first = await topic()
    version, tag = (await first.get_json())["version"], first.headers["ETag"]
    # An edit of a field not exported to b: same version, same ETag, no ping.
    await save(world, item, "secret", "s2")
    again = await topic(tag)
    assert again.status_code == 304 and again.headers["ETag"] == tag
    await asyncio.sleep(0.5)
    assert partner.posted(callback) == []
    # An exported edit: the version is that change's event, and so is the ping's.
    result = await save(world, item, "title", "t2")
    (ping,) = await partner.wait_posts(callback)
    doc = await (await topic()).get_json()
    assert doc["version"] == result["event"] == json.loads(ping.body)["version"] > version
    # Withdrawn from b: note leaves the document and the version still goes up.
    r = await world.admin.patch("/api/trackers/versions/fields/note",
                                json={"export": {"mode": "none", "partners": []}})
    assert r.status_code == 200, await r.get_data(as_text=True)
    pings = await partner.wait_posts(callback, 2)
    recheck = json.loads(pings[-1].body)
    after = await (await topic()).get_json()
    assert "note" not in after["fields"] and recheck["fields"] == []
    assert after["version"] == recheck["version"] > doc["version"]


async def test_item_deleted_last_ping_then_410(world: World) -> None:
    item = await world.item(title="bye")
    partner: Subscriber = world.partner  # type: ignore[assignment]
    callback = await subscribed(world, item, partner, signed=True)
    assert (await world.admin.delete(f"/api/items/{item}")).status_code == 204
    (ping,) = await partner.wait_posts(callback)
    doc = json.loads(ping.body)
    assert doc["item"] == item and doc["fields"] == []
    assert (await world.client.get(f"/federation/items/{item}")).status_code == 410


async def test_restart_loses_nothing(world: World) -> None:
    item = await world.item(title="r0")
    public: Subscriber = world.public  # type: ignore[assignment]
    callback = await subscribed(world, item, public)
    service = svc(world)
    await service.stop()  # projector, worker and HTTP client down, as in a restart
    for i in range(5):
        last = await save(world, item, "title", f"r{i + 1}")
    await asyncio.sleep(0.3)
    assert public.posted(callback) == []
    await service.start()
    (ping,) = await public.wait_posts(callback)
    doc = json.loads(ping.body)
    assert doc["fields"]["title"]["value"] == "r5" and doc["version"] == last["event"]
