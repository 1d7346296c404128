"""A hosts a tracker; B and C are partners that each may see part of it. Real
``fieldcast serve`` processes, on SQLite and on PostgreSQL (one database each)."""

from __future__ import annotations

import asyncio
import json
import uuid
from typing import Any

import httpx
import pytest

from tests.harness import Client, LiveSocket, eventually
from tests.scenarios.conftest import World, callback_of, mirrored, sign_ping

pytestmark = [
    pytest.mark.asyncio(loop_scope="module"),
    pytest.mark.parametrize("world", ["sqlite", "postgres"], indirect=True, scope="module"),
]


def token(label: str) -> str:
    """A value that cannot appear anywhere by chance: a leak of it is unmistakable."""
    return f"{label}-{uuid.uuid4().hex[:8]}"


async def everything_seen(partner: Client, item: int, socket: LiveSocket) -> str:
    """All that ``partner`` holds or was sent about A: its API answers for the item and
    its change log, every frame of its socket, every request its callback received."""
    answers = [await partner.item(item), await partner.changes(item=item),
               await partner.outgoing()]
    return "\n".join([json.dumps(answers), *socket.raw,
                      *(json.dumps(r) for r in partner.instance.callback_requests())])


async def test_each_partner_sees_only_what_a_exports_to_it(world: World) -> None:
    title, status, priority = token("title"), token("status"), token("priority")
    a_item = await world.a_item(title=title, status=status, priority=priority)
    b_item = await world.linked(world.b, a_item)
    c_item = await world.linked(world.c, a_item)
    b_live, c_live = await world.b.live([b_item]), await world.c.live([c_item])
    try:
        status2, priority2, title2 = token("status"), token("priority"), token("title")
        await world.a.edit(a_item, "status", status2)
        await world.a.edit(a_item, "priority", priority2)
        await world.a.edit(a_item, "title", title2)
        # Each partner's socket shows what it may see, as it changes on A.
        await b_live.wait_update(b_item, "a_status", status2)
        await b_live.wait_update(b_item, "a_title", title2)
        await c_live.wait_update(c_item, "a_priority", priority2)
        await c_live.wait_update(c_item, "a_title", title2)
        b_fields, c_fields = await world.b.fields(b_item), await world.c.fields(c_item)
        assert (b_fields["a_title"]["value"], b_fields["a_status"]["value"]) == (title2, status2)
        assert (c_fields["a_title"]["value"], c_fields["a_priority"]["value"]) == (title2,
                                                                                   priority2)
        for fields in (b_fields, c_fields):
            assert fields["a_internal"]["value"] is None
            assert fields["a_title"]["remote"]["state"] == "live"
        # Let anything late arrive before looking for leaks.
        await asyncio.sleep(0.5)
        b_saw = await everything_seen(world.b, b_item, b_live)
        c_saw = await everything_seen(world.c, c_item, c_live)
        assert world.b.instance.callback_requests() and world.c.instance.callback_requests()
        assert status2 in b_saw and priority2 in c_saw
        for leaked in (priority, priority2, '"priority"', "A only"):
            assert leaked not in b_saw, f"B saw {leaked}"
        for leaked in (status, status2, '"status"', "A only"):
            assert leaked not in c_saw, f"C saw {leaked}"
    finally:
        await b_live.close()
        await c_live.close()


async def test_revoking_c_clears_its_field_and_leaves_b_alone(world: World) -> None:
    status, priority = token("status"), token("priority")
    a_item = await world.a_item(title=token("title"), status=status, priority=priority)
    b_item = await world.linked(world.b, a_item)
    c_item = await world.linked(world.c, a_item)
    await mirrored(world.c, c_item, "a_priority", priority)
    try:
        # C keeps the title: its subscription goes on, so only a ping can tell it.
        await world.a.export("bugs", "priority", "none")
        cleared = await mirrored(world.c, c_item, "a_priority", None, within=5)
        assert cleared["remote"]["state"] == "no_longer_shared", cleared
        assert "no longer exports field 'priority'" in cleared["remote"]["reason"]
        c_fields = await world.c.fields(c_item)
        assert c_fields["a_title"]["remote"]["state"] == "live"
        b_fields = await world.b.fields(b_item)
        assert b_fields["a_status"]["value"] == status
        assert b_fields["a_status"]["remote"]["state"] == "live"
    finally:
        await world.exports_for()


async def test_b_killed_converges_after_restart(world: World) -> None:
    a_item = await world.a_item(title=token("title"), status="before")
    b_item = await world.linked(world.b, a_item)
    await mirrored(world.b, b_item, "a_status", "before")
    world.proc("b").kill()
    newest = token("newest")
    for value in (token("meanwhile"), newest):
        await world.a.edit(a_item, "status", value)
    await asyncio.to_thread(world.proc("b").start)
    # Nobody pings B again for its backoff (30 s and more); B catches up by itself.
    f = await mirrored(world.b, b_item, "a_status", newest, within=10)
    assert f["remote"]["state"] == "live"


async def test_a_down_b_shows_stale_then_converges(world: World) -> None:
    a_item = await world.a_item(title=token("title"), status="before")
    b_item = await world.linked(world.b, a_item)
    await mirrored(world.b, b_item, "a_status", "before")
    callback = await callback_of(world.b, world, a_item)
    # A ping leaves A as A goes down (signed with A's key, which B has cached), so B
    # tries to fetch while A does not answer.
    # The version B holds (A's topic version for B: an event id, not the item's own).
    (followed,) = await world.b.outgoing(world.a.topic(a_item))
    version = followed["remote_version"]
    async with httpx.AsyncClient() as http:
        # B checks A's signatures with A's published keys: have it hold them now.
        warm, warm_headers = sign_ping(world, world.b, a_item, version, callback)
        assert (await http.post(callback, content=warm, headers=warm_headers)).status_code == 202
        body, headers = sign_ping(world, world.b, a_item, version + 1, callback)
        world.proc("a").stop()
        r = await http.post(callback, content=body, headers=headers)
    try:
        assert r.status_code == 202, r.text

        async def stale() -> dict[str, Any]:
            f = (await world.b.fields(b_item))["a_status"]
            assert f["remote"]["state"] == "stale", f
            return dict(f)
        f = await eventually(stale)
        assert f["value"] == "before" and f["remote"]["stale_since"]
        newest = token("while-down")
        await asyncio.to_thread(world.proc("a").edit_offline, a_item, "status", newest)
    finally:
        await asyncio.to_thread(world.proc("a").start)
    f = await mirrored(world.b, b_item, "a_status", newest, within=10)
    assert f["remote"]["state"] == "live"
