"""`fieldcast federation subscriptions|deliveries` against a data directory: the table,
--json, and that they show what the admin API shows (one query for both)."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

from sqlalchemy.ext.asyncio import AsyncSession

from instance.config import load_settings
from instance.db import Database
from instance.models import FederationDelivery, FederationSubscription, Item, Tracker
from tests.instance.test_cli import run

NOW = datetime(2030, 1, 2, 3, 4, 5, tzinfo=UTC)
PARTNER = "https://b.example"


async def _seed(data: Path) -> int:
    settings = load_settings(data_dir=data, environ={})
    db = Database(settings.effective_database_url)
    try:
        async with db.write(AsyncSession) as session:
            tracker = (await session.execute(
                Tracker.__table__.select().where(Tracker.slug == "bugs"))).one()
            item = Item(tracker_id=tracker.id, version=1, created_at=NOW)
            session.add(item)
            await session.flush()
            topic = f"{settings.base_url}/federation/items/{item.id}"
            public = FederationSubscription(
                topic=topic, item_id=item.id, callback="https://reader.example/cb?x=1",
                state="active", lease_seconds=600, lease_expires_at=NOW + timedelta(days=1),
                created_at=NOW, updated_at=NOW, verified_at=NOW, last_success_at=NOW)
            partner = FederationSubscription(
                topic=topic, item_id=item.id, callback=f"{PARTNER}/federation/callback/1",
                subscriber_origin=PARTNER, secret="s3cret-value", state="active",
                lease_seconds=600, lease_expires_at=NOW + timedelta(days=1),
                created_at=NOW, updated_at=NOW, last_error="callback answered 500",
                last_error_at=NOW)
            session.add_all([public, partner])
            await session.flush()
            session.add(FederationDelivery(
                subscription_id=partner.id, topic=topic, item_id=item.id, event_id=41,
                item_version=1, fields=["plan"], state="retry", attempts=3,
                next_attempt_at=NOW + timedelta(minutes=5), last_status=500,
                last_error="callback answered 500", created_at=NOW, updated_at=NOW))
            return item.id
    finally:
        await db.dispose()


def test_subscriptions_and_deliveries(tmp_path: Path) -> None:
    data = str(tmp_path / "d")
    steps = [
        ("init", "--password-stdin"),
        ("tracker", "add", "bugs"),
        ("field", "add", "bugs", "title", "--export", "public"),
        ("field", "add", "bugs", "plan", "--export", "partners", "--partner", PARTNER),
        ("field", "add", "bugs", "internal"),
    ]
    for step in steps:
        out = run(*step, "--data-dir", data, input="long enough pw\n")
        assert out.returncode == 0, (step, out.stderr)
    empty = run("federation", "subscriptions", "--data-dir", data)
    assert empty.returncode == 0 and empty.stdout.strip() == "no subscriptions"
    item = asyncio.run(_seed(Path(data)))

    out = run("federation", "subscriptions", "--data-dir", data)
    assert out.returncode == 0, out.stderr
    header, *rows = out.stdout.splitlines()
    assert header.split()[:3] == ["STATE", "TOPIC", "CALLBACK"]
    assert len(rows) == 2
    public, partner = rows
    assert "public" in public and "https://reader.example/cb?x=1" in public
    assert " title " in f" {public} " and "plan" not in public
    assert PARTNER in partner and "title,plan" in partner
    assert "callback answered 500" in partner and "2030-01-03T03:04:05Z" in partner
    assert "s3cret" not in out.stdout

    out = run("federation", "subscriptions", "--json", "--data-dir", data)
    subs = json.loads(out.stdout)["subscriptions"]
    assert [s["subscriber_origin"] for s in subs] == [None, PARTNER]
    assert [s["exported_fields"] for s in subs] == [["title"], ["title", "plan"]]
    assert subs[1]["has_secret"] is True and "s3cret" not in out.stdout
    assert all(s["item"] == item for s in subs)

    out = run("federation", "deliveries", "--data-dir", data)
    assert out.returncode == 0, out.stderr
    header, row = out.stdout.splitlines()
    assert header.split()[:2] == ["STATE", "SUBSCRIPTION"]
    assert row.startswith("retry") and f"{PARTNER}/federation/callback/1" in row
    assert "2030-01-02T03:09:05Z" in row and " 500 " in row and row.endswith("41")
    out = run("federation", "deliveries", "--json", "--limit", "1", "--data-dir", data)
    (delivery,) = json.loads(out.stdout)["deliveries"]
    assert delivery["attempts"] == 3 and delivery["event_id"] == 41
    assert delivery["subscription"] == subs[1]["id"] and delivery["fields"] == ["plan"]

    bad = run("federation", "deliveries", "--limit", "0", "--data-dir", data)
    assert bad.returncode == 2 and "must be 1 or more" in bad.stderr
