"""The other pages and the item page's edges: logging in and where it leads, error pages,
the tracker list, values that look like HTML, read and edit rights changing under an
open page, remote fields and number input the browser cannot parse."""

from __future__ import annotations

from urllib.parse import parse_qs, urlsplit

from playwright.async_api import Browser, expect

from tests.browser.conftest import PASSWORD, Site, logged_in, open_item


async def test_login_leads_back_only_within_the_site_and_errors_show(
    browser: Browser, site: Site,
) -> None:
    context = await browser.new_context(base_url=site.url)
    page = await context.new_page()
    # An anonymous visitor who may not read the item is sent to log in, then back.
    await page.goto(f"/items/{site.item}")
    sent_to = urlsplit(page.url)
    assert sent_to.path == "/login"
    assert parse_qs(sent_to.query) == {"next": [f"/items/{site.item}"]}
    await page.fill("#username", "alice")
    await page.fill("#password", "not the password")
    await page.click("button[type=submit]")
    await expect(page.locator("#login-error")).to_be_visible()
    await expect(page.locator("#login-error")).not_to_be_empty()
    await page.fill("#password", PASSWORD)
    await page.click("button[type=submit]")
    await page.wait_for_url(f"{site.url}/items/{site.item}")
    await expect(page.locator("#conn")).to_have_attribute("data-state", "live")

    # Logging out ends the session; next= pointing elsewhere lands on the home page.
    await page.click("#logout")
    await page.wait_for_url(f"{site.url}/login")
    await page.goto("/login?next=//evil.example/x")
    await page.fill("#username", "alice")
    await page.fill("#password", PASSWORD)
    await page.click("button[type=submit]")
    await page.wait_for_url(f"{site.url}/")

    # Missing pages are pages, with the status.
    response = await page.goto("/items/999999")
    assert response is not None and response.status == 404
    assert "text/html" in response.headers["content-type"]
    await expect(page.locator("h1")).to_have_text("404")
    response = await page.goto("/no/such/page")
    assert response is not None and response.status == 404
    await expect(page.locator("h1")).to_have_text("404")


async def test_tracker_list_and_a_new_item(browser: Browser, site: Site) -> None:
    _, alice = await logged_in(browser, site, "alice")
    await alice.click("text=Bugs")
    await alice.wait_for_url(f"{site.url}/trackers/bugs")
    row = alice.locator("table.items tbody tr").first
    await expect(row).to_contain_text(f"#{site.item}")
    await expect(row).to_contain_text("Crash on save")
    await alice.click("#new-item")
    await alice.wait_for_url(f"{site.url}/items/{site.item + 1}")
    await expect(alice.locator("#conn")).to_have_attribute("data-state", "live")
    await expect(alice.locator("#value-title")).to_have_text("—")


async def test_values_that_look_like_html_stay_text(browser: Browser, site: Site) -> None:
    payload = '<img src=x onerror="window.pwned=1"><b>bold</b>'
    admin = await site.server.client()
    r = await admin.patch(f"/api/items/{site.item}/fields/title", json={"value": payload})
    r.raise_for_status()
    _, bob = await logged_in(browser, site, "bob")
    await open_item(bob, site)
    await expect(bob.locator("#value-title")).to_have_text(payload)
    # And arriving live, not only when rendered with the page.
    r = await admin.patch(f"/api/items/{site.item}/fields/notes", json={"value": payload})
    r.raise_for_status()
    await expect(bob.locator("#value-notes")).to_have_text(payload)
    await bob.goto("/trackers/bugs")
    await expect(bob.locator("table.items")).to_contain_text(payload)
    for page_url in (f"/items/{site.item}", "/trackers/bugs"):
        await bob.goto(page_url)
        assert await bob.locator("main img, main b").count() == 0
        assert await bob.evaluate("window.pwned") is None
    await admin.aclose()


async def test_rights_change_under_an_open_page(browser: Browser, site: Site) -> None:
    admin = await site.server.client()
    _, bob = await logged_in(browser, site, "bob")
    await open_item(bob, site)
    # Bob is editing the title while his rights change: his draft must survive.
    await bob.click("#field-title button.edit")
    await bob.fill("#input-title", "draft in progress")

    (await admin.delete("/api/groups/Staff/members/bob")).raise_for_status()
    await expect(bob.locator("#field-notes")).to_have_count(0)
    assert "staff only" not in await bob.content()

    (await admin.put("/api/groups/Staff/members/bob")).raise_for_status()
    await expect(bob.locator("#value-notes")).to_have_text("staff only")
    # Back in its place in the tracker's order, and the editor kept focus and draft.
    assert await bob.eval_on_selector_all(".field", "s => s.map(e => e.dataset.field)") == [
        "title", "status", "notes", "estimate"]
    await expect(bob.locator("#input-title")).to_be_focused()
    await expect(bob.locator("#input-title")).to_have_value("draft in progress")
    await admin.aclose()


