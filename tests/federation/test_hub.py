"""POST {hub} and verification of intent against a real WebSub subscriber (REC §5),
unsigned and signed by partner instances whose keys are fetched over HTTP."""

from __future__ import annotations

import asyncio
import time
from urllib.parse import urlencode

import pytest

from protocol.signatures import RFC9421_ED25519, sign_request
from tests.federation.conftest import FORM, World

pytestmark = pytest.mark.asyncio(loop_scope="module")


async def test_subscribe_without_secret_is_verified_then_active(world: World) -> None:
    item = await world.item(title="public")
    callback = world.public.callback()
    await world.subscribe(world.topic(item), callback)
    (verification,) = await world.public.wait_gets(callback)
    args = verification.args
    assert args["hub.mode"] == "subscribe" and args["hub.topic"] == world.topic(item)
    assert args["token"] == "t1"  # the callback's own query string is kept (REC §5.1.1)
    assert args["hub.lease_seconds"] == "600"  # the default when none is asked for
    assert len(args["hub.challenge"]) >= 32
    sub = await world.wait_state(callback, "active")
    assert sub["signed"] is False and sub["has_secret"] is False
    assert sub["subscriber_origin"] is None and sub["exported_fields"] == ["title"]
    assert sub["lease_seconds"] == 600 and sub["lease_expires_at"] is not None


async def test_secret_unknown_parameters_and_lease_clamp(world: World) -> None:
    item = await world.item(title="x")
    callback = world.public.callback()
    # websub.rocks hub test 102: parameters the hub does not know are ignored.
    await world.subscribe(world.topic(item), callback, **{
        "hub.secret": "s3cret-s3cret", "foo": "bar", "hub.foo": "hub.bar",
        "hub.lease_seconds": "99999999"})
    (verification,) = await world.public.wait_gets(callback)
    assert verification.args["hub.lease_seconds"] == "3600"  # clamped to the maximum
    assert "hub.secret" not in verification.args and "foo" not in verification.args
    sub = await world.wait_state(callback, "active")
    assert sub["has_secret"] is True and sub["lease_seconds"] == 3600


async def test_resubscribe_replaces_the_lease_and_keeps_one_subscription(world: World) -> None:
    item = await world.item(title="x")
    callback = world.public.callback()
    await world.subscribe(world.topic(item), callback, **{"hub.lease_seconds": "100"})
    first = await world.wait_state(callback, "active")
    await world.subscribe(world.topic(item), callback, **{"hub.lease_seconds": "200"})
    gets = await world.public.wait_gets(callback, 2)
    assert gets[0].args["hub.challenge"] != gets[1].args["hub.challenge"]  # single use
    await world.idle()
    (again,) = await world.subscriptions(callback)  # websub.rocks hub test 103: one only
    assert again["id"] == first["id"] and again["state"] == "active"
    assert again["lease_seconds"] == 200

    # A re-subscription the callback does not confirm leaves the active one unchanged.
    world.public.behaviour[callback.split("/callback/")[1].split("?")[0]] = "wrong"
    await world.subscribe(world.topic(item), callback, **{"hub.lease_seconds": "300"})
    await world.public.wait_gets(callback, 3)
    await world.idle()
    (unchanged,) = await world.subscriptions(callback)
    assert unchanged["state"] == "active" and unchanged["lease_seconds"] == 200
    assert "not the hub.challenge echoed exactly" in unchanged["last_error"]


async def test_unsubscribe_is_verified(world: World) -> None:
    item = await world.item(title="x")
    callback = world.public.callback()
    await world.subscribe(world.topic(item), callback, **{"hub.secret": "k"})
    await world.wait_state(callback, "active")
    status, _, _ = await world.post_hub({"hub.mode": "unsubscribe",
                                         "hub.topic": world.topic(item),
                                         "hub.callback": callback})
    assert status == 202
    gets = await world.public.wait_gets(callback, 2)
    assert gets[1].args["hub.mode"] == "unsubscribe" and "hub.lease_seconds" not in gets[1].args
    await world.wait_state(callback, "unsubscribed")

    # Nothing left to end: accepted, and no verification is sent.
    nothing = world.public.callback()
    status, _, _ = await world.post_hub({"hub.mode": "unsubscribe",
                                         "hub.topic": world.topic(item),
                                         "hub.callback": nothing})
    assert status == 202
    await world.idle()
    assert world.public.gets(nothing) == [] and await world.subscriptions(nothing) == []


