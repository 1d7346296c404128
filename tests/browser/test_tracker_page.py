"""The tracker page: find an item by search and filter, sort, page, open it; a new item
created meanwhile appears without a reload; every readable column, words kept whole."""

from __future__ import annotations

import httpx
from playwright.async_api import Browser, expect

from tests.browser.conftest import Site, logged_in


async def test_find_open_and_see_new_items_live(browser: Browser, site: Site) -> None:
    admin = httpx.AsyncClient(base_url=site.url)
    (await admin.post("/api/login", json={"username": "admin",
                                   "password": "harness admin password"})).raise_for_status()
    (await admin.post("/api/trackers/bugs/fields", json={
        "name": "due", "label": "Due date", "type": "date"})).raise_for_status()
    made = {}
    for title, status in (("Slow login", "closed"), ("Crash on load", "closed"),
                          ("Typo in footer", "open")):
        r = await admin.post("/api/trackers/bugs/items",
                       json={"fields": {"title": title, "status": status, "due": "2026-12-24"}})
        made[title] = r.raise_for_status().json()["id"]

    _, page = await logged_in(browser, site, "alice", viewport={"width": 420, "height": 800})
    await page.goto("/trackers/bugs")
    await page.wait_for_selector("#conn[data-state=live]")
    # Every readable field is a column (five here), and the narrow table scrolls instead
    # of breaking words.
    headers = page.locator("table.items thead th")
    await expect(headers).to_have_text(["# ▲", "Title", "Status", "Notes", "Estimate",
                                        "Due date"])
    assert await page.eval_on_selector(
        "table.items td[data-field=title]", "td => getComputedStyle(td).overflowWrap"
    ) == "normal"
    assert await page.eval_on_selector(".table-wrap", "w => w.scrollWidth > w.clientWidth")

    # Search and filter: the form's GET parameters, so the result is a shareable link.
    await page.fill("#find-q", "crash")
    await page.select_option("#find-status", "closed")
    await page.click("#find button[type=submit]")
    await page.wait_for_url("**/trackers/bugs?q=crash&status=closed")
    rows = page.locator("table.items tbody tr")
    await expect(rows).to_have_count(1)
    await expect(rows.first).to_contain_text("Crash on load")

    # A sortable header keeps the filter; then the item opens from its row.
    await page.click("table.items th[data-field=title] a")
    await page.wait_for_url("**sort=title**")
    assert "status=closed" in page.url and "q=crash" in page.url
    await page.click(f"a[href='/items/{made['Crash on load']}']")
    await page.wait_for_url(f"{site.url}/items/{made['Crash on load']}")
    await expect(page.locator("#value-title")).to_have_text("Crash on load")

    # Paging: two to a page, forward and back.
    await page.goto("/trackers/bugs?sort=title&limit=2")
    await expect(rows).to_have_count(2)
    first = await rows.all_inner_texts()
    await page.click("#next-page")
    await expect(rows).to_have_count(2)
    assert await rows.all_inner_texts() != first
    await page.click("#prev-page")
    await expect(rows).to_have_count(2)
    assert await rows.all_inner_texts() == first

    # Live: an item created through the API appears, and its changes arrive in place.
    await page.goto("/trackers/bugs")
    await page.wait_for_selector("#conn[data-state=live]")
    r = await admin.post("/api/trackers/bugs/items", json={"fields": {
        "title": "Appeared live", "notes": "staff note"}})
    new = r.raise_for_status().json()["id"]
    row = page.locator(f"table.items tr[data-item='{new}']")
    await expect(row).to_contain_text("Appeared live")
    await expect(row).to_contain_text("staff note")  # alice is Staff
    r = await admin.patch(f"/api/items/{new}/fields/status", json={"value": "closed"})
    r.raise_for_status()
    await expect(row.locator("td[data-field=status]")).to_have_text("closed")
    await admin.aclose()