async def test_edit_right_change_under_an_open_page(browser: Browser, site: Site) -> None:
    admin = await site.server.client()
    _, bob = await logged_in(browser, site, "bob")
    await open_item(bob, site)
    await bob.click("#field-notes button.edit")
    await bob.fill("#input-notes", "my draft")
    await expect(bob.locator("#field-status button.edit")).to_have_count(1)

    # Staff may still read notes but no longer edit them, nor anybody the status.
    (await admin.patch("/api/trackers/bugs/fields/notes",
                       json={"edit_groups": []})).raise_for_status()
    (await admin.patch("/api/trackers/bugs/fields/status",
                       json={"edit_groups": []})).raise_for_status()
    await expect(bob.locator("#field-status button.edit")).to_have_count(0)
    await expect(bob.locator("#field-notes button[type=submit]")).to_be_disabled()
    await expect(bob.locator("#field-notes .note")).to_contain_text("no longer edit Notes")
    # The draft stays on screen, and the values are still shown.
    await expect(bob.locator("#input-notes")).to_have_value("my draft")
    await expect(bob.locator("#value-status")).to_have_text("open")

    (await admin.patch("/api/trackers/bugs/fields/notes",
                       json={"edit_groups": ["Staff"]})).raise_for_status()
    await expect(bob.locator("#field-notes button[type=submit]")).to_be_enabled()
    await bob.click("#field-notes button[type=submit]")
    await expect(bob.locator("#value-notes")).to_have_text("my draft")
    r = await admin.get(f"/api/items/{site.item}")
    assert r.json()["fields"]["notes"]["value"] == "my draft"
    await expect(bob.locator("#field-status button.edit")).to_have_count(0)
    await admin.aclose()


async def test_remote_fields_are_read_only_and_name_their_instance(
    browser: Browser, site: Site,
) -> None:
    admin = await site.server.client()
    (await admin.post("/api/trackers/bugs/fields", json={
        "name": "upstream", "label": "Upstream status", "type": "remote",
        "options": {"source": {"instance": "https://upstream.example",
                               "tracker": "bugs", "field": "status"}},
    })).raise_for_status()
    await admin.aclose()
    _, alice = await logged_in(browser, site, "alice")
    await open_item(alice, site)
    field = alice.locator("#field-upstream")
    # An item not linked to the host says so beside where the field comes from.
    await expect(field.locator(".remote")).to_have_text(
        "read-only, from https://upstream.example · not linked")
    await expect(field.locator(".remote")).to_have_attribute("data-state", "unlinked")
    await expect(field.locator("button")).to_have_count(0)
    await expect(alice.locator("#field-title button.edit")).to_have_count(1)


async def test_unparsable_number_is_refused_not_saved_as_empty(
    browser: Browser, site: Site,
) -> None:
    admin = await site.server.client()
    r = await admin.patch(f"/api/items/{site.item}/fields/estimate", json={"value": 3})
    r.raise_for_status()
    _, alice = await logged_in(browser, site, "alice")
    await open_item(alice, site)
    await alice.click("#field-estimate button.edit")
    await alice.locator("#input-estimate").press("Control+A")
    await alice.keyboard.type("1e")  # accepted by the input, not a number
    # It reads as "", which saved would clear the field; the form must refuse instead.
    assert await alice.locator("#input-estimate").evaluate("e => e.validity.badInput")
    await alice.keyboard.press("Enter")
    await alice.locator("#field-estimate button[type=submit]").click()
    await expect(alice.locator("#input-estimate")).to_be_visible()
    r = await admin.get(f"/api/items/{site.item}")
    assert r.json()["fields"]["estimate"]["value"] == 3
    # A real number saves.
    await alice.locator("#input-estimate").fill("5.5")
    await alice.keyboard.press("Enter")
    await expect(alice.locator("#value-estimate")).to_have_text("5.5")
    r = await admin.get(f"/api/items/{site.item}")
    # Exactly one save happened: a stray one would have made this a conflict.
    assert r.json()["fields"]["estimate"]["value"] == 5.5
    assert r.json()["fields"]["estimate"]["version"] == 2
    await admin.aclose()
