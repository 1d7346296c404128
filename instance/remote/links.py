"""Linking an item of this instance to an item of another: discovery, the first fetch,
the subscription; and unlinking.

Linking does, in order, and keeps nothing when a step fails:

1. **Discovery.** From an item page URL (``{A}/items/N``): A's ``/.well-known/fieldcast``
   must answer a fieldcast document; the topic is ``{base_url}/federation/items/N``
   (PROTOCOL.md, "URLs"). From a topic URL: its own ``Link`` headers (rel=hub, rel=self;
   we subscribe with rel=self), then the well-known document's ``hub``.
2. **First fetch.** A signed ``GET`` of the topic: the answer must be an exported-item
   document of that topic, on that instance, holding at least one field that a remote
   field of the item's tracker mirrors (``options.source``: instance, tracker, field).
3. **Subscribe.** A signed subscribe to the hub, callback
   ``{base_url}/federation/callback/{token}``. Its row is written before the request (the
   hub may verify before it answers) and removed again if the hub refuses.
4. **Link.** In one change-log transaction: the link row, the item's ``remote_url``, and
   the fetched values in its remote fields.
"""

from __future__ import annotations

import json
import re
import secrets
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from sqlalchemy import select

from hub.fetcher import get_topic, send_hub_request
from hub.outbound import Outbound, OutboundError
from instance import items, trackers
from instance.accounts import iso, now
from instance.errors import ApiError, not_found
from instance.federation.exports import normalize_origin
from instance.models import Item, RemoteLink, RemoteSubscription
from instance.remote import mirror, store
from instance.remote.service import RemoteService
from instance.remote.store import GONE, LIVE, Event, State
from protocol.documents import ExportedItem
from protocol.errors import ProtocolError
from protocol.links import discover

_ITEM_PAGE = re.compile(r"^/items/([1-9][0-9]{0,17})/?$")
TOPIC_PATH = "/federation/items/"


def _fail(error: str, detail: str) -> ApiError:
    return ApiError(422, error, detail)


@dataclass(frozen=True)
class Found:
    instance: str  # origin
    topic: str  # the rel=self URL
    hub: str
    item_url: str
    document: ExportedItem
    etag: str | None


async def _well_known(http: Outbound, origin: str) -> dict[str, Any]:
    url = f"{origin}/.well-known/fieldcast"
    try:
        response = await http.request("GET", url, headers=[("accept", "application/json")],
                                      max_bytes=256 * 1024)
    except OutboundError as exc:
        raise _fail("unreachable", f"the instance at {origin} does not answer: {exc.reason}"
                    ) from None
    doc: Any = None
    if response.status == 200:
        try:
            doc = json.loads(response.body)
        except ValueError:
            doc = None
    if not isinstance(doc, dict) or doc.get("fieldcast") != 1 or not isinstance(
            doc.get("base_url"), str):
        raise _fail("not_fieldcast", f"{origin} is not a fieldcast instance: {url} answered "
                    f"{response.status} without a fieldcast document")
    return doc


async def find(service: RemoteService, url: str) -> Found:
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise _fail("invalid", "give the http(s) URL of an item page on the other instance "
                    "(https://a.example/items/7) or of its topic")
    http = service.federation.outbound
    assert http is not None
    origin = normalize_origin(url)
    well_known: dict[str, Any] | None = None
    page = _ITEM_PAGE.match(parts.path)
    if page and not parts.query:
        well_known = await _well_known(http, origin)
        base = str(well_known["base_url"]).rstrip("/")
        url = f"{base}{TOPIC_PATH}{page.group(1)}"
        origin = normalize_origin(base)
    answer = await get_topic(http, service.sign, url)
    if answer.kind == "failed" and answer.status is None:
        raise _fail("unreachable", f"the instance at {origin} does not answer: "
                    f"{answer.reason.removeprefix('the host does not answer: ')}")
    if answer.status == 404:
        raise _fail("nothing_exported", f"{url} is no topic of {origin}, or {origin} exports "
                    f"no field of it to this instance ({service.settings.base_url})")
    if answer.status == 410:
        raise _fail("gone", f"the item of {url} was deleted on {origin}")
    doc = answer.document
    if answer.kind != "ok" or doc is None:
        raise _fail("not_fieldcast", f"{url} is not a fieldcast topic: {answer.reason}")
    try:
        links = discover(answer.links, base_url=url) if answer.links else None
    except ProtocolError as exc:
        raise _fail("not_fieldcast", f"{url} has a bad Link header: {exc}") from None
    self_url = links.self_url if links and links.self_url else doc.topic
    if normalize_origin(doc.topic) != origin or self_url != doc.topic:
        raise _fail("not_fieldcast", f"{url} answered the document of {doc.topic}, which is "
                    f"not this topic of {origin}")
    hub = links.hubs[0] if links and links.hubs else None
    if hub is None:
        well_known = well_known or await _well_known(http, origin)
        hub = well_known.get("hub") if isinstance(well_known.get("hub"), str) else None
    if not hub:
        raise _fail("not_fieldcast", f"{origin} advertises no hub for {doc.topic}")
    return Found(origin, doc.topic, hub, f"{origin}/items/{doc.item}", doc, answer.etag)


