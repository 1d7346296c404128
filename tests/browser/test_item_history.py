"""The item page's history and title, Enter on a dropdown, and saves that fail: the server
down, the session ended elsewhere. One instance for the module; each test its own item."""

from __future__ import annotations

import asyncio
import re
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
from playwright.async_api import Browser, Page, expect

from tests.browser.conftest import ARTIFACTS, PASSWORD, Site, logged_in, open_item, populate
from tests.harness import RunningInstance


@pytest.fixture(scope="module")
def shared(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningInstance]:
    server = RunningInstance.create(Path(tmp_path_factory.mktemp("item-history")), "browser")
    server.start()
    populate(server)
    yield server
    server.stop()


@contextmanager
def client(server: RunningInstance, user: str | None = None) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server.base_url) as http:
        if user is not None:
            password = "harness admin password" if user == "admin" else PASSWORD
            http.post("/api/login", json={"username": user, "password": password}
                      ).raise_for_status()
        yield http


def new_item(server: RunningInstance, **values: Any) -> Site:
    with client(server, "admin") as admin:
        r = admin.post("/api/trackers/bugs/items", json={"fields": values})
        r.raise_for_status()
        return Site(server, r.json()["id"])


def save(http: httpx.Client, item: int, field: str, value: Any) -> None:
    http.patch(f"/api/items/{item}/fields/{field}", json={"value": value}).raise_for_status()


async def history_fields(page: Page) -> list[str]:
    return await page.eval_on_selector_all(
        "#history-list .change", "es => es.map(e => e.dataset.field)")


async def test_history_title_and_enter_on_a_dropdown(browser: Browser, shared: RunningInstance
                                                     ) -> None:
    site = new_item(shared, title="Printer on fire", status="open", notes="SECRET-0")
    with client(shared, "admin") as admin:
        for n in range(1, 23):
            save(admin, site.item, "title", f"Printer on fire {n}")
        for n in range(1, 4):
            save(admin, site.item, "notes", f"SECRET-{n}")
    _, carol = await logged_in(browser, site, "carol")
    _, alice = await logged_in(browser, site, "alice")
    await open_item(carol, site)
    # The heading and the window title are the item's title, not "#ID".
    await expect(carol.locator("h1")).to_have_text("Printer on fire 22")
    assert (await carol.title()).startswith("Printer on fire 22 · Bugs")
    # Newest first, a page at a time: 24 changes carol may read (title 23, status 1).
    entries = carol.locator("#history-list .change")
    await expect(entries).to_have_count(20)
    first = entries.first
    await expect(first.locator(".change-who")).to_have_text("admin")
    await expect(first.locator(".change-field")).to_have_text("Title")
    await expect(first.locator(".change-old")).to_have_text("Printer on fire 21")
    await expect(first.locator(".change-new")).to_have_text("Printer on fire 22")
    await expect(first.locator("time")).to_have_text(re.compile(r"\d"))
    await carol.click("#history-more")
    await expect(entries).to_have_count(24)
    await expect(carol.locator("#history-more")).to_be_hidden()
    await expect(entries.last.locator(".change-old")).to_have_text("—")  # set on creation
    assert set(await history_fields(carol)) == {"title", "status"}
    # One field's changes.
    await carol.select_option("#history-field", "status")
    await expect(entries).to_have_count(1)
    await expect(entries.first.locator(".change-new")).to_have_text("open")
    await carol.select_option("#history-field", "")
    await expect(entries).to_have_count(20)

    # Alice, who may read the notes, sees their changes too.
    await open_item(alice, site)
    await alice.select_option("#history-field", "notes")
    await expect(alice.locator("#history-list .change")).to_have_count(4)
    # Enter saves a dropdown.
    await alice.click("#field-status button.edit")
    await alice.locator("#input-status").select_option("closed")
    await alice.locator("#input-status").press("Enter")
    await expect(alice.locator("#value-status")).to_have_text("closed")
    # Carol's page: the new change on top, live; the heading follows the title.
    await expect(entries.first.locator(".change-field")).to_have_text("Status")
    await expect(entries.first.locator(".change-old")).to_have_text("open")
    await expect(entries.first.locator(".change-new")).to_have_text("closed")
    await alice.click("#field-title button.edit")
    await alice.fill("#input-title", "Printer fixed")
    await alice.locator("#input-title").press("Enter")
    await expect(carol.locator("h1")).to_have_text("Printer fixed")
    await expect(entries.first.locator(".change-new")).to_have_text("Printer fixed")
    assert (await carol.title()).startswith("Printer fixed · Bugs")
    # A change carol may not read never shows up in her history.
    await alice.click("#field-notes button.edit")
    await alice.fill("#input-notes", "SECRET-LIVE")
    await alice.click("#field-notes button[type=submit]")
    await expect(alice.locator("#history-list .change").first.locator(".change-new")
                 ).to_have_text("SECRET-LIVE")
    await asyncio.sleep(0.5)
    assert "notes" not in await history_fields(carol)
    assert "SECRET" not in await carol.content()
    ARTIFACTS.mkdir(exist_ok=True)
    await carol.screenshot(path=str(ARTIFACTS / "item-history.png"), full_page=True)

    # Alice's read right on the notes ends: their changes leave her history at once, and
    # come back with the right.
    with client(shared, "admin") as admin:
        admin.patch("/api/trackers/bugs/fields/notes", json={"read_groups": []}
                    ).raise_for_status()
        await expect(alice.locator("#field-notes")).to_have_count(0)
        await expect(alice.locator("#history-field")).to_have_value("")
        await expect(alice.locator("#history-list .change")).to_have_count(20)
        assert "notes" not in await history_fields(alice)
        assert "SECRET" not in await alice.content()
        admin.patch("/api/trackers/bugs/fields/notes", json={"read_groups": ["Staff"]}
                    ).raise_for_status()
    await expect(alice.locator("#value-notes")).to_have_text("SECRET-LIVE")
    await expect(alice.locator("#history-list .change").first.locator(".change-new")
                 ).to_have_text("SECRET-LIVE")


