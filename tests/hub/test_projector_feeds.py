"""hub.projector.project with feed subscriptions: what a batch owes a tracker's feed."""

from __future__ import annotations

from datetime import UTC, datetime

from hub.changes import Change, ChangeKind
from hub.projector import Audience, Ending, Owed, project

AT = datetime(2025, 1, 1, tzinfo=UTC)
ITEM = Audience(1, "https://a.example/federation/items/10", 10, frozenset({"title", "plan"}))
FEED = Audience(2, "https://a.example/federation/trackers/t/feed.atom", None,
                frozenset({"title"}), tracker_id=5)
OTHER_FEED = Audience(3, "https://a.example/federation/trackers/u/feed.atom", None,
                      frozenset({"title"}), tracker_id=6)


def value(event: int, item: int, field: str, tracker: int = 5) -> Change:
    return Change(event, ChangeKind.VALUE, AT, item=item, tracker=tracker, field=field,
                  item_version=event)


def test_public_changes_and_deletions_of_the_tracker_are_owed_to_its_feed() -> None:
    changes = [value(1, 10, "plan"), value(2, 11, "title"), value(3, 10, "title"),
               Change(4, ChangeKind.ITEM_DELETED, AT, item=12, tracker=5)]
    owed, endings = project(changes, [ITEM, FEED, OTHER_FEED], [])
    assert endings == []
    by_sub = {o.subscription_id: o for o in owed}
    assert set(by_sub) == {1, 2}  # the other tracker's feed is owed nothing
    assert by_sub[1] == Owed(1, ITEM.topic, 10, 3, 3, {"plan", "title"})
    # One coalesced row for the feed: newest event, no item version, the public field.
    assert by_sub[2] == Owed(2, FEED.topic, None, 4, 0, {"title"}, tracker_id=5)


def test_a_partner_only_change_is_owed_to_no_feed() -> None:
    owed, _ = project([value(1, 10, "plan")], [FEED], [])
    assert owed == []


def test_a_feed_with_no_public_field_left_ends() -> None:
    emptied = Audience(2, FEED.topic, None, frozenset(), tracker_id=5)
    _, endings = project([Change(1, ChangeKind.EXPORT, AT, tracker=5, field="title")],
                         [], [emptied, OTHER_FEED])
    assert [e.subscription_id for e in endings] == [2]
    assert isinstance(endings[0], Ending)