@pytest.mark.parametrize("behaviour", ["wrong", "refuse"])
async def test_a_callback_that_does_not_confirm_is_not_subscribed(world: World,
                                                                 behaviour: str) -> None:
    item = await world.item(title="x")
    callback = world.public.callback(behaviour)
    world.public.behaviour[callback.split("/callback/")[1].split("?")[0]] = behaviour
    await world.subscribe(world.topic(item), callback)
    await world.public.wait_gets(callback)
    sub = await world.wait_state(callback, "denied")
    assert sub["lease_expires_at"] is None
    expected = "refused (404)" if behaviour == "refuse" else "not the hub.challenge"
    assert expected in sub["last_error"]


async def test_an_unreachable_callback_is_retried_then_fails(world: World) -> None:
    from tests.harness import free_port

    item = await world.item(title="x")
    callback = f"http://127.0.0.1:{free_port()}/nobody-listens?token=t1"
    await world.subscribe(world.topic(item), callback)
    sub = await world.wait_state(callback, "denied")
    assert "could not reach the callback" in sub["last_error"]
    assert "after 2 attempts" in sub["last_error"]


async def test_lease_expiry_ends_the_subscription(world: World) -> None:
    from instance.accounts import now
    from instance.federation.subscriptions import active_subscribers

    item = await world.item(title="x")
    callback = world.public.callback()
    await world.subscribe(world.topic(item), callback, **{"hub.lease_seconds": "1"})
    sub = await world.wait_state(callback, "active")
    assert sub["lease_seconds"] == 1
    db = world.app.extensions["fieldcast"].db
    async with db.read() as session:
        assert [s.callback for s in await active_subscribers(session, [item], now())] == [callback]
    await world.wait_state(callback, "expired", within=5)
    async with db.read() as session:
        assert await active_subscribers(session, [item], now()) == []


async def test_refused_subscribes_are_202_then_denied_with_one_reason(world: World) -> None:
    partner_only = await world.item("partners", plan="secret plan")
    nothing_exported = await world.item("closed", title="closed")
    missing = 10_000_000
    reasons = set()
    for item in (partner_only, nothing_exported, missing):
        callback = world.public.callback("refused")
        await world.subscribe(world.topic(item), callback)
        (denial,) = await world.public.wait_gets(callback)
        assert denial.args["hub.mode"] == "denied"
        assert denial.args["hub.topic"] == world.topic(item)
        reasons.add(denial.args["hub.reason"])
        assert await world.subscriptions(callback) == []
    # The same reason for all three: a denial does not tell which items exist.
    assert len(reasons) == 1


async def test_a_refused_request_does_not_end_a_live_subscription(world: World) -> None:
    item = await world.item("partners", plan="p")
    callback = world.partner.callback()
    await world.subscribe(world.topic(item), callback, signer=world.partner)
    await world.wait_state(callback, "active")
    # Anyone can name B's callback in an unsigned request, which is refused, but B is
    # not told its subscription was denied.
    await world.subscribe(world.topic(item), callback)
    await world.idle()
    assert [g.args["hub.mode"] for g in world.partner.gets(callback)] == ["subscribe"]
    (sub,) = await world.subscriptions(callback)
    assert sub["state"] == "active" and sub["subscriber_origin"] == world.partner.base


@pytest.mark.parametrize(("params", "expected"), [
    ({"hub.topic": "T", "hub.callback": "C"}, "hub.mode is missing"),
    ({"hub.mode": "subscribe", "hub.callback": "C"}, "hub.topic is missing"),
    ({"hub.mode": "subscribe", "hub.topic": "https://elsewhere.example/federation/items/1",
      "hub.callback": "C"}, "not a topic of this hub"),
    ({"hub.mode": "subscribe", "hub.topic": "T", "hub.callback": "ftp://x/"},
     "absolute http or https URL"),
    ({"hub.mode": "subscribe", "hub.topic": "T", "hub.callback": "C",
      "hub.secret": "s" * 200}, "less than 200 bytes"),
    ({"hub.mode": "subscribe", "hub.topic": "T", "hub.callback": "C",
      "hub.lease_seconds": "-5"}, "positive integer"),
    ({"hub.mode": "watch", "hub.topic": "T", "hub.callback": "C"}, "not supported"),
])
async def test_malformed_requests_are_400_with_a_plain_reason(
        world: World, params: dict[str, str], expected: str) -> None:
    params = {k: (world.topic(1) if v == "T" else world.public.callback() if v == "C" else v)
              for k, v in params.items()}
    status, ctype, text = await world.post_hub(params)
    assert status == 400 and ctype.startswith("text/plain") and expected in text


