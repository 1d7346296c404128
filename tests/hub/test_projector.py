"""The projector's pure step: what an export change owes the subscriptions left."""

from __future__ import annotations

from datetime import UTC, datetime

from hub.changes import Change, ChangeKind
from hub.projector import Audience, project

AT = datetime(2026, 1, 1, tzinfo=UTC)


def test_an_export_change_owes_a_recheck_to_subscriptions_that_still_see_something() -> None:
    export = Change(event=40, kind=ChangeKind.EXPORT, at=AT, tracker=7, field="priority")
    still = Audience(1, "https://a/federation/items/3", 3, frozenset({"title"}), 7, 12)
    nothing = Audience(2, "https://a/federation/items/3", 3, frozenset(), 7, 12)
    other_tracker = Audience(3, "https://a/federation/items/9", 9, frozenset({"x"}), 8, 2)
    owed, endings = project([export], [], [still, nothing, other_tracker])
    # The one that still sees something: a ping with no field names, the item's version.
    assert [(o.subscription_id, o.item_version, o.event_id, o.fields) for o in owed] == [
        (1, 12, 40, set())]
    # The one that sees nothing is ended, as before; another tracker's is left alone.
    assert [e.subscription_id for e in endings] == [2]


def test_a_recheck_joins_a_value_change_of_the_same_batch() -> None:
    value = Change(event=41, kind=ChangeKind.VALUE, at=AT, item=3, tracker=7, field="title",
                   item_version=13)
    export = Change(event=42, kind=ChangeKind.EXPORT, at=AT, tracker=7, field="priority")
    sub = Audience(1, "https://a/federation/items/3", 3, frozenset({"title"}), 7, 13)
    owed, _ = project([value, export], [sub], [sub])
    assert [(o.event_id, o.item_version, o.fields) for o in owed] == [(42, 13, {"title"})]


def test_a_rights_change_owes_no_ping() -> None:
    rights = Change(event=5, kind=ChangeKind.RIGHTS, at=AT, subject=1)
    sub = Audience(1, "https://a/federation/items/3", 3, frozenset({"title"}), 7, 1)
    assert project([rights], [], [sub]) == ([], [])
