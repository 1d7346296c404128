"""GET /federation/trackers/SLUG/feed.atom: Atom of public changes only, WebSub discovery
in headers and document, ETag and 304, one 404 for every tracker without a feed, and the
tracker page's head links."""

from __future__ import annotations

import uuid
import xml.etree.ElementTree as ET

import pytest

from protocol.links import discover
from tests.federation.conftest import World

pytestmark = pytest.mark.asyncio(loop_scope="module")

A = "{http://www.w3.org/2005/Atom}"


def feed_path(slug: str = "shared") -> str:
    return f"/federation/trackers/{slug}/feed.atom"


def marker(label: str) -> str:
    return f"{label}-{uuid.uuid4().hex[:8]}"


async def fetch(world: World, slug: str = "shared") -> tuple[bytes, ET.Element]:
    r = await world.client.get(feed_path(slug))
    assert r.status_code == 200, await r.get_data(as_text=True)
    assert r.headers["Content-Type"] == "application/atom+xml"
    body = await r.get_data(as_text=False)
    assert isinstance(body, bytes)
    return body, ET.fromstring(body)


def entries(root: ET.Element) -> list[dict[str, str]]:
    out = []
    for e in root.findall(f"{A}entry"):
        link = e.find(f"{A}link")
        out.append({"id": e.findtext(f"{A}id", ""), "title": e.findtext(f"{A}title", ""),
                    "updated": e.findtext(f"{A}updated", ""),
                    "content": e.findtext(f"{A}content", ""),
                    "link": link.get("href", "") if link is not None else ""})
    return out


async def test_feed_holds_public_changes_only_newest_first(world: World) -> None:
    first, second = marker("public"), marker("public")
    plan, internal = marker("partner-only"), marker("unexported")
    item = await world.item(title=first, plan=plan, internal=internal)
    r = await world.admin.patch(f"/api/items/{item}/fields/title", json={"value": second})
    assert r.status_code == 200, await r.get_data(as_text=True)
    await world.admin.patch(f"/api/items/{item}/fields/plan", json={"value": plan + "2"})

    body, root = await fetch(world)
    assert root.tag == f"{A}feed"
    assert plan.encode() not in body and internal.encode() not in body
    mine = [e for e in entries(root) if e["link"] == world.topic(item)]
    assert [e["content"] for e in mine] == [second, first]  # newest first
    assert all(e["title"] == f"#{item} title" for e in mine)
    assert all(e["id"].startswith("tag:127.0.0.1,") for e in mine)
    assert len({e["id"] for e in mine}) == 2
    assert mine[0]["updated"] >= mine[1]["updated"]
    # Ids are stable: the same change has the same id in the next render.
    _, again = await fetch(world)
    assert [e["id"] for e in entries(again) if e["link"] == world.topic(item)] == \
        [e["id"] for e in mine]


async def test_discovery_in_headers_and_in_the_feed(world: World) -> None:
    await world.item(title=marker("t"))
    r = await world.client.get(feed_path())
    self_url = world.base + feed_path()
    found = discover(r.headers.get_all("Link"), base_url=self_url)
    assert found.hubs == (world.hub,) and found.self_url == self_url
    root = ET.fromstring(await r.get_data())
    links = {link.get("rel"): link.get("href") for link in root.findall(f"{A}link")}
    assert links["self"] == self_url and links["hub"] == world.hub
    assert root.findtext(f"{A}id") == self_url


async def test_etag_and_304(world: World) -> None:
    item = await world.item(title=marker("etag"))
    r = await world.client.get(feed_path())
    tag = r.headers["ETag"]
    assert tag.startswith('"') and not tag.startswith("W/")
    again = await world.client.get(feed_path(), headers={"If-None-Match": tag})
    assert again.status_code == 304 and await again.get_data() == b""
    assert again.headers["ETag"] == tag and again.headers["Link"] == r.headers["Link"]
    await world.admin.patch(f"/api/items/{item}/fields/title", json={"value": marker("e2")})
    changed = await world.client.get(feed_path(), headers={"If-None-Match": tag})
    assert changed.status_code == 200 and changed.headers["ETag"] != tag
    # A change of a field that is not public leaves the feed as it was.
    tag = changed.headers["ETag"]
    await world.admin.patch(f"/api/items/{item}/fields/plan", json={"value": marker("p")})
    same = await world.client.get(feed_path(), headers={"If-None-Match": tag})
    assert same.status_code == 304


async def test_every_tracker_without_a_feed_answers_the_same_404(world: World) -> None:
    await world.item("partners", plan=marker("p"))
    answers = [await world.client.get(feed_path(slug))
               for slug in ("no-such-tracker", "partners", "closed")]
    assert {a.status_code for a in answers} == {404}
    bodies = {await a.get_data() for a in answers}
    assert len(bodies) == 1
    assert {a.headers["Content-Type"] for a in answers} == {"application/json"}
    assert not any("Link" in a.headers or "ETag" in a.headers for a in answers)


async def test_deleted_items_and_fields_no_longer_public_leave_the_feed(world: World
                                                                        ) -> None:
    gone_value = marker("deleted")
    gone = await world.item(title=gone_value)
    assert (await world.admin.delete(f"/api/items/{gone}")).status_code in (200, 204)
    body, _ = await fetch(world)
    assert gone_value.encode() not in body

    r = await world.admin.post("/api/trackers", json={"slug": f"feed{uuid.uuid4().hex[:6]}"})
    slug = (await r.get_json())["slug"]
    for name in ("a", "b"):
        r = await world.admin.post(f"/api/trackers/{slug}/fields", json={
            "name": name, "label": name, "export": {"mode": "public", "partners": []}})
        assert r.status_code == 201
    was_public = marker("was-public")
    await world.item(slug, a=was_public, b=marker("b"))
    assert was_public.encode() in (await fetch(world, slug))[0]
    r = await world.admin.patch(f"/api/trackers/{slug}/fields/a", json={
        "export": {"mode": "partners", "partners": [world.partner.base]}})
    assert r.status_code == 200, await r.get_data(as_text=True)
    assert was_public.encode() not in (await fetch(world, slug))[0]


async def test_tracker_page_links_its_feed_and_hub(world: World) -> None:
    r = await world.admin.get("/trackers/shared")
    html = await r.get_data(as_text=True)
    assert (f'<link rel="alternate" type="application/atom+xml" '
            f'href="{world.base}{feed_path()}"') in html
    assert f'<link rel="hub" href="{world.hub}">' in html
    html = await (await world.admin.get("/trackers/closed")).get_data(as_text=True)
    assert "application/atom+xml" not in html and 'rel="hub"' not in html
