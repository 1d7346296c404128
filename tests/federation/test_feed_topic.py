"""A tracker's Atom feed as a WebSub topic, end to end over real HTTP: subscribe to the
feed URL, verification names it, a public change -> one fat ping of the feed's exact
bytes (REC §7), partner-only changes never show, and a feed that ends (or never was) is
denied (REC §5.2). PROTOCOL.md "The hub endpoint" and "Notifications"."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import time
import uuid

import pytest

from instance.federation.hub_endpoint import DENIAL_REASON
from keys.publish import parse_well_known
from protocol.signatures import verify_request
from tests.federation import test_delivery
from tests.federation.conftest import World
from tests.federation.test_delivery import Subscriber, save, svc

#: The delivery tests' world: the same hub app, with peers that record POSTs.
world = test_delivery.world

pytestmark = pytest.mark.asyncio(loop_scope="module")

ATOM = "application/atom+xml"


def marker(label: str) -> str:
    return f"{label}-{uuid.uuid4().hex[:8]}"


def feed_url(world: World, slug: str) -> str:
    return f"{world.base}/federation/trackers/{slug}/feed.atom"


async def new_tracker(world: World, *, partner_field: bool = True) -> str:
    """A tracker of its own per test (the feed spans all items of a tracker): ``title``
    public, ``plan`` for the partner only, ``internal`` not exported."""
    slug = f"feed_{uuid.uuid4().hex[:8]}"
    assert (await world.admin.post("/api/trackers", json={"slug": slug})).status_code == 201
    fields = [{"name": "title", "export": {"mode": "public", "partners": []}},
              {"name": "internal"}]
    if partner_field:
        fields.append({"name": "plan", "export": {"mode": "partners",
                                                  "partners": [world.partner.base]}})
    for data in fields:
        r = await world.admin.post(f"/api/trackers/{slug}/fields",
                                   json={"label": data["name"], **data})
        assert r.status_code == 201, await r.get_data(as_text=True)
    return slug


async def settled(world: World) -> None:
    """Until the projector has read the whole log: changes made so far owe nothing to
    subscriptions that become active afterwards."""
    service = svc(world)
    assert service.projector is not None and service.change_log is not None
    head = await service.change_log.head()
    for _ in range(500):
        if await service.projector.store.cursor() >= head:
            return
        await asyncio.sleep(0.02)
    raise AssertionError("the projector did not catch up")


async def feed_subscribed(world: World, slug: str, peer: Subscriber, *, signed: bool = False,
                          **extra: str) -> str:
    callback = peer.callback("feed")
    await world.subscribe(feed_url(world, slug), callback, signer=peer if signed else None,
                          **extra)
    (verification,) = await peer.wait_gets(callback)
    assert verification.args["hub.mode"] == "subscribe"
    assert verification.args["hub.topic"] == feed_url(world, slug)  # the feed, as self
    assert verification.args["hub.lease_seconds"] == "600"
    await world.wait_state(callback, "active")
    return callback


async def get_feed(world: World, slug: str) -> tuple[bytes, str, str]:
    r = await world.client.get(f"/federation/trackers/{slug}/feed.atom")
    assert r.status_code == 200, await r.get_data(as_text=True)
    body = await r.get_data(as_text=False)
    assert isinstance(body, bytes)
    return body, r.headers["Content-Type"], r.headers["Link"]


def everything_sent(peer: Subscriber) -> list[bytes]:
    """Every byte the peer received: bodies, headers and URLs of all requests."""
    out = [p.body + repr(p.headers).encode() + p.path.encode() for p in peer.posts]
    out += [s.body + repr(s.args).encode() + s.path.encode() for s in peer.seen]
    return out


async def test_feed_fat_ping_is_the_feed_bytes_with_hmac_only_with_secret(world: World
                                                                          ) -> None:
    slug = await new_tracker(world)
    public: Subscriber = world.public  # type: ignore[assignment]
    secret_plan, hidden = marker("plan"), marker("internal")
    item = await world.item(slug, title=marker("t0"), plan=secret_plan, internal=hidden)
    await settled(world)
    with_secret = await feed_subscribed(world, slug, public, **{"hub.secret": "s3cret"})
    without = await feed_subscribed(world, slug, public)

    (sub,) = await world.subscriptions(without)
    assert sub["kind"] == "feed" and sub["tracker"] == slug and sub["item"] is None
    assert sub["topic"] == feed_url(world, slug) and sub["exported_fields"] == ["title"]
    page = await (await world.admin.get("/admin/federation")).get_data(as_text=True)
    assert f"feed of {slug}" in page

    new_title = marker("t1")
    await save(world, item, "title", new_title)
    (a,) = await public.wait_posts(with_secret)
    (b,) = await public.wait_posts(without)
    body, content_type, link = await get_feed(world, slug)
    assert a.body == b.body == body  # the feed's exact bytes, as GET serves them
    assert new_title.encode() in body
    assert a.headers["Content-Type"] == b.headers["Content-Type"] == content_type == ATOM
    assert a.headers["Link"] == b.headers["Link"] == link
    assert f'<{world.hub}>; rel="hub"' in link
    assert f'<{feed_url(world, slug)}>; rel="self"' in link
    assert int(a.headers["Content-Length"]) == len(body)
    expected = hmac.new(b"s3cret", a.body, hashlib.sha256).hexdigest()
    assert a.headers["X-Hub-Signature"] == f"sha256={expected}"
    assert "X-Hub-Signature" not in b.headers  # websub.rocks hub test 100

    # Partner-only and unexported fields: no ping, and their values never sent.
    await save(world, item, "plan", marker("plan2"))
    await save(world, item, "internal", marker("internal2"))
    await settled(world)
    await asyncio.sleep(0.5)
    assert len(public.posted(with_secret)) == len(public.posted(without)) == 1
    for sent in everything_sent(public):
        assert secret_plan.encode() not in sent and hidden.encode() not in sent

    deliveries = (await (await world.admin.get("/api/federation/deliveries")).get_json()
                  )["deliveries"]
    mine = [d for d in deliveries if d["callback"] == without]
    assert [(d["kind"], d["tracker"], d["item"], d["state"]) for d in mine] == \
        [("feed", slug, None, "done")]


async def test_saves_coalesce_and_a_deleted_item_leaves_the_feed(world: World) -> None:
    slug = await new_tracker(world, partner_field=False)
    public: Subscriber = world.public  # type: ignore[assignment]
    keep, gone = marker("keep"), marker("gone")
    kept = await world.item(slug, title=keep)
    doomed = await world.item(slug, title=gone)
    await settled(world)
    callback = await feed_subscribed(world, slug, public)
    service = svc(world)
    assert service.delivery is not None
    await service.delivery.stop()
    for i in range(5):  # two items, one feed: one waiting delivery
        await save(world, kept if i % 2 else doomed, "title", marker(f"v{i}"))
    await settled(world)
    await service.delivery.start()
    (ping,) = await public.wait_posts(callback)
    assert ping.body == (await get_feed(world, slug))[0]
    await asyncio.sleep(0.3)
    assert len(public.posted(callback)) == 1

    assert (await world.admin.delete(f"/api/items/{doomed}")).status_code == 204
    _, last = await public.wait_posts(callback, 2)
    body, _, _ = await get_feed(world, slug)
    assert last.body == body and gone.encode() not in body and keep.encode() in body


async def test_a_signed_partner_gets_the_public_feed_signed(world: World) -> None:
    slug = await new_tracker(world)
    partner: Subscriber = world.partner  # type: ignore[assignment]
    item = await world.item(slug, title=marker("t"))
    await settled(world)
    callback = await feed_subscribed(world, slug, partner, signed=True)
    (sub,) = await world.subscriptions(callback)
    assert sub["signed"] is True and sub["exported_fields"] == ["title"]
    plan = marker("plan")
    await save(world, item, "plan", plan)  # the partner's own field: not in the feed
    await settled(world)
    await asyncio.sleep(0.4)
    assert partner.posted(callback) == []
    await save(world, item, "title", marker("t2"))
    (ping,) = await partner.wait_posts(callback)
    body, content_type, _ = await get_feed(world, slug)
    assert ping.body == body and ping.headers["Content-Type"] == content_type
    assert plan.encode() not in ping.body
    wk = await (await world.client.get("/.well-known/fieldcast")).get_json()
    keys = {k.key_id: k.public_key for k in parse_well_known(wk).keys}
    verified = verify_request("POST", f"{partner.base}{ping.path}?token=t1",
                              list(ping.headers.items()), ping.body,
                              resolve_key=lambda kid: keys.get(kid), now=time.time(),
                              replay_cache=None)
    assert verified.key_id.startswith(world.base)


async def test_a_tracker_that_loses_its_last_public_field_denies_its_feed(world: World
                                                                          ) -> None:
    slug = await new_tracker(world)
    public: Subscriber = world.public  # type: ignore[assignment]
    item = await world.item(slug, title=marker("t"))
    await settled(world)
    callback = await feed_subscribed(world, slug, public)
    # Another field's export change leaves the feed (title is still public).
    r = await world.admin.patch(f"/api/trackers/{slug}/fields/internal",
                                json={"export": {"mode": "partners",
                                                 "partners": [world.partner.base]}})
    assert r.status_code == 200, await r.get_data(as_text=True)
    await settled(world)
    await world.idle()
    assert (await world.subscriptions(callback))[0]["state"] == "active"
    r = await world.admin.patch(f"/api/trackers/{slug}/fields/title",
                                json={"export": {"mode": "none", "partners": []}})
    assert r.status_code == 200, await r.get_data(as_text=True)
    await world.wait_state(callback, "denied")
    gets = await public.wait_gets(callback, 2)
    assert gets[-1].args["hub.mode"] == "denied"
    assert gets[-1].args["hub.topic"] == feed_url(world, slug) and gets[-1].args["hub.reason"]
    # (The export change of "internal" owed the feed a re-check ping: the feed's content
    # may change with any export change. Nothing is sent after the denial.)
    before = len(public.posted(callback))
    await save(world, item, "title", marker("after"))
    await settled(world)
    await asyncio.sleep(0.4)
    assert len(public.posted(callback)) == before
    assert (await world.client.get(f"/federation/trackers/{slug}/feed.atom")).status_code == 404


async def test_a_feed_without_public_fields_is_denied_like_an_item(world: World) -> None:
    public: Subscriber = world.public  # type: ignore[assignment]
    # "partners" has a partner field only, "closed" nothing exported; then no tracker.
    cases = [("partners", public, False), ("partners", world.partner, True),
             ("closed", public, False), ("no_such_tracker", public, False)]
    reasons = set()
    for slug, peer, signed in cases:
        callback = peer.callback("nofeed")
        await world.subscribe(feed_url(world, slug), callback,
                              signer=peer if signed else None)
        (denial,) = await peer.wait_gets(callback)
        assert denial.args["hub.mode"] == "denied"
        assert denial.args["hub.topic"] == feed_url(world, slug)
        reasons.add(denial.args["hub.reason"])
        assert await world.subscriptions(callback) == []
    assert reasons == {DENIAL_REASON}


@pytest.mark.parametrize("path", [
    "/federation/trackers/Shared/feed.atom", "/federation/trackers/shared/feed.rss",
    "/federation/trackers//feed.atom", "/federation/trackers/shared/feed.atom?x=1",
])
async def test_other_feed_spellings_are_not_topics(world: World, path: str) -> None:
    status, _, text = await world.post_hub({
        "hub.mode": "subscribe", "hub.topic": world.base + path,
        "hub.callback": world.public.callback()})
    assert status == 400 and "feed.atom" in text


async def test_unsubscribe_from_a_feed_is_verified_and_stops_pings(world: World) -> None:
    slug = await new_tracker(world, partner_field=False)
    public: Subscriber = world.public  # type: ignore[assignment]
    item = await world.item(slug, title=marker("t"))
    await settled(world)
    callback = await feed_subscribed(world, slug, public)
    status, _, text = await world.post_hub({"hub.mode": "unsubscribe",
                                            "hub.topic": feed_url(world, slug),
                                            "hub.callback": callback})
    assert status == 202, text
    _, verification = await public.wait_gets(callback, 2)
    assert verification.args["hub.mode"] == "unsubscribe"  # websub.rocks hub test 104
    assert verification.args["hub.topic"] == feed_url(world, slug)
    await world.wait_state(callback, "unsubscribed")
    await save(world, item, "title", marker("after"))
    await settled(world)
    await asyncio.sleep(0.4)
    assert public.posted(callback) == []
