"""``GET /federation/trackers/<slug>/feed.atom``: a tracker's public changes as Atom.

For plain feed readers and WebSub subscribers that know feeds, not fieldcast topics.
Only fields whose ``export_mode`` is "public" *now* are in it, read from the change log
newest first: a partner-only or unexported field never is, nor a deleted field (its id
is no longer a field of the tracker), nor a deleted item. Hub and self are advertised
both as ``Link`` headers and inside the feed (WebSub REC §4: a subscriber checks the
headers first, then the document).

A tracker that does not exist and one with no public field answer the same 404, so the
feed tells nobody which trackers exist.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any
from urllib.parse import urlsplit

from feedgen.feed import FeedGenerator
from quart import Blueprint, Response, request
from sqlalchemy import select

from hub.changes import Change
from instance import changelog
from instance.clock import as_utc
from instance.federation.service import federation
from instance.federation.urls import FEED_PATH, feed_url, hub_url, topic_url
from instance.models import Item, Tracker
from instance.rights import FieldDef, load_fields
from protocol.documents import etag_matches
from protocol.links import build_link_header

bp = Blueprint("federation_feed", __name__)

ATOM = "application/atom+xml"
#: Entries per feed: a reader polls often, and the item topics hold the full state.
FEED_ENTRIES = 50
NOT_FOUND = {"error": "not_found",
             "detail": "this feed does not exist: the tracker is unknown or has no public "
                       "field"}


def public_fields(fields: list[FieldDef]) -> list[FieldDef]:
    return [f for f in fields if f.export_mode == "public"]


def value_text(value: Any) -> str:
    """A field value as plain text: what a feed reader shows."""
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, list):
        return ", ".join(value_text(v) for v in value)
    if isinstance(value, int | float):
        return str(value)
    return json.dumps(value, ensure_ascii=False, sort_keys=True)


def entry_id(base_url: str, tracker: Tracker, epoch: str, event: int) -> str:
    """A tag URI (RFC 4151) per change: stable across renders, and across trackers and
    log epochs distinct (event ids restart when the log's epoch changes)."""
    host = urlsplit(base_url).hostname or "localhost"
    return f"tag:{host},{as_utc(tracker.created_at):%Y-%m-%d}:{tracker.slug}/{epoch}/{event}"


def render(base_url: str, instance: str, tracker: Tracker, fields: list[FieldDef],
           changes: list[Change], epoch: str) -> bytes:
    """The Atom document, newest change first; the same input gives the same bytes."""
    self_url, hub = feed_url(base_url, tracker.slug), hub_url(base_url)
    labels = {f.id: f.label or f.name for f in fields}
    fg = FeedGenerator()
    fg.id(self_url)
    fg.title(f"{tracker.name} · {instance}")
    fg.subtitle(f"Changes of the public fields of {tracker.name}")
    fg.author({"name": instance})
    fg.link(href=self_url, rel="self", type=ATOM)
    fg.link(href=hub, rel="hub")
    fg.generator("fieldcast")
    fg.updated(changes[0].at if changes else as_utc(tracker.created_at))
    # feedgen prepends each entry: add the oldest first so the newest leads the document.
    for change in reversed(changes):
        assert change.item is not None and change.field_id is not None
        label = labels.get(change.field_id, change.field or "")
        entry = fg.add_entry()
        entry.id(entry_id(base_url, tracker, epoch, change.event))
        entry.title(f"#{change.item} {label}")
        entry.updated(change.at)
        entry.link(href=topic_url(base_url, change.item), rel="alternate")
        entry.content(value_text(change.value), type="text")
    return bytes(fg.atom_str(pretty=False))


def strong_etag(body: bytes) -> str:
    return '"' + hashlib.sha256(body).hexdigest()[:32] + '"'


@bp.get(FEED_PATH)
async def feed(slug: str) -> Response:
    service = federation()
    base = service.settings.base_url
    async with service.db.read() as session:
        tracker = await session.scalar(select(Tracker).where(Tracker.slug == slug))
        fields = public_fields((await load_fields(session, [tracker.id]))[tracker.id]
                               ) if tracker is not None else []
        if tracker is None or not fields:
            return Response(json.dumps(NOT_FOUND), 404, content_type="application/json")
        epoch = await changelog.epoch(session)
        changes = await changelog.recent(session, tracker.id, [f.id for f in fields],
                                         FEED_ENTRIES)
        alive = set((await session.execute(select(Item.id).where(
            Item.id.in_({c.item for c in changes})))).scalars())
    body = render(base, service.settings.instance_name, tracker, fields,
                  [c for c in changes if c.item in alive], epoch)
    tag = strong_etag(body)
    headers = {
        "ETag": tag,
        "Link": build_link_header(hub=hub_url(base), self_url=feed_url(base, slug)),
        # Public, but changing at any moment: caches may keep it only to revalidate.
        "Cache-Control": "no-cache",
    }
    if etag_matches(request.headers.get("If-None-Match"), tag):
        return Response(b"", 304, headers)
    return Response(body, 200, headers, content_type=ATOM)
