"""B's item page in Chromium: a remote field shows its value, the host's item (a link)
and its state, and a value fetched after a ping arrives live with the usual highlight."""

from __future__ import annotations

import shutil

import pytest
from playwright.async_api import async_playwright, expect

from tests.browser.conftest import CHROMIUM, FLAGS
from tests.conftest import IN_CI, PASSWORD
from tests.remote.conftest import Pair
from tests.remote.test_subscriber import linked

pytestmark = pytest.mark.asyncio(loop_scope="module")


async def test_remote_field_display(pair: Pair, request: pytest.FixtureRequest) -> None:
    if "postgres" in request.node.name:
        pytest.skip("the page is the same on either database; SQLite covers it")
    if not shutil.which(CHROMIUM):
        if IN_CI:
            pytest.fail(f"{CHROMIUM} is missing under CI=true")
        pytest.skip(f"{CHROMIUM} is not installed (apt-get install chromium)")
    a_item, b_item, _ = await linked(pair, "Host title", "open")
    async with async_playwright() as p:
        browser = await p.chromium.launch(executable_path=CHROMIUM, args=FLAGS)
        try:
            page = await (await browser.new_context(base_url=pair.b.base)).new_page()
            await page.goto("/login")
            await page.fill("#username", "admin")
            await page.fill("#password", PASSWORD)
            await page.click("button[type=submit]")
            await page.wait_for_url(pair.b.base + "/")
            await page.goto(f"/items/{b_item}")
            await page.wait_for_selector("#conn[data-state=live]")
            await expect(page.locator("#value-their_title")).to_have_text("Host title")
            remote = page.locator("#field-their_title .remote")
            await expect(remote).to_have_attribute("data-state", "live")
            await expect(remote.locator(".remote-state")).to_have_text("live")
            await expect(remote).to_contain_text("synced")
            host = remote.locator("a.host-item")
            await expect(host).to_have_attribute("href", f"{pair.a.base}/items/{a_item}")
            await expect(page.locator("#field-their_title button.edit")).to_have_count(0)

            # An edit on A reaches B's open page by itself: A's signed ping, B's fetch,
            # B's change log, B's /live.
            r = await pair.admin_a.patch(f"/api/items/{a_item}/fields/title",
                                         json={"value": "Changed on A"})
            assert r.status_code == 200
            await expect(page.locator("#value-their_title")).to_have_text("Changed on A")
            await expect(page.locator("#field-their_title")).to_have_class("field flash")

            # B's admin page lists what B follows.
            await page.goto("/admin/federation")
            row = page.locator("#following tbody tr", has_text=pair.topic(a_item))
            await expect(row).to_have_count(1)
            await expect(row).to_contain_text("active")
        finally:
            await browser.close()
