"""This instance's federation URLs: one topic per item, one Atom feed per tracker (also a
topic of the hub), one hub."""

from __future__ import annotations

import re

TOPIC_PATH = "/federation/items/"
HUB_PATH = "/federation/hub"
FEED_PATH = "/federation/trackers/<slug>/feed.atom"
_ITEM_ID = re.compile(r"[1-9][0-9]{0,17}")
#: A tracker slug, as ``fieldtypes.check_name`` allows it.
_SLUG = re.compile(r"[a-z][a-z0-9_]{0,63}")
_FEED_PREFIX, _FEED_SUFFIX = FEED_PATH.split("<slug>")


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


def feed_of_topic(base_url: str, topic: str) -> str | None:
    """The tracker slug a feed URL of this instance names, or None (exact match, as
    ``item_of_topic``)."""
    prefix = base_url + _FEED_PREFIX
    if not topic.startswith(prefix) or not topic.endswith(_FEED_SUFFIX):
        return None
    slug = topic[len(prefix):len(topic) - len(_FEED_SUFFIX)]
    return slug if _SLUG.fullmatch(slug) else None
