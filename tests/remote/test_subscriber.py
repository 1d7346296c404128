"""The subscriber side between two real instances: linking, the callback, the fetch
worker and the mirror, on SQLite and PostgreSQL."""

from __future__ import annotations

import json
import time
from typing import Any

import httpx
import pytest

from instance.federation.service import FEDERATION_KEY
from keys.store import key_url
from protocol.signatures import RFC9421_ED25519, sign_request
from tests.conftest import PASSWORD
from tests.harness.wait import eventually
from tests.remote.conftest import Pair

pytestmark = pytest.mark.asyncio(loop_scope="module")


async def linked(pair: Pair, title: str = "t", status: str = "open", *, by_page: bool = False
                 ) -> tuple[int, int, dict[str, Any]]:
    """An item on A, one on B linked to it (subscription active); (a, b, outgoing row)."""
    a_item = await pair.a_item(title=title, status=status, internal="secret")
    b_item = await pair.b_item(notes="mine")
    url = f"{pair.a.base}/items/{a_item}" if by_page else pair.topic(a_item)
    r = await pair.link(b_item, url)
    assert r.status_code == 200, r.text

    async def active() -> dict[str, Any]:
        (sub,) = await pair.outgoing(pair.topic(a_item))
        assert sub["state"] == "active", sub
        return sub

    return a_item, b_item, await eventually(active)


async def test_link_by_topic_fills_fields_and_subscribes(pair: Pair) -> None:
    a_item, b_item, sub = await linked(pair, "Crash", "open")
    fields = await pair.b_fields(b_item)
    assert fields["their_title"]["value"] == "Crash"
    assert fields["their_status"]["value"] == "open"
    assert fields["notes"]["value"] == "mine"
    remote = fields["their_title"]["remote"]
    assert remote["state"] == "live" and remote["instance"] == pair.a.base
    assert remote["item_url"] == f"{pair.a.base}/items/{a_item}"
    assert remote["synced_at"] is not None and "remote" not in fields["notes"]
    assert sub["callback"].startswith(pair.b.base + "/federation/callback/")
    assert sub["lease_expires_at"] and sub["renew_at"]
    (hub_side,) = await pair.hub_subs(pair.topic(a_item))
    assert hub_side["state"] == "active" and hub_side["subscriber_origin"] == pair.b.base
    # The mirrored values came through B's change log, as federation, by nobody.
    changes = (await pair.admin_b.get(f"/api/changes?item={b_item}")).json()["changes"]
    mirrored = [c for c in changes if c["field"] == "their_title"]
    assert mirrored and mirrored[0]["source"] == "federation" and mirrored[0]["by"] is None


async def test_link_by_item_page_url(pair: Pair) -> None:
    a_item, b_item, _ = await linked(pair, "From the page", by_page=True)
    fields = await pair.b_fields(b_item)
    assert fields["their_title"]["value"] == "From the page"
    assert (await pair.outgoing(pair.topic(a_item)))[0]["topic"] == pair.topic(a_item)


async def _nothing_left(pair: Pair, b_item: int, before: int) -> None:
    assert len(await pair.outgoing()) == before
    fields = await pair.b_fields(b_item)
    assert all(f.get("value") is None for n, f in fields.items() if n.startswith("their"))
    item = (await pair.admin_b.get(f"/api/items/{b_item}")).json()
    assert item["remote_url"] is None


@pytest.mark.parametrize("case", ["not_fieldcast", "not_fieldcast_page", "down",
                                  "nothing_exported", "no_such_topic"])
async def test_link_errors_leave_nothing_behind(pair: Pair, case: str) -> None:
    from tests.harness import free_port

    a_item = await pair.a_item(title="x", internal="only internal")
    b_item = await pair.b_item(tracker="elsewhere" if case == "nothing_exported" else "mirror")
    before = len(await pair.outgoing())
    url, code, words = {
        "not_fieldcast": (pair.b.base + "/healthz", "not_fieldcast", "not a fieldcast topic"),
        "not_fieldcast_page": (f"http://127.0.0.1:{free_port()}/items/3", "unreachable",
                               "does not answer"),
        "down": (f"http://127.0.0.1:{free_port()}/federation/items/1", "unreachable",
                 "does not answer"),
        "nothing_exported": (pair.topic(a_item), "nothing_exported", "exports none of"),
        "no_such_topic": (pair.topic(999999), "nothing_exported", "exports no field"),
    }[case]
    r = await pair.link(b_item, url)
    assert r.status_code == 422, r.text
    assert r.json()["error"] == code and words in r.json()["detail"], r.json()
    await _nothing_left(pair, b_item, before)