async def test_logged_out_elsewhere_keeps_the_draft(browser: Browser, shared: RunningInstance
                                                    ) -> None:
    site = new_item(shared, title="Before logout")
    here, alice = await logged_in(browser, site, "alice")
    await open_item(alice, site)
    await alice.click("#field-title button.edit")
    await alice.fill("#input-title", "typed before the logout")
    # Another tab of the same browser logs out (the cookie goes for both tabs).
    other = await here.new_page()
    await other.goto("/")
    await other.click("#logout")
    await other.wait_for_url(f"{site.url}/login")
    await other.close()
    # The socket hears the session ended: the header and the page say so.
    await expect(alice.locator("header .who")).not_to_contain_text("alice")
    await expect(alice.locator("#login-again")).to_be_visible()
    await expect(alice.locator("#session-note")).to_contain_text("logged out")
    await alice.click("#field-title button[type=submit]")
    await expect(alice.locator("#field-title .note")).to_contain_text("you were logged out")
    await expect(alice.locator("#input-title")).to_have_value("typed before the logout")
    # Logging in again brings the draft back into the editor, and it saves.
    await alice.click("#login-again")
    await alice.fill("#username", "alice")
    await alice.fill("#password", PASSWORD)
    await alice.click("button[type=submit]")
    await alice.wait_for_url(f"{site.url}/items/{site.item}")
    await expect(alice.locator("#input-title")).to_have_value("typed before the logout")
    await expect(alice.locator("#field-title .note")).to_contain_text("restored")
    await alice.click("#field-title button[type=submit]")
    await expect(alice.locator("#value-title")).to_have_text("typed before the logout")
    await expect(alice.locator("h1")).to_have_text("typed before the logout")
    # Saved: the draft is gone, a reload opens no editor.
    await alice.reload()
    await expect(alice.locator("#value-title")).to_have_text("typed before the logout")
    await expect(alice.locator("#input-title")).to_have_count(0)

    # Logged out and back in from another tab: Save here just works, the header and the
    # live socket come back.
    await open_item(alice, site)
    await alice.click("#field-title button.edit")
    await alice.fill("#input-title", "saved after logging in elsewhere")
    other = await here.new_page()
    await other.goto("/")
    await other.click("#logout")
    await expect(alice.locator("#session-note")).to_be_visible()
    await other.fill("#username", "alice")
    await other.fill("#password", PASSWORD)
    await other.click("button[type=submit]")
    await other.wait_for_url(f"{site.url}/")
    await other.close()
    await alice.click("#field-title button[type=submit]")
    await expect(alice.locator("#value-title")).to_have_text("saved after logging in elsewhere")
    await expect(alice.locator("#session-note")).to_be_hidden()
    await expect(alice.locator("header .who")).to_contain_text("alice")
    # The header is the one the server renders: the name links to the account page.
    await expect(alice.locator("#account-link")).to_have_attribute("href", "/account")
    await expect(alice.locator("#conn")).to_have_attribute("data-state", "live")


async def test_server_down_mid_edit_keeps_the_text(browser: Browser, shared: RunningInstance
                                                   ) -> None:
    site = new_item(shared, title="Server test", notes="before")
    _, alice = await logged_in(browser, site, "alice")
    await open_item(alice, site)
    await alice.click("#field-notes button.edit")
    await alice.fill("#input-notes", "typed while the server is down")
    shared.stop()
    try:
        await alice.click("#field-notes button[type=submit]")
        note = alice.locator("#field-notes .note")
        await expect(note).to_contain_text("cannot reach the server")
        await expect(alice.locator("#input-notes")).to_have_value(
            "typed while the server is down")
        await expect(alice.locator("#value-notes")).to_have_text("before")
    finally:
        shared.start()
    await expect(alice.locator("#conn")).to_have_attribute("data-state", "live", timeout=15000)
    await expect(note).to_contain_text("server is back")
    await alice.click("#field-notes button[type=submit]")
    await expect(alice.locator("#value-notes")).to_have_text("typed while the server is down")
    await expect(alice.locator("#input-notes")).to_have_count(0)
