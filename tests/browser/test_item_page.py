"""The item page in Chromium: live updates between users, rights in the DOM and on the
wire, the conflict flow, reconnecting after a restart (with a gap that can be replayed and
one that cannot), keyboard use and a phone screen."""

from __future__ import annotations

import asyncio
import re

from playwright.async_api import Browser, Page, expect

from instance import items as items_service
from instance import trackers as trackers_service
from instance.changelog import ChangeLog, LogConnection
from instance.config import load_settings
from instance.db import Database
from instance.rights import Principal
from tests.browser.conftest import ARTIFACTS, Site, logged_in, open_item


def capture_frames(page: Page) -> list[str]:
    """Every WebSocket frame the page receives, as raw text."""
    frames: list[str] = []
    page.on("websocket", lambda ws: ws.on(
        "framereceived", lambda payload: frames.append(payload if isinstance(payload, str)
                                                       else payload.decode())))
    return frames


async def edit(page: Page, field: str, value: str) -> None:
    await page.click(f"#field-{field} button.edit")
    editor = page.locator(f"#input-{field}")
    if await editor.evaluate("e => e.tagName") == "SELECT":
        await editor.select_option(value)
    else:
        await editor.fill(value)
    await page.click(f"#field-{field} button[type=submit]")


async def test_a_save_appears_for_others_and_never_for_those_who_may_not_read(
    browser: Browser, site: Site,
) -> None:
    _, alice = await logged_in(browser, site, "alice")
    _, bob = await logged_in(browser, site, "bob")
    _, carol = await logged_in(browser, site, "carol")
    carol_frames = capture_frames(carol)
    for page in (alice, bob, carol):
        await open_item(page, site)
    # The tracker's field order, not alphabetical.
    assert await bob.eval_on_selector_all(".field", "s => s.map(e => e.dataset.field)") == [
        "title", "status", "notes", "estimate"]
    await expect(carol.locator("#field-notes")).to_have_count(0)
    await expect(bob.locator("#value-notes")).to_have_text("staff only")

    await edit(alice, "notes", "SECRET-PLAN-42")
    await edit(alice, "title", "Crash on save, fixed")
    await expect(alice.locator("#value-title")).to_have_text("Crash on save, fixed")
    # Bob sees both without a reload; Carol only the title.
    await expect(bob.locator("#value-notes")).to_have_text("SECRET-PLAN-42")
    await expect(bob.locator("#value-title")).to_have_text("Crash on save, fixed")
    await expect(bob.locator("#field-title.flash")).to_have_count(1)
    await expect(carol.locator("#value-title")).to_have_text("Crash on save, fixed")
    await asyncio.sleep(0.5)  # let any stray frame arrive before looking
    assert "SECRET-PLAN-42" not in await carol.content()
    assert any("Crash on save, fixed" in f for f in carol_frames)
    assert not any("SECRET-PLAN-42" in f or '"notes"' in f for f in carol_frames)
    ARTIFACTS.mkdir(exist_ok=True)
    await bob.screenshot(path=str(ARTIFACTS / "item-page.png"), full_page=True)


async def test_conflict_keep_mine_and_take_theirs(browser: Browser, site: Site) -> None:
    _, alice = await logged_in(browser, site, "alice")
    _, bob = await logged_in(browser, site, "bob")
    for page in (alice, bob):
        await open_item(page, site)
    # Both start editing version 1 of the title; Alice saves first.
    await bob.click("#field-title button.edit")
    await bob.fill("#input-title", "Bob's title")
    await edit(alice, "title", "Alice's title")
    await expect(bob.locator("#field-title .note")).to_contain_text("alice changed this")
    # Bob's draft was kept, not clobbered.
    await expect(bob.locator("#input-title")).to_have_value("Bob's title")
    await bob.click("#field-title button[type=submit]")
    panel = bob.locator("#field-title .conflict")
    await expect(panel.locator(".theirs")).to_have_text("Alice's title")
    await expect(panel.locator(".mine")).to_have_text("Bob's title")
    # Who changed it and when (the 412 body's `current`), in the reader's local time.
    await expect(panel.locator("p").first).to_contain_text(
        re.compile(r"^alice changed Title while you were editing \(.*\d.*\)\.$"))
    await panel.locator(".keep-mine").click()
    await expect(bob.locator("#value-title")).to_have_text("Bob's title")
    await expect(alice.locator("#value-title")).to_have_text("Bob's title")

    # Second round: Bob takes Alice's value instead.
    await bob.click("#field-title button.edit")
    await bob.fill("#input-title", "Bob again")
    await edit(alice, "title", "Alice wins")
    await bob.click("#field-title button[type=submit]")
    await bob.locator("#field-title .conflict .take-theirs").click()
    await expect(bob.locator("#value-title")).to_have_text("Alice wins")
    await expect(bob.locator("#field-title .conflict")).to_have_count(0)
    await asyncio.sleep(0.3)
    await expect(alice.locator("#value-title")).to_have_text("Alice wins")


async def test_reconnect_after_restart_shows_what_changed_meanwhile(
    browser: Browser, site: Site,
) -> None:
    _, bob = await logged_in(browser, site, "bob")
    await open_item(bob, site)
    site.server.stop()
    await expect(bob.locator("#conn")).to_have_attribute("data-state", "reconnecting")
    await expect(bob.locator("#conn-text")).to_have_text("reconnecting…")
    # While the server is down, the data changes (as another process would change it).
    await change_offline(site, status="closed", notes="changed offline")
    site.server.start()
    await expect(bob.locator("#conn")).to_have_attribute("data-state", "live", timeout=15000)
    await expect(bob.locator("#value-status")).to_have_text("closed")
    await expect(bob.locator("#value-notes")).to_have_text("changed offline")