async def test_a_ping_makes_b_fetch_and_its_browsers_see_it(pair: Pair) -> None:
    a_item, b_item, sub = await linked(pair, "before")
    client = pair.b.app.test_client()
    r = await client.post("/api/login", json={"username": "admin", "password": PASSWORD})
    assert r.status_code == 200
    async with client.websocket("/live") as ws:
        async def frame(kind: str) -> dict[str, Any]:
            while True:
                msg = json.loads(await ws.receive())
                if msg["type"] == kind:
                    return msg
        await frame("hello")
        await ws.send(json.dumps({"type": "subscribe", "items": [b_item]}))
        await frame("subscribed")
        r = await pair.admin_a.patch(f"/api/items/{a_item}/fields/title", json={"value": "after"})
        version = r.json()["event"]  # the version A's topic answers after this save
        ping = await pair.ping(sub["callback"], pair.topic(a_item), a_item, version)
        assert ping.status_code == 202, ping.text
        update = (await frame("updates"))["updates"][0]
        assert (update["item"], update["field"], update["value"]) == (b_item, "their_title",
                                                                      "after")
    fields = await pair.b_fields(b_item)
    assert fields["their_title"]["value"] == "after"
    (row,) = await pair.outgoing(pair.topic(a_item))
    assert row["last_ping_at"] and row["remote_version"] == version


async def test_a_ping_for_a_held_version_does_not_fetch(pair: Pair) -> None:
    a_item, _, sub = await linked(pair, "held")
    (row,) = await pair.outgoing(pair.topic(a_item))
    r = await pair.ping(sub["callback"], pair.topic(a_item), a_item, row["remote_version"])
    assert r.status_code == 202 and "held already" in r.text
    (after,) = await pair.outgoing(pair.topic(a_item))
    assert after["fetch_due_at"] is None and after["last_fetch_at"] == row["last_fetch_at"]


@pytest.mark.parametrize("case", ["unsigned", "tampered", "forged", "wrong_origin",
                                  "replayed"])
async def test_bad_pings_are_refused_and_change_nothing(pair: Pair, case: str,
                                                        tmp_path: Any) -> None:
    a_item, b_item, sub = await linked(pair, "steady")
    # A's own (real) pings would move B too; hold them, so that only the bad ping could.
    delivery = pair.a.app.extensions[FEDERATION_KEY].delivery
    await delivery.stop()
    try:
        await _refuse_bad_ping(pair, case, tmp_path, a_item, b_item, sub)
    finally:
        await delivery.start()


async def _refuse_bad_ping(pair: Pair, case: str, tmp_path: Any, a_item: int, b_item: int,
                           sub: dict[str, Any]) -> None:
    import time

    from keys.store import KeyStore

    await pair.admin_a.patch(f"/api/items/{a_item}/fields/title", json={"value": "moved"})
    callback, topic = sub["callback"], pair.topic(a_item)
    body, headers = pair.ping_request(callback, topic, a_item, 99)
    if case == "unsigned":
        headers = {"content-type": "application/json"}
    elif case == "tampered":
        body = body.replace(b'"version":99', b'"version":98')
    elif case == "forged":
        other = KeyStore(tmp_path / "k")
        other.generate(time.time())
        body, headers = pair.ping_request(callback, topic, a_item, 99, key=other)
    elif case == "wrong_origin":
        # Signed by B's own key: a real key, of another instance than the topic's.
        body, headers = pair.ping_request(callback, topic, a_item, 99, key=pair.b.keys,
                                          origin=pair.b.base)
    async with httpx.AsyncClient() as c:
        if case == "replayed":
            assert (await c.post(callback, content=body, headers=headers)).status_code == 202
            before = await pair.outgoing(topic)
            r = await c.post(callback, content=body, headers=headers)
        else:
            before = await pair.outgoing(topic)
            r = await c.post(callback, content=body, headers=headers)
    assert r.status_code in (400, 401, 403), r.text
    if case != "replayed":
        assert (await pair.b_fields(b_item))["their_title"]["value"] == "steady"
    after = await pair.outgoing(topic)
    assert after[0]["last_ping_at"] == before[0]["last_ping_at"]


