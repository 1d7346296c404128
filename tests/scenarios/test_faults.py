"""What goes wrong between instances, on SQLite and PostgreSQL: a key rotation while
serving, a partner whose callback hangs or fails, a sender whose clock is an hour ahead."""

from __future__ import annotations

import asyncio
import time
import uuid
from typing import Any

import httpx
import pytest

from tests.harness import eventually
from tests.scenarios.conftest import World, callback_of, mirrored, sign_ping

pytestmark = [
    pytest.mark.asyncio(loop_scope="module"),
    pytest.mark.parametrize("world", ["sqlite", "postgres"], indirect=True, scope="module"),
]

OVERLAP = 4.0  # seconds the previous key still verifies after the rotation


def token(label: str) -> str:
    return f"{label}-{uuid.uuid4().hex[:8]}"


async def post(url: str, signed: tuple[bytes, dict[str, str]]) -> httpx.Response:
    async with httpx.AsyncClient() as http:
        return await http.post(url, content=signed[0], headers=signed[1])


async def deliveries_to(world: World, topic: str, callback_base: str) -> list[dict[str, Any]]:
    return [d for d in await world.a.deliveries()
            if d["topic"] == topic and d["callback"].startswith(callback_base)]


async def test_key_rotation_reaches_the_running_host_and_partners_follow(world: World) -> None:
    a_item = await world.a_item(status="before")
    b_item = await world.linked(world.b, a_item)
    first = token("first")
    await world.a.edit(a_item, "status", first)
    await mirrored(world.b, b_item, "a_status", first)  # B holds A's key now
    a = world.proc("a")
    old = a.key_store().current("ed25519")
    done = await asyncio.to_thread(a.cli, "keys", "rotate", "--alg", "ed25519",
                                   "--overlap-hours", f"{OVERLAP / 3600:.6f}")
    assert done.returncode == 0, done.stderr
    rotated_at = time.time()
    new = a.key_store().current("ed25519")
    assert new.record.kid != old.record.kid
    # The running A publishes both keys at once, and signs with the new one.
    published = {k["id"].rsplit("/", 1)[1] for k in (await world.a.well_known())["keys"]}
    assert {old.record.kid, new.record.kid} <= published
    await asyncio.sleep(1.1)  # key_refetch_seconds: B may look at A's keys again
    after = token("after-rotation")
    await world.a.edit(a_item, "status", after)
    # An unknown keyId: B fetches A's key document again and accepts the ping.
    await mirrored(world.b, b_item, "a_status", after, within=5)
    callback = await callback_of(world.b, world, a_item)
    version = (await world.a.item(a_item))["version"]
    r = await post(callback, sign_ping(world, world.b, a_item, version, callback, key=old))
    assert r.status_code == 202, f"within the overlap the old key verifies: {r.text}"
    await asyncio.sleep(max(0.0, rotated_at + OVERLAP + 0.5 - time.time()))
    r = await post(callback, sign_ping(world, world.b, a_item, version, callback, key=old))
    assert r.status_code == 401, f"after the overlap the old key is refused: {r.text}"
    r = await post(callback, sign_ping(world, world.b, a_item, version, callback))
    assert r.status_code == 202, r.text
    published = {k["id"].rsplit("/", 1)[1] for k in (await world.a.well_known())["keys"]}
    assert old.record.kid not in published


@pytest.mark.parametrize("fault", ["hang", "error"])
async def test_a_failing_partner_does_not_delay_the_others(world: World, fault: str) -> None:
    a_item = await world.a_item(title="before")
    b_item = await world.linked(world.b, a_item)
    c_item = await world.linked(world.c, a_item)
    c = world.proc("c")
    c.callback_fault(fault, seconds=8)
    try:
        title = token("title")
        started = time.monotonic()
        await world.a.edit(a_item, "title", title)
        await mirrored(world.b, b_item, "a_title", title, within=5)
        assert time.monotonic() - started < 2.0, "B waited for C's callback"
        if fault == "hang":
            # C's callback answers after its hang; C gets the value too.
            await mirrored(world.c, c_item, "a_title", title, within=15)
        else:
            async def retrying() -> list[dict[str, Any]]:
                rows = await deliveries_to(world, world.a.topic(a_item), world.c.base)
                assert any(d["state"] == "retry" and d["last_status"] == 500 for d in rows), rows
                return rows
            await eventually(retrying)
            assert (await world.c.fields(c_item))["a_title"]["value"] == "before"
    finally:
        c.callback_fault(None)


async def test_a_signature_outside_the_skew_is_refused_until_the_clock_is_right(
        world: World) -> None:
    a_item = await world.a_item(status="before")
    b_item = await world.linked(world.b, a_item)
    a = world.proc("a")
    await asyncio.to_thread(a.shift_clock, 3600)
    try:
        await world.a.edit(a_item, "status", token("from-the-future"))

        async def refused() -> list[dict[str, Any]]:
            rows = await deliveries_to(world, world.a.topic(a_item), world.b.base)
            assert any(d["last_status"] == 401 for d in rows), rows
            return rows
        await eventually(refused)
        assert (await world.b.fields(b_item))["a_status"]["value"] == "before"
    finally:
        await asyncio.to_thread(a.shift_clock, 0)
    # The clock is right again: a ping that is not waiting out a backoff goes through.
    other = await world.a_item(status="before")
    b_other = await world.linked(world.b, other)
    now_right = token("on-time")
    await world.a.edit(other, "status", now_right)
    # Generous: a loaded machine restarts instances slowly; this test is about refusal.
    await mirrored(world.b, b_other, "a_status", now_right, within=15)
