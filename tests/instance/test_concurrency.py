"""Concurrent saves against a real server: exactly one stale-version race winner, and a
change log with no gap and no duplicate. SQLite and PostgreSQL, one and two workers."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.harness import RunningInstance

RACERS = 16


@pytest.fixture(params=[1, 2], ids=["1worker", "2workers"])
def instance(request: pytest.FixtureRequest, tmp_path: Path, database_url: str
             ) -> Iterator[RunningInstance]:
    workers = request.param
    if workers > 1 and database_url.startswith("sqlite"):
        pytest.skip("several workers need PostgreSQL (SQLite has one writer process)")
    inst = RunningInstance.create(tmp_path, "a", database_url=database_url, workers=workers)
    inst.start()
    yield inst
    inst.stop()


async def _setup(admin: httpx.AsyncClient) -> int:
    (await admin.post("/api/trackers", json={"slug": "bugs"})).raise_for_status()
    for name in ("title", "status", "notes"):
        (await admin.post("/api/trackers/bugs/fields", json={"name": name})).raise_for_status()
    r = await admin.post("/api/trackers/bugs/items", json={"fields": {"title": "first"}})
    r.raise_for_status()
    return r.json()["id"]


async def test_same_if_match_exactly_one_wins(instance: RunningInstance) -> None:
    admin = await instance.client()
    item = await _setup(admin)
    clients = [httpx.AsyncClient(base_url=instance.base_url, cookies=admin.cookies, timeout=30)
               for _ in range(RACERS)]
    responses = await asyncio.gather(*(
        c.patch(f"/api/items/{item}/fields/title", json={"value": f"racer {i}"},
                headers={"If-Match": '"1"'})
        for i, c in enumerate(clients)
    ))
    statuses = sorted(r.status_code for r in responses)
    assert statuses == [200] + [412] * (RACERS - 1), statuses
    winner = next(r.json() for r in responses if r.status_code == 200)
    for r in responses:
        if r.status_code == 412:
            assert r.json()["current"] == {
                "value": winner["value"], "version": 2,
                "updated_at": winner["updated_at"], "updated_by": "admin",
            }
    current = (await admin.get(f"/api/items/{item}/fields/title")).json()
    assert (current["value"], current["version"]) == (winner["value"], 2)
    log = (await admin.get("/api/changes?since=0")).json()["changes"]
    # The item's creation, its first title, the one winning save.
    assert log[0]["created"] and [c["event"] for c in log] == [log[0]["event"] + i
                                                               for i in range(3)]
    assert log[2]["value"] == winner["value"] and log[2]["old_version"] == 1
    for c in clients:
        await c.aclose()
    await admin.aclose()


async def test_concurrent_saves_leave_a_gapless_log(instance: RunningInstance) -> None:
    admin = await instance.client()
    item = await _setup(admin)
    fields = ("title", "status", "notes")
    saves = 3 * RACERS
    async with httpx.AsyncClient(base_url=instance.base_url, cookies=admin.cookies,
                                 timeout=30) as c:
        # Last-write-wins saves from many concurrent requests, on three fields.
        responses = await asyncio.gather(*(
            c.patch(f"/api/items/{item}/fields/{fields[i % 3]}", json={"value": f"v{i}"})
            for i in range(saves)
        ))
    assert all(r.status_code == 200 for r in responses), [r.text for r in responses]
    created = (await admin.get("/api/changes?since=0")).json()["changes"][0]["event"]
    first = created + 1  # the item's creation, then its first title
    events = sorted(r.json()["event"] for r in responses)
    # The item's creation came first; then every save got its own next id, no gap.
    assert events == list(range(first + 1, first + saves + 1))
    log = (await admin.get(f"/api/changes?since=0&limit={first + saves + 10}")).json()
    assert [c["event"] for c in log["changes"]] == list(range(created, first + saves + 1))
    assert log["head"] == first + saves
    for name in fields:
        chain = [c for c in log["changes"] if c["field"] == name]
        # Each field's versions form a chain 0->1->2->… with no gap or repeat.
        assert [(c["old_version"], c["version"]) for c in chain] == [
            (v, v + 1) for v in range(len(chain))
        ]
        current = (await admin.get(f"/api/items/{item}/fields/{name}")).json()
        assert current["version"] == len(chain)
        assert current["value"] == chain[-1]["value"]
    item_versions = [c["item_version"] for c in log["changes"]]
    assert item_versions == [0, *range(1, saves + 2)]
    await admin.aclose()
