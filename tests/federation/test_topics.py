"""GET {topic}: what each requester sees, ETag and 304, Link headers, 404 sameness, 410;
and the durability of a pending subscribe across a restart."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest
from quart.testing import QuartClient

from instance.app import create_app
from instance.db import Database
from protocol.documents import parse_item
from protocol.links import discover
from tests.federation.conftest import TEST_VERIFIER, Peer, World, hub_settings, serving

pytestmark = pytest.mark.asyncio(loop_scope="module")


async def get(world: World, path: str, *, signer: Peer | None = None,
              headers: dict[str, str] | None = None) -> Any:
    headers = dict(headers or {})
    if signer is not None:
        headers = signer.sign("GET", world.base + path, headers, b"")
    return await world.client.get(path, headers=headers)


def path(item: int) -> str:
    return f"/federation/items/{item}"


async def test_unsigned_requests_see_public_fields_only(world: World) -> None:
    item = await world.item(title="hello", plan="secret plan", internal="never")
    r = await get(world, path(item))
    assert r.status_code == 200 and r.headers["Content-Type"] == "application/json"
    body = await r.get_data()
    doc = parse_item(body)
    assert doc.topic == world.topic(item) and doc.item == item and doc.tracker == "shared"
    assert list(doc.fields) == ["title"] and doc.fields["title"].value == "hello"
    assert doc.fields["title"].type == "text" and doc.fields["title"].version == 1
    found = discover(r.headers.get_all("Link"), base_url=world.topic(item))
    assert found.hubs == (world.hub,) and found.self_url == world.topic(item)


async def test_a_partner_sees_its_fields_too(world: World) -> None:
    item = await world.item(title="hello", plan="secret plan", internal="never")
    r = await get(world, path(item), signer=world.partner)
    assert r.status_code == 200, await r.get_data(as_text=True)
    doc = parse_item(await r.get_data())
    assert sorted(doc.fields) == ["plan", "title"] and doc.fields["plan"].value == "secret plan"
    # C signs too, but is no partner: the public fields only.
    r = await get(world, path(item), signer=world.stranger)
    assert list(parse_item(await r.get_data()).fields) == ["title"]


async def test_etag_and_304_carry_the_link_header(world: World) -> None:
    item = await world.item(title="v1")
    r = await get(world, path(item))
    tag = r.headers["ETag"]
    assert tag.startswith('"') and not tag.startswith("W/")
    again = await get(world, path(item), headers={"If-None-Match": tag})
    assert again.status_code == 304 and await again.get_data() == b""
    assert again.headers["ETag"] == tag and again.headers["Link"] == r.headers["Link"]
    # A change of an exported field changes the document and its tag.
    await world.admin.patch(f"/api/items/{item}/fields/title", json={"value": "v2"})
    changed = await get(world, path(item), headers={"If-None-Match": tag})
    assert changed.status_code == 200 and changed.headers["ETag"] != tag
    # The partner's document is another document, with another tag.
    theirs = await get(world, path(item), signer=world.partner)
    assert theirs.headers["ETag"] != changed.headers["ETag"]


async def test_every_unseeable_topic_answers_the_same_404(world: World) -> None:
    partner_only = await world.item("partners", plan="p")
    closed = await world.item("closed", title="c")
    answers = [
        await get(world, path(10_000_000)),  # no such item
        await get(world, path(closed)),  # nothing exported
        await get(world, path(partner_only)),  # unsigned, partner fields only
        await get(world, path(partner_only), signer=world.stranger),  # signed, no partner
        await get(world, path(closed), signer=world.partner),
    ]
    bodies = {(r.status_code, await r.get_data()) for r in answers}
    assert len(bodies) == 1 and next(iter(bodies))[0] == 404
    assert all("Link" not in r.headers for r in answers)


async def test_a_deleted_item_is_gone_for_those_who_saw_it(world: World) -> None:
    shared = await world.item(title="t")
    partner_only = await world.item("partners", plan="p")
    for item in (shared, partner_only):
        assert (await world.admin.delete(f"/api/items/{item}")).status_code == 204
    assert (await get(world, path(shared))).status_code == 410
    assert (await get(world, path(partner_only), signer=world.partner)).status_code == 410
    # Who never could see it learns nothing, not even that it existed.
    hidden = await get(world, path(partner_only))
    assert hidden.status_code == 404
    assert await hidden.get_data() == await (await get(world, path(10_000_001))).get_data()


async def test_bad_signatures_are_401_with_a_reason(world: World) -> None:
    item = await world.item(title="t")
    headers = world.partner.sign("GET", world.base + path(item), {}, b"")
    headers["Signature"] = headers["Signature"][:-6] + "AAAAA:"
    r = await world.client.get(path(item), headers=headers)
    assert r.status_code == 401
    detail = json.loads(await r.get_data())["detail"]
    assert "signature" in detail.lower()
    # Signed for another URL (a signature taken from another request).
    headers = world.partner.sign("GET", world.base + path(item + 1), {}, b"")
    assert (await world.client.get(path(item), headers=headers)).status_code == 401


async def test_admin_view_is_for_admins(world: World) -> None:
    client: QuartClient = world.app.test_client()
    assert (await client.get("/api/federation/subscriptions")).status_code == 401


@pytest.mark.asyncio(loop_scope="function")
async def test_a_pending_subscribe_survives_a_restart(tmp_path: Path, database_url: str
                                                      ) -> None:
    """The intent is in the database: the worker of the next start verifies it."""
    from tests.federation.conftest import make_world

    subscriber = Peer("websub")
    settings = hub_settings(tmp_path, database_url)
    async with serving([subscriber]):
        app = create_app(settings, database=Database(settings.effective_database_url),
                         verifier_config=TEST_VERIFIER)
        async with app.test_app():
            world = await make_world(app, settings.base_url, subscriber, subscriber,
                                     subscriber)
            verifier = app.extensions["fieldcast.federation"].verifier
            await verifier.stop()  # as if the process died before verifying
            item = await world.item(title="t")
            callback = subscriber.callback()
            await world.subscribe(world.topic(item), callback)
            assert (await world.subscriptions(callback))[0]["state"] == "pending_verification"
        assert subscriber.gets(callback) == []
        started = time.monotonic()
        again = create_app(settings, database=Database(settings.effective_database_url),
                           verifier_config=TEST_VERIFIER)
        async with again.test_app():
            world.app, world.admin = again, again.test_client()
            r = await world.admin.post("/api/login", json={"username": "admin",
                                                           "password": "correct horse battery"})
            assert r.status_code == 200
            await world.wait_state(callback, "active")
        assert len(subscriber.gets(callback)) == 1 and time.monotonic() - started < 10
