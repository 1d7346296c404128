"""This instance's federation URLs: one topic per item, one Atom feed per tracker, one hub."""

from __future__ import annotations

import re

TOPIC_PATH = "/federation/items/"
HUB_PATH = "/federation/hub"
FEED_PATH = "/federation/trackers/<slug>/feed.atom"
_ITEM_ID = re.compile(r"[1-9][0-9]{0,17}")


def topic_url(base_url: str, item_id: int) -> str:
    return f"{base_url}{TOPIC_PATH}{item_id}"


def hub_url(base_url: str) -> str:
    return f"{base_url}{HUB_PATH}"


def feed_url(base_url: str, slug: str) -> str:
    """The Atom feed of a tracker's public fields (slugs are URL-safe: [a-z0-9_])."""
    return base_url + FEED_PATH.replace("<slug>", slug)


def item_of_topic(base_url: str, topic: str) -> int | None:
    """The item a topic URL of this instance names, or None if it is not one of ours.

    Exact match only, as REC §5.1.1 lets a hub refuse what is not the advertised
    ``rel=self`` URL: one spelling per topic keeps (topic, callback) a single key.
    """
    prefix = base_url + TOPIC_PATH
    if not topic.startswith(prefix):
        return None
    rest = topic[len(prefix):]
    return int(rest) if _ITEM_ID.fullmatch(rest) else None
