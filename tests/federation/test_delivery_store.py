"""SqlDeliveryStore writes results in batches: each result still means what it meant
alone (a stale attempt's result is dropped, a retry keeps its backoff, a 410 ends the
subscription), and ``finish`` returns only once its result has committed."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest_asyncio
from sqlalchemy import select, update

from instance.db import Database, make_engine, migrate
from instance.federation.queue import SqlDeliveryStore
from instance.models import FederationDelivery, FederationSubscription
from protocol.states import DeliveryState

NOW = datetime(2030, 1, 1, tzinfo=UTC)


@pytest_asyncio.fixture
async def db(tmp_path: Path) -> AsyncIterator[Database]:
    url = f"sqlite+aiosqlite:///{tmp_path / 'db.sqlite'}"
    engine = make_engine(url)
    await migrate(engine)
    await engine.dispose()
    database = Database(url)
    yield database
    await database.dispose()


async def queue(db: Database, count: int) -> list[int]:
    async with db.write() as session:
        subs = [FederationSubscription(
            topic="https://a.example/federation/items/1", item_id=1,
            callback=f"https://b.example/cb/{n}", subscriber_origin="https://b.example",
            state="active", lease_seconds=86400, lease_expires_at=NOW + timedelta(days=1),
            created_at=NOW, updated_at=NOW, verified_at=NOW) for n in range(count)]
        session.add_all(subs)
        await session.flush()
        session.add_all(FederationDelivery(
            subscription_id=s.id, topic=s.topic, item_id=1, event_id=5, item_version=2,
            fields=["title"], state="pending", attempts=0, next_attempt_at=NOW,
            created_at=NOW, updated_at=NOW) for s in subs)
    return [s.id for s in subs]


async def test_a_batch_of_results_means_what_each_meant_alone(db: Database) -> None:
    await queue(db, 40)
    store = SqlDeliveryStore(db)
    claimed = await store.claim(NOW, 100, timedelta(seconds=60))
    assert len(claimed) == 40
    stale, retry, gone, *done = claimed
    async with db.write() as session:  # another worker took this one after its claim ran out
        await session.execute(update(FederationDelivery).where(
            FederationDelivery.id == stale.id).values(attempts=stale.attempt + 1))
    later = NOW + timedelta(seconds=1)
    await asyncio.gather(
        store.finish(stale, DeliveryState.DONE, now=later, status=202),
        store.finish(retry, DeliveryState.RETRY, now=later, status=500,
                     error="the callback answered 500", retry_at=NOW + timedelta(minutes=1)),
        store.finish(gone, DeliveryState.DEAD, now=later, status=410,
                     error="the callback answered 410 Gone", gone=True),
        *(store.finish(d, DeliveryState.DONE, now=later, status=202) for d in done))
    async with db.read() as session:
        rows = {r.id: r for r in (await session.execute(select(FederationDelivery))).scalars()}
        subs = {s.id: s for s in (await session.execute(
            select(FederationSubscription))).scalars()}
    assert rows[stale.id].state == "in_flight"  # the other worker's result will count
    assert rows[retry.id].state == "retry" and rows[retry.id].last_status == 500
    assert rows[retry.id].next_attempt_at.replace(tzinfo=UTC) == NOW + timedelta(minutes=1)
    assert rows[gone.id].state == "dead" and subs[gone.subscription_id].state == "unsubscribed"
    for d in done:
        assert (rows[d.id].state, rows[d.id].last_status, rows[d.id].claimed_until) == (
            "done", 202, None)
        assert subs[d.subscription_id].last_success_at is not None
    assert subs[stale.subscription_id].last_success_at is None


async def test_one_failing_result_does_not_fail_the_others(db: Database) -> None:
    await queue(db, 3)
    store = SqlDeliveryStore(db)
    a, b, c = await store.claim(NOW, 10, timedelta(seconds=60))
    results = await asyncio.gather(
        store.finish(a, DeliveryState.DONE, now=NOW, status=202),
        store.finish(b, DeliveryState.DONE, now=NOW, status=2**70),  # cannot be stored
        store.finish(c, DeliveryState.DONE, now=NOW, status=202), return_exceptions=True)
    assert results[0] is None and results[2] is None
    assert isinstance(results[1], Exception)
    async with db.read() as session:
        states = {r.id: r.state for r in (await session.execute(
            select(FederationDelivery))).scalars()}
    assert (states[a.id], states[b.id], states[c.id]) == ("done", "in_flight", "done")