def _names(fields: list[Any]) -> str:
    return ", ".join(repr(f.name) for f in fields)


async def link(service: RemoteService, item_id: int, url: str) -> None:
    async with service.db.read() as session:
        _, tracker = await items.get_item(session, item_id)
        fields = await trackers.tracker_fields(session, tracker)
    remote_fields = [f for f in fields if f.type == "remote"]
    if not remote_fields:
        raise _fail("no_remote_fields", f"tracker {tracker.slug!r} has no remote fields; "
                    "add one whose options.source names the other instance's tracker and "
                    "field, then link")
    found = await find(service, url)
    doc = found.document
    matched = mirror.mirrored_fields(remote_fields, found.instance, doc.tracker)
    if not matched:
        mirrors = sorted({f"{mirror.source_of(f).get('tracker')} on "
                          f"{mirror.source_of(f).get('instance')}" for f in remote_fields})
        raise _fail("nothing_exported", f"no remote field of tracker {tracker.slug!r} "
                    f"mirrors tracker {doc.tracker!r} of {found.instance}; they mirror "
                    f"{', '.join(mirrors)}")
    shared = [f for f in matched if mirror.source_of(f).get("field") in doc.fields]
    if not shared:
        held = ", ".join(sorted(doc.fields)) or "nothing"
        raise _fail("nothing_exported", f"{found.instance} exports none of the fields "
                    f"{_names(matched)} of tracker {tracker.slug!r} mirror to this instance "
                    f"({service.settings.base_url}); its topic holds {held}")
    at = now()
    async with service.db.write() as session:
        sub = await store.by_topic(session, found.topic, lock=True)
        created = sub is None
        if sub is None:
            sub = RemoteSubscription(
                topic=found.topic, instance=found.instance, tracker=doc.tracker, hub=found.hub,
                token=secrets.token_urlsafe(24), state=State.PENDING_VERIFICATION.value,
                hub_request_attempts=0, fetch_attempts=0, sync_state=LIVE,
                created_at=at, updated_at=at)
            session.add(sub)
        subscribe = created or sub.state != State.ACTIVE.value or sub.hub_request is not None
        before = (sub.state, sub.awaiting, sub.hub, sub.hub_request, sub.hub_request_due_at)
        if subscribe:
            store.advance(sub, Event.SUBSCRIBE_REQUESTED)
            sub.awaiting, sub.hub = "subscribe", found.hub
            sub.hub_request = sub.hub_request_due_at = None
        await session.flush()
        sub_id, token = sub.id, sub.token
    if subscribe:
        error = await send_hub_request(
            service.federation.outbound, service.sign, hub=found.hub,  # type: ignore[arg-type]
            mode="subscribe", topic=found.topic,
            callback=store.callback_url(service.settings.base_url, token),
            lease_seconds=service.settings.remote_lease_seconds)
        if error is not None:
            async with service.db.write() as session:
                row = await session.get(RemoteSubscription, sub_id, with_for_update=True)
                if row is not None:
                    if created and not await store.has_links(session, sub_id):
                        await session.delete(row)
                    else:
                        (row.state, row.awaiting, row.hub, row.hub_request,
                         row.hub_request_due_at) = before
            raise _fail("hub_refused", f"could not subscribe to {found.topic}: {error}")
    async with service.change_log.write() as session:
        sub = await session.get(RemoteSubscription, sub_id, with_for_update=True)
        assert sub is not None
        old = await session.get(RemoteLink, item_id)
        if old is not None and old.subscription_id == sub_id:
            await session.delete(old)  # relinked to the same topic (a retry)
            await session.flush()
        elif old is not None:
            await _drop_link(session, old, at)
        item_row = await session.get(Item, item_id)
        if item_row is None:
            raise not_found(f"item {item_id}")
        item_row.remote_url = found.item_url
        session.add(RemoteLink(item_id=item_id, subscription_id=sub_id,
                               item_url=found.item_url, unshared={}, created_at=at))
        if sub.remote_version is None or doc.version >= sub.remote_version:
            sub.remote_version, sub.etag, sub.tracker = doc.version, found.etag, doc.tracker
        sub.synced_at = sub.updated_at = at
        sub.sync_state, sub.reason, sub.stale_since = LIVE, None, None
        await session.flush()
        await mirror.mirror(session, sub, doc, at, only=item_id)