async def change_offline(site: Site, **values: str) -> None:
    """Change fields while the server is down, as another process would."""
    settings = load_settings(data_dir=site.server.data_dir, environ={})
    db = Database(settings.effective_database_url)
    async with ChangeLog(db).write() as session:
        admin = Principal(1, "admin", True, frozenset())

        def save(log: LogConnection) -> None:
            for name, value in values.items():
                items_service.save_field(log, site.item, name, value, admin, if_match=None)

        await session.sync(save)
    await db.dispose()


async def test_rights_changed_while_the_socket_was_down_apply_on_reconnect(
    browser: Browser, site: Site,
) -> None:
    _, bob = await logged_in(browser, site, "bob")
    await open_item(bob, site)
    await expect(bob.locator("#value-notes")).to_have_text("staff only")
    await expect(bob.locator("#field-status button.edit")).to_have_count(1)
    site.server.stop()
    await expect(bob.locator("#conn")).to_have_attribute("data-state", "reconnecting")
    settings = load_settings(data_dir=site.server.data_dir, environ={})
    db = Database(settings.effective_database_url)
    async with ChangeLog(db).write() as session:
        bugs = await trackers_service.get_tracker(session, "bugs")
        for name, change in (("notes", {"read_groups": []}), ("status", {"edit_groups": []})):
            field = await trackers_service.get_field(session, bugs, name)
            await trackers_service.update_field(session, field, change)
    await db.dispose()
    site.server.start()
    await expect(bob.locator("#conn")).to_have_attribute("data-state", "live", timeout=15000)
    # Notes are no longer Bob's to read, nor the status his to edit.
    await expect(bob.locator("#field-notes")).to_have_count(0)
    assert "staff only" not in await bob.content()
    await expect(bob.locator("#field-status button.edit")).to_have_count(0)
    await expect(bob.locator("#field-title button.edit")).to_have_count(1)


async def test_unrecoverable_gap_reloads_the_item(browser: Browser, site: Site) -> None:
    _, bob = await logged_in(browser, site, "bob")
    frames = capture_frames(bob)
    await open_item(bob, site)
    site.server.stop()
    await expect(bob.locator("#conn")).to_have_attribute("data-state", "reconnecting")
    # A position the server cannot replay from (as after the log was reset): the hub
    # answers recovered: false, and only a reload can show what changed meanwhile.
    await bob.evaluate("() => { window.fieldcast.position.epoch = 'before-a-reset'; }")
    await change_offline(site, title="renamed while down")
    site.server.start()
    await expect(bob.locator("#conn")).to_have_attribute("data-state", "live", timeout=15000)
    await expect(bob.locator("#value-title")).to_have_text("renamed while down")
    subscribed = [f for f in frames if '"subscribed"' in f]
    assert '"recovered":false' in subscribed[-1]
    assert '"updates"' not in "".join(frames[frames.index(subscribed[-1]):])
    # The page took the server's position: later changes arrive live again.
    assert await bob.evaluate("() => window.fieldcast.position.epoch") != "before-a-reset"
    admin = await site.server.client()
    (await admin.patch(f"/api/items/{site.item}/fields/status", json={"value": "closed"})
     ).raise_for_status()
    await expect(bob.locator("#value-status")).to_have_text("closed")
    await admin.aclose()


async def test_keyboard_only_edit(browser: Browser, site: Site) -> None:
    _, alice = await logged_in(browser, site, "alice")
    await open_item(alice, site)
    # Tab to the title's edit button.
    for _ in range(20):
        await alice.keyboard.press("Tab")
        if await alice.evaluate("document.activeElement.textContent") == "Edit Title":
            break
    else:
        raise AssertionError("Tab never reached the Edit Title button")
    await alice.keyboard.press("Enter")
    await expect(alice.locator("#input-title")).to_be_focused()
    await alice.keyboard.press("Control+A")
    await alice.keyboard.type("Typed with the keyboard")
    await alice.keyboard.press("Enter")
    await expect(alice.locator("#value-title")).to_have_text("Typed with the keyboard")
    await expect(alice.locator("#field-title button.edit")).to_be_focused()
    # Escape cancels an edit and keeps the saved value.
    await alice.keyboard.press("Enter")
    await alice.keyboard.type(" and more")
    await alice.keyboard.press("Escape")
    await expect(alice.locator("#input-title")).to_have_count(0)
    await expect(alice.locator("#value-title")).to_have_text("Typed with the keyboard")


async def test_phone_sized_screen(browser: Browser, site: Site) -> None:
    _, alice = await logged_in(browser, site, "alice", viewport={"width": 375, "height": 667})
    await open_item(alice, site)
    await edit(alice, "notes", "a long line " * 40)
    await expect(alice.locator("#value-notes")).to_contain_text("a long line")
    width = await alice.evaluate("document.scrollingElement.scrollWidth")
    assert width <= 375, width
    ARTIFACTS.mkdir(exist_ok=True)
    await alice.screenshot(path=str(ARTIFACTS / "item-page-phone.png"), full_page=True)
