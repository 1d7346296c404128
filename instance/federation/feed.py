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
from sqlalchemy.ext.asyncio import AsyncSession

from hub.changes import Change
from instance import changelog
from instance.clock import as_utc
from instance.federation.exports import feed_exports
from instance.federation.service import federation
from instance.federation.urls import FEED_PATH, feed_url, hub_url, topic_url
from instance.models import Item, Tracker
from instance.rights import FieldDef
from protocol.documents import etag_matches
from protocol.links import build_link_header

bp = Blueprint("federation_feed", __name__)

ATOM = "application/atom+xml"
#: Entries per feed: a reader polls often, and the item topics hold the full state.
FEED_ENTRIES = 50
NOT_FOUND = {"error": "not_found",
             "detail": "this feed does not exist: the tracker is unknown or has no public "
                       "field"}


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


async def feed_document(session: AsyncSession, base_url: str, instance: str, slug: str
                        ) -> bytes | None:
    """The feed's bytes, as ``GET`` serves them to anyone, or None when there is no
    feed (unknown tracker, no public field). The delivery worker's fat ping to a feed
    subscriber sends these same bytes."""
    found = await feed_exports(session, slug)
    if found is None:
        return None
    tracker, fields = found
    epoch = await changelog.epoch(session)
    changes = await changelog.recent(session, tracker.id, [f.id for f in fields],
                                     FEED_ENTRIES)
    alive = set((await session.execute(select(Item.id).where(
        Item.id.in_({c.item for c in changes})))).scalars())
    return render(base_url, instance, tracker, fields,
                  [c for c in changes if c.item in alive], epoch)


def feed_headers(base_url: str, slug: str) -> dict[str, str]:
    """``Link`` (hub and self, REC §4/§7), as both the GET and the fat ping send it."""
    return {"Link": build_link_header(hub=hub_url(base_url), self_url=feed_url(base_url, slug))}


@bp.get(FEED_PATH)
async def feed(slug: str) -> Response:
    service = federation()
    base = service.settings.base_url
    async with service.db.read() as session:
        body = await feed_document(session, base, service.settings.instance_name, slug)
    if body is None:
        return Response(json.dumps(NOT_FOUND), 404, content_type="application/json")
    tag = strong_etag(body)
    headers = {
        "ETag": tag,
        **feed_headers(base, slug),
        # Public, but changing at any moment: caches may keep it only to revalidate.
        "Cache-Control": "no-cache",
    }
    if etag_matches(request.headers.get("If-None-Match"), tag):
        return Response(b"", 304, headers)
    return Response(body, 200, headers, content_type=ATOM)
