"""The projector's pure step: what an export change owes the subscriptions left."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from hub.changes import Change, ChangeKind
from hub.projector import Audience, Projector, ProjectorConfig, project

AT = datetime(2026, 1, 1, tzinfo=UTC)


def test_an_export_change_owes_a_recheck_to_subscriptions_that_still_see_something() -> None:
    export = Change(event=40, kind=ChangeKind.EXPORT, at=AT, tracker=7, field="priority")
    still = Audience(1, "https://a/federation/items/3", 3, frozenset({"title"}), 7)
    nothing = Audience(2, "https://a/federation/items/3", 3, frozenset(), 7)
    other_tracker = Audience(3, "https://a/federation/items/9", 9, frozenset({"x"}), 8)
    owed, endings = project([export], [], [still, nothing, other_tracker])
    # The one that still sees something: a ping with no field names, at the export's
    # event (the version its topic answers now).
    assert [(o.subscription_id, o.item_version, o.event_id, o.fields) for o in owed] == [
        (1, 40, 40, set())]
    # The one that sees nothing is ended, as before; another tracker's is left alone.
    assert [e.subscription_id for e in endings] == [2]


def test_a_recheck_joins_a_value_change_of_the_same_batch() -> None:
    value = Change(event=41, kind=ChangeKind.VALUE, at=AT, item=3, tracker=7, field="title",
                   item_version=13)
    export = Change(event=42, kind=ChangeKind.EXPORT, at=AT, tracker=7, field="priority")
    sub = Audience(1, "https://a/federation/items/3", 3, frozenset({"title"}), 7)
    owed, _ = project([value, export], [sub], [sub])
    assert [(o.event_id, o.item_version, o.fields) for o in owed] == [(42, 42, {"title"})]


def test_a_hidden_value_change_owes_nothing_and_a_ping_carries_its_event() -> None:
    hidden = Change(event=50, kind=ChangeKind.VALUE, at=AT, item=3, tracker=7, field="cost",
                    item_version=20)
    shown = Change(event=51, kind=ChangeKind.VALUE, at=AT, item=3, tracker=7,
                   field="title", item_version=21)
    sub = Audience(1, "https://a/federation/items/3", 3, frozenset({"title"}), 7)
    assert project([hidden], [sub], []) == ([], [])
    owed, _ = project([hidden, shown], [sub], [])
    # The version is the event, not the item's count of every change (21).
    assert [(o.event_id, o.item_version, o.fields) for o in owed] == [(51, 51, {"title"})]


def test_a_rights_change_owes_no_ping() -> None:
    rights = Change(event=5, kind=ChangeKind.RIGHTS, at=AT, subject=1)
    sub = Audience(1, "https://a/federation/items/3", 3, frozenset({"title"}), 7)
    assert project([rights], [], [sub]) == ([], [])


class MemoryStore:
    """The ProjectorStore interface over a list; counts the transactions that write."""

    def __init__(self) -> None:
        self.log: list[Change] = []
        self.durable = 0
        self.commits: list[tuple[int, int, int]] = []  # (before, after, owed)
        self.subscribed: set[int] = set()

    async def cursor(self) -> int:
        return self.durable

    async def read(self, after: int, limit: int) -> list[Change]:
        return [c for c in self.log if c.event > after][:limit]

    async def audience(self, items: dict[int, int | None]) -> list[Audience]:
        return [Audience(1, f"https://a/federation/items/{i}", i, frozenset({"title"}), 7)
                for i in items if i in self.subscribed]

    async def tracker_audience(self, tracker: int | None) -> list[Audience]:
        return []

    async def commit(self, owed: Any, endings: Any, before: int, after: int, now: datetime
                     ) -> bool:
        if before != self.durable:
            return False
        self.commits.append((before, after, len(owed)))
        self.durable = after
        return True

    def save(self, item: int) -> None:
        self.log.append(Change(event=len(self.log) + 1, kind=ChangeKind.VALUE, at=AT,
                               item=item, tracker=7, field="title", item_version=1))


async def test_batches_that_owe_nothing_do_not_write_per_save() -> None:
    store = MemoryStore()
    projector = Projector(store, ProjectorConfig(cursor_flush=3600))
    for _ in range(5):  # saves nobody subscribed to: no write transaction each
        store.save(1)
        await projector.run_once()
    assert store.commits == []
    store.subscribed.add(2)
    store.save(2)  # owed: one commit moves the durable cursor over all six
    await projector.run_once()
    assert store.commits == [(0, 6, 1)]
    store.save(1)
    await projector.run_once()
    await projector.stop()  # what is only in memory is written down at stop
    assert store.commits[-1] == (6, 7, 0) and store.durable == 7