async def test_unknown_topics_and_unrequested_verifications_are_404(pair: Pair) -> None:
    a_item, _, sub = await linked(pair, "x")
    other = await pair.a_item(title="other")
    r = await pair.ping(sub["callback"], pair.topic(other), other, 5)
    assert r.status_code == 404
    unknown = pair.b.base + "/federation/callback/nosuchtoken"
    r = await pair.ping(unknown, pair.topic(a_item), a_item, 5)
    assert r.status_code == 404
    async with httpx.AsyncClient() as c:
        for params in (
            {"hub.mode": "subscribe", "hub.topic": pair.topic(other), "hub.challenge": "c",
             "hub.lease_seconds": "60"},  # another topic
            {"hub.mode": "unsubscribe", "hub.topic": pair.topic(a_item), "hub.challenge": "c"},
            {"hub.mode": "subscribe", "hub.topic": pair.topic(a_item), "hub.challenge": "c",
             "hub.lease_seconds": "60"},  # verified already: B asks for nothing now
        ):
            r = await c.get(sub["callback"], params=params)
            assert r.status_code == 404, (params, r.text)
        r = await c.get(unknown, params={"hub.mode": "subscribe", "hub.topic": pair.topic(a_item),
                                         "hub.challenge": "c", "hub.lease_seconds": "60"})
        assert r.status_code == 404


async def test_a_denial_is_recorded(pair: Pair) -> None:
    a_item, b_item, sub = await linked(pair, "x")
    async with httpx.AsyncClient() as c:
        r = await c.get(sub["callback"], params={"hub.mode": "denied",
                                                 "hub.topic": pair.topic(a_item),
                                                 "hub.reason": "no longer for you"})
    assert r.status_code == 200
    (row,) = await pair.outgoing(pair.topic(a_item))
    assert row["state"] == "denied" and row["denied_reason"] == "no longer for you"
    # Relinking is the admin's retry: B subscribes again.
    assert (await pair.link(b_item, pair.topic(a_item))).status_code == 200

    async def active() -> bool:
        return (await pair.outgoing(pair.topic(a_item)))[0]["state"] == "active"
    await eventually(active)


async def test_host_down_then_back_converges(pair: Pair) -> None:
    a_item, b_item, sub = await linked(pair, "v1")
    r = await pair.admin_a.patch(f"/api/items/{a_item}/fields/title", json={"value": "v2"})
    version = r.json()["event"]
    # B has A's key cached from a first ping (for a version it holds): A signs the
    # notification while it is up, and goes down before B fetches.
    warm = await pair.ping(sub["callback"], pair.topic(a_item), a_item, 0)
    assert warm.status_code == 202
    body, headers = pair.ping_request(sub["callback"], pair.topic(a_item), a_item, version)
    await pair.a.halt()
    try:
        async with httpx.AsyncClient() as c:
            r = await c.post(sub["callback"], content=body, headers=headers)
        assert r.status_code == 202, r.text

        async def stale() -> dict[str, Any]:
            remote = (await pair.b_fields(b_item))["their_title"]["remote"]
            assert remote["state"] == "stale" and remote["stale_since"], remote
            return remote
        remote = await eventually(stale)
        assert "does not answer" in remote["reason"]
        assert (await pair.outgoing(pair.topic(a_item)))[0]["fetch_attempts"] >= 1
    finally:
        await pair.a.start()

    async def converged() -> bool:
        f = (await pair.b_fields(b_item))["their_title"]
        return f["value"] == "v2" and f["remote"]["state"] == "live"
    await eventually(converged, within=15)


async def topic_version(pair: Pair, a_item: int) -> int:
    """The version of A's topic as B sees it (a GET signed with B's key)."""
    url = pair.topic(a_item)
    key = pair.b.keys.current("ed25519")
    headers = sign_request(RFC9421_ED25519, "GET", url, [], b"", key.private,
                           key_url(pair.b.base, key.record.kid), time.time())
    async with httpx.AsyncClient(timeout=20) as c:
        r = await c.get(url, headers=headers)
    assert r.status_code == 200, r.text
    return int(r.json()["version"])