async def _drop_link(session: Any, link_row: RemoteLink, at: Any) -> None:
    """Remove a link: clear its mirrored values; unsubscribe when nothing else follows
    the topic (the worker sends it, durably)."""
    sub = await session.get(RemoteSubscription, link_row.subscription_id, with_for_update=True)
    item_row = await session.get(Item, link_row.item_id)
    if item_row is not None:
        item_row.remote_url = None
    await session.delete(link_row)
    await session.flush()
    if sub is None:
        return
    if not await store.has_links(session, sub.id):
        sub.fetch_due_at = None
        if sub.state in (State.ACTIVE.value, State.PENDING_VERIFICATION.value):
            sub.hub_request, sub.hub_request_due_at = "unsubscribe", at
            sub.hub_request_attempts = 0
        else:
            await session.delete(sub)
            await session.flush()


async def unlink(service: RemoteService, item_id: int) -> None:
    at = now()
    async with service.change_log.write() as session:
        link_row = await session.get(RemoteLink, item_id)
        if link_row is None:
            raise not_found(f"a link of item {item_id}")
        sub = await session.get(RemoteSubscription, link_row.subscription_id)
        await _drop_link(session, link_row, at)
        if sub is not None:
            # Cleared last: the change-log appends end the transaction.
            await _clear_item(session, sub, item_id, at)
    service.wake()


async def _clear_item(session: Any, sub: RemoteSubscription, item_id: int, at: Any) -> None:
    item_row = await session.get(Item, item_id)
    if item_row is None:
        return
    from instance.rights import load_fields

    fields = (await load_fields(session, [item_row.tracker_id]))[item_row.tracker_id]
    for f in mirror.mirrored_fields(fields, sub.instance, sub.tracker):
        await items.save_mirrored(session, item_id, item_row.tracker_id, f, None, at)


# ---- what the API shows ------------------------------------------------------------------


async def remote_state(session: Any, item_id: int, fields: list[Any]) -> dict[str, Any]:
    """For each remote field among ``fields``: where it comes from and how current it is."""
    remote_fields = [f for f in fields if f.type == "remote"]
    if not remote_fields:
        return {}
    row = (await session.execute(
        select(RemoteLink, RemoteSubscription)
        .join(RemoteSubscription, RemoteSubscription.id == RemoteLink.subscription_id)
        .where(RemoteLink.item_id == item_id))).first()
    out: dict[str, Any] = {}
    for f in remote_fields:
        source = mirror.source_of(f)
        info: dict[str, Any] = {"instance": source.get("instance"), "item_url": None,
                                "state": "unlinked", "synced_at": None, "stale_since": None,
                                "reason": None}
        if row is not None:
            link_row, sub = row
            mirrored = mirror.mirrored_fields([f], sub.instance, sub.tracker)
            if not mirrored:
                info["reason"] = (f"this item is linked to {link_row.item_url}, and this field "
                                  f"mirrors tracker {source.get('tracker')!r} of "
                                  f"{source.get('instance')}")
            else:
                info.update(instance=sub.instance, item_url=link_row.item_url,
                            synced_at=iso(sub.synced_at), subscription=sub.state)
                unshared = (link_row.unshared or {}).get(f.name)
                if sub.sync_state == GONE:
                    info.update(state="no_longer_shared", reason=sub.reason)
                elif unshared:
                    info.update(state="no_longer_shared", reason=unshared)
                elif sub.sync_state == store.STALE:
                    info.update(state="stale", stale_since=iso(sub.stale_since),
                                reason=sub.last_error)
                elif sub.state == State.DENIED.value:
                    info.update(state="not_subscribed", reason=sub.denied_reason)
                else:
                    info["state"] = "live"
        out[f.name] = info
    return out


