"""What a delivery sends: ``hub.delivery.Composer`` for this instance.

* **Thin signed ping** to a fieldcast partner (a subscription with a subscriber origin):
  the ``Notification`` JSON - topic, item, the changed fields it may see, item version,
  event id - signed with this instance's key in the best profile the partner announces
  in its ``/.well-known/fieldcast``. It is a refresh signal; the partner fetches.
* **Fat ping** to a plain WebSub subscriber (no origin, so public fields only): the
  topic's exact current bytes, as an unsigned ``GET`` of the topic gets them (REC §7:
  "the full contents of the topic URL", with its content type).
* **Fat ping of a tracker's feed** to every subscriber of the feed, partner or not (the
  feed is public): the whole current Atom document, ``application/atom+xml``, as ``GET``
  serves it. REC §7 lets a hub send only the new entries of a feed; it does not have to,
  and the whole document is what a GET gives. A partner's is also HTTP-signed.

Both carry ``Link: <hub>; rel="hub", <topic>; rel="self"`` and, only when the
subscriber gave ``hub.secret``, ``X-Hub-Signature: sha256=<hex>`` over the exact body
(REC §7.1; a signature without a secret fails websub.rocks hub test 100).
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any

from hub.delivery import Claimed, Outgoing, best_profile
from instance.db import Database
from instance.federation.feed import ATOM, feed_document
from instance.federation.feed import NOT_FOUND as FEED_NOT_FOUND
from instance.federation.topics import GONE, NOT_FOUND, topic_document
from instance.federation.urls import feed_of_topic, hub_url
from keys.store import KeyStore, key_url
from protocol.documents import ExportedItem, Notification, dumps
from protocol.hubsignature import sign_body
from protocol.links import build_link_header
from protocol.signatures import CAVAGE_RSA_SHA256, RFC9421_ED25519, sign_request

log = logging.getLogger("fieldcast.federation.notify")

#: How long a partner's announced signature profiles are trusted before a re-fetch.
PROFILES_TTL = 600.0
_ALGORITHM = {RFC9421_ED25519: "ed25519", CAVAGE_RSA_SHA256: "rsa"}

FetchJson = Callable[[str], Awaitable[tuple[int, Any]]]


class Notifier:
    def __init__(self, db: Database, base_url: str, keys: Callable[[], KeyStore | None],
                 fetch_json: FetchJson, *, instance_name: str,
                 clock: Callable[[], float] = time.time) -> None:
        self.db = db
        self.base_url = base_url
        self.instance_name = instance_name  # the feed's title and author
        self.keys = keys
        self.fetch_json = fetch_json
        self.clock = clock  # Unix time to sign with
        self._profiles: dict[str, tuple[tuple[str, ...], float]] = {}

    async def compose(self, delivery: Claimed) -> Outgoing:
        headers = [("link", build_link_header(hub=hub_url(self.base_url),
                                              self_url=delivery.topic))]
        if delivery.tracker_id is not None:
            body, content_type = await self._feed_bytes(delivery.topic)
            headers.append(("content-type", content_type))
        elif delivery.origin is None:
            assert delivery.item_id is not None
            body = await self._topic_bytes(delivery.item_id)
            headers.append(("content-type", "application/json"))
        else:
            assert delivery.item_id is not None
            body = dumps(Notification(
                topic=delivery.topic, item=delivery.item_id, fields=delivery.fields,
                version=delivery.item_version, event=delivery.event_id,
                sent_at=datetime.now(UTC)))
            headers.append(("content-type", "application/json"))
        if delivery.secret:
            headers.append(("x-hub-signature", sign_body(body, delivery.secret)))
        if delivery.origin is not None:
            headers += await self._signature(delivery.origin, delivery.callback, headers, body)
        return Outgoing(headers, body)

    async def _topic_bytes(self, item_id: int) -> bytes:
        async with self.db.read() as session:
            doc = await topic_document(session, self.base_url, item_id, None)
        if isinstance(doc, ExportedItem):
            return dumps(doc)
        # What the topic answers now: the deletion's last ping carries the 410 body.
        return dumps(GONE if doc == 410 else NOT_FOUND)

    async def _feed_bytes(self, topic: str) -> tuple[bytes, str]:
        slug = feed_of_topic(self.base_url, topic)
        async with self.db.read() as session:
            body = await feed_document(session, self.base_url, self.instance_name, slug
                                       ) if slug is not None else None
        if body is not None:
            return body, ATOM
        # The tracker has no public field left (its subscriptions are being denied):
        # what the feed answers now.
        return json.dumps(FEED_NOT_FOUND).encode(), "application/json"

    async def _signature(self, origin: str, url: str, headers: list[tuple[str, str]],
                         body: bytes) -> list[tuple[str, str]]:
        store = self.keys()
        profile = best_profile(await self._announced(origin))
        if store is None or profile is None:
            log.warning("sending an unsigned notification to %s: %s", origin,
                        "this instance has no keys" if store is None
                        else "no signature profile in common")
            return []
        key = store.current(_ALGORITHM[profile])
        signed = sign_request(profile, "POST", url, headers, body, key.private,
                              key_url(self.base_url, key.record.kid), self.clock())
        return list(signed.items())

    async def _announced(self, origin: str) -> tuple[str, ...]:
        cached = self._profiles.get(origin)
        now = time.monotonic()
        if cached is not None and now - cached[1] < PROFILES_TTL:
            return cached[0]
        profiles: tuple[str, ...] = (RFC9421_ED25519,)  # the default between instances
        try:
            status, doc = await self.fetch_json(f"{origin}/.well-known/fieldcast")
            if status == 200 and isinstance(doc, dict) and isinstance(
                    doc.get("signature_profiles"), list):
                profiles = tuple(p for p in doc["signature_profiles"] if isinstance(p, str))
        except Exception as exc:  # the ping is still worth sending; it is retried anyway
            log.info("could not read %s's signature profiles: %s", origin, exc)
            return cached[0] if cached else profiles
        self._profiles[origin] = (profiles, now)
        return profiles