async def test_export_revoked_clears_and_says_no_longer_shared(pair: Pair) -> None:
    a_item, b_item, sub = await linked(pair, "shared", "open")
    r = await pair.admin_a.patch("/api/trackers/bugs/fields/status",
                                 json={"export": {"mode": "none", "partners": []}})
    assert r.status_code == 200, r.text
    try:
        (row,) = await pair.outgoing(pair.topic(a_item))
        # A withdrawn export moves the version up, never down (B would refuse an older
        # document): A's re-check ping names no changed values, at the version now.
        version = await topic_version(pair, a_item)
        assert version > row["remote_version"]
        ping = await pair.ping(sub["callback"], pair.topic(a_item), a_item, version,
                               fields=())
        assert ping.status_code == 202

        async def cleared() -> dict[str, Any]:
            fields = await pair.b_fields(b_item)
            assert fields["their_status"]["value"] is None
            assert fields["their_status"]["remote"]["state"] == "no_longer_shared"
            return fields
        fields = await eventually(cleared)
        assert "no longer exports field 'status'" in fields["their_status"]["remote"]["reason"]
        assert fields["their_title"]["remote"]["state"] == "live"
        assert fields["their_title"]["value"] == "shared"
        (after,) = await pair.outgoing(pair.topic(a_item))
        assert after["remote_version"] == version  # the new document was taken
    finally:
        await pair.admin_a.patch("/api/trackers/bugs/fields/status", json={
            "export": {"mode": "partners", "partners": [pair.b.base]}})


async def test_item_deleted_on_host_is_no_longer_shared(pair: Pair) -> None:
    a_item, b_item, sub = await linked(pair, "doomed")
    # SQLite hands the highest id out again once deleted: keep it taken.
    await pair.a_item(title="after the doomed one")
    assert (await pair.admin_a.delete(f"/api/items/{a_item}")).status_code == 204
    await pair.ping(sub["callback"], pair.topic(a_item), a_item, 50, fields=())

    async def gone() -> bool:
        f = (await pair.b_fields(b_item))["their_title"]
        return f["value"] is None and f["remote"]["state"] == "no_longer_shared" and \
            "deleted" in f["remote"]["reason"]
    await eventually(gone)


async def test_unlink_unsubscribes(pair: Pair) -> None:
    a_item, b_item, _ = await linked(pair, "bye")
    assert (await pair.admin_b.delete(f"/api/items/{b_item}/link")).status_code == 204
    fields = await pair.b_fields(b_item)
    assert fields["their_title"]["value"] is None
    assert fields["their_title"]["remote"]["state"] == "unlinked"

    async def unsubscribed() -> bool:
        (hub_side,) = await pair.hub_subs(pair.topic(a_item))
        (ours,) = await pair.outgoing(pair.topic(a_item))
        return hub_side["state"] == "unsubscribed" and ours["state"] == "unsubscribed"
    await eventually(unsubscribed)
    assert (await pair.admin_b.delete(f"/api/items/{b_item}/link")).status_code == 404


async def test_only_admins_link(pair: Pair) -> None:
    b_item = await pair.b_item()
    async with pair.b.client() as anonymous:
        r = await anonymous.put(f"/api/items/{b_item}/link", json={"url": pair.topic(1)})
    assert r.status_code == 401


async def test_cli_link_and_unlink(pair: Pair) -> None:
    import asyncio

    from instance.cli import main
    from instance.config import CONFIG_FILENAME, render_toml

    a_item = await pair.a_item(title="by the CLI")
    b_item = await pair.b_item()
    s = pair.b.settings
    environ = {"FIELDCAST_DATABASE_URL": s.effective_database_url,
               "FIELDCAST_BASE_URL": s.base_url, "FIELDCAST_ALLOW_PRIVATE_CALLBACKS": "true",
               "FIELDCAST_ALLOW_HTTP_CALLBACKS": "true", "FIELDCAST_REMOTE_LEASE_SECONDS": "600"}
    data_dir = ["--data-dir", str(s.data_dir)]
    # The CLI runs only on an instance's directory (what `fieldcast init` writes).
    (s.data_dir / CONFIG_FILENAME).write_text(render_toml(s))
    await asyncio.to_thread(main, ["item", "link", str(b_item), f"{pair.a.base}/items/{a_item}",
                                   *data_dir], environ)
    assert (await pair.b_fields(b_item))["their_title"]["value"] == "by the CLI"

    async def active() -> bool:
        return (await pair.outgoing(pair.topic(a_item)))[0]["state"] == "active"
    await eventually(active)
    await asyncio.to_thread(main, ["item", "unlink", str(b_item), *data_dir], environ)

    async def unsubscribed() -> bool:
        return (await pair.outgoing(pair.topic(a_item)))[0]["state"] == "unsubscribed"
    await eventually(unsubscribed)