async def test_other_bodies_are_refused_plainly(world: World) -> None:
    status, ctype, text = await world.post_hub({"hub.mode": "subscribe"},
                                               content_type="application/json")
    assert status == 400 and "application/x-www-form-urlencoded" in text
    status, ctype, text = await world.post_hub([("hub.mode", "subscribe")] * 8000)
    assert status == 413 and ctype.startswith("text/plain")
    # A publish ping is accepted and ignored: this hub publishes from its change log.
    status, _, _ = await world.post_hub({"hub.mode": "publish", "hub.url": world.topic(1)})
    assert status == 202


# ---- signed requests: partners ---------------------------------------------------------


async def test_a_partner_subscribes_with_a_signed_request(world: World) -> None:
    item = await world.item(title="t", plan="p")
    callback = world.partner.callback()
    await world.subscribe(world.topic(item), callback, signer=world.partner)
    sub = await world.wait_state(callback, "active")
    assert sub["subscriber_origin"] == world.partner.base and sub["signed"] is True
    assert sub["exported_fields"] == ["title", "plan"]


async def test_a_signed_instance_that_is_no_partner_gets_public_fields_only(
        world: World) -> None:
    shared = await world.item(title="t", plan="p")
    callback = world.stranger.callback()
    await world.subscribe(world.topic(shared), callback, signer=world.stranger)
    sub = await world.wait_state(callback, "active")
    assert sub["exported_fields"] == ["title"]

    partner_only = await world.item("partners", plan="p")
    callback = world.stranger.callback()
    await world.subscribe(world.topic(partner_only), callback, signer=world.stranger)
    (denial,) = await world.stranger.wait_gets(callback)
    assert denial.args["hub.mode"] == "denied"


async def test_forged_tampered_and_misdirected_signed_requests_are_refused(
        world: World) -> None:
    item = await world.item("partners", plan="p")
    callback = world.partner.callback()
    params = {"hub.mode": "subscribe", "hub.topic": world.topic(item),
              "hub.callback": callback}

    # Tampered: signed, then the callback changed on the way.
    tampered = f"hub.mode=subscribe&hub.topic={world.topic(item)}&hub.callback=http://x/"
    status, ctype, text = await world.post_hub(params, signer=world.partner,
                                               tamper=tampered.encode())
    assert status in (400, 401) and ctype.startswith("text/plain"), text
    assert "digest" in text.lower()

    # Forged: signed by C's key while naming a keyId of B.
    key = world.stranger.keys.current("ed25519")  # type: ignore[union-attr]
    b_kid = world.partner.keys.current("ed25519").record.kid  # type: ignore[union-attr]
    body = urlencode(params).encode()
    headers = {"Content-Type": FORM}
    headers.update(sign_request(RFC9421_ED25519, "POST", world.hub, list(headers.items()), body,
                                key.private, f"{world.partner.base}/.well-known/fieldcast/keys/"
                                f"{b_kid}", time.time()))
    r = await world.client.post("/federation/hub", data=body, headers=headers)
    assert r.status_code == 401, await r.get_data(as_text=True)

    # Signed by B, for a callback on another origin.
    elsewhere = dict(params, **{"hub.callback": world.stranger.callback()})
    status, _, text = await world.post_hub(elsewhere, signer=world.partner)
    assert status == 400 and "signing instance's origin" in text

    # Replayed: the very same signed request twice.
    body = urlencode(params).encode()
    headers = world.partner.sign("POST", world.hub, {"Content-Type": FORM}, body)
    first = await world.client.post("/federation/hub", data=body, headers=headers)
    second = await world.client.post("/federation/hub", data=body, headers=headers)
    assert first.status_code == 202 and second.status_code == 401
    assert "replayed" in await second.get_data(as_text=True)
    await world.wait_state(callback, "active")


async def test_discovery_advertises_hub_and_topic(world: World) -> None:
    doc = await (await world.client.get("/.well-known/fieldcast")).get_json()
    assert doc["hub"] == world.hub
    exported = await world.item(title="x")
    closed = await world.item("closed", title="x")
    assert (await (await world.admin.get(f"/api/items/{exported}")).get_json())["topic"] == \
        world.topic(exported)
    assert (await (await world.admin.get(f"/api/items/{closed}")).get_json())["topic"] is None


async def test_concurrent_subscribes_for_one_pair_make_one_subscription(world: World) -> None:
    item = await world.item(title="x")
    callback = world.public.callback()
    await asyncio.gather(*(world.subscribe(world.topic(item), callback) for _ in range(5)))
    await world.wait_state(callback, "active")
    await world.idle()
    assert len(await world.subscriptions(callback)) == 1
