"""/admin/federation in Chromium: an admin sees the hub's subscriptions and deliveries and
changes a field's export in place (with the API's validation shown next to it); nobody
else sees the page."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from urllib.parse import parse_qs, urlsplit

from playwright.async_api import Browser, expect
from sqlalchemy.ext.asyncio import AsyncSession

from instance.config import load_settings
from instance.db import Database
from instance.models import FederationDelivery, FederationSubscription
from tests.browser.conftest import Site, logged_in
from tests.harness import ADMIN_PASSWORD

CALLBACK = "https://reader.example/websub/cb-1"


async def seed_subscription(site: Site) -> None:
    settings = load_settings(data_dir=site.server.data_dir, environ={})
    db = Database(settings.effective_database_url)
    at = datetime.now(UTC)
    topic = f"{site.url}/federation/items/{site.item}"
    try:
        async with db.write(AsyncSession) as session:
            sub = FederationSubscription(
                topic=topic, item_id=site.item, callback=CALLBACK, state="active",
                lease_seconds=600, lease_expires_at=at + timedelta(minutes=10),
                created_at=at, updated_at=at, verified_at=at)
            session.add(sub)
            await session.flush()
            session.add(FederationDelivery(
                subscription_id=sub.id, topic=topic, item_id=site.item, event_id=7,
                item_version=1, fields=["title"], state="retry", attempts=2,
                next_attempt_at=at + timedelta(minutes=1), last_status=503,
                last_error="callback answered 503", created_at=at, updated_at=at))
    finally:
        await db.dispose()


async def test_admin_sees_the_hub_and_edits_exports(browser: Browser, site: Site) -> None:
    await seed_subscription(site)
    context = await browser.new_context(base_url=site.url)
    page = await context.new_page()
    await page.goto("/login")
    await page.fill("#username", "admin")
    await page.fill("#password", ADMIN_PASSWORD)
    await page.click("button[type=submit]")
    await page.wait_for_url(site.url + "/")
    await page.click("header >> #admin-link")
    await page.click("nav.admin-nav >> text=Federation")
    await page.wait_for_url(site.url + "/admin/federation")

    row = page.locator("#subscriptions tbody tr").first
    await expect(row).to_contain_text(CALLBACK)
    await expect(row).to_contain_text("active")
    await expect(row).to_contain_text("public")
    delivery = page.locator("#deliveries tbody tr").first
    await expect(delivery).to_contain_text("retry")
    await expect(delivery).to_contain_text("callback answered 503")

    # Partners without a partner: the API refuses, and says why next to the field.
    form = page.locator("#export-bugs-estimate")
    await form.locator("select").select_option("partners")
    await form.locator("button").click()
    await expect(form.locator(".note")).to_contain_text("at least one partner")

    # With the keyboard: choose, Tab to the partners, type, Tab to Save, Enter.
    form = page.locator("#export-bugs-status")
    await form.locator("select").focus()
    await form.locator("select").select_option("partners")
    await page.keyboard.press("Tab")
    await page.keyboard.type("https://b.example")
    await page.keyboard.press("Tab")
    await page.keyboard.press("Enter")
    await expect(form.locator(".note")).to_have_text("Saved.")

    await page.reload()
    form = page.locator("#export-bugs-status")
    await expect(form.locator("select")).to_have_value("partners")
    await expect(form.locator("textarea")).to_have_value("https://b.example")
    await expect(page.locator("#export-bugs-estimate select")).to_have_value("none")
    await context.close()


async def test_nobody_else_sees_the_page(browser: Browser, site: Site) -> None:
    context, alice = await logged_in(browser, site, "alice")
    await expect(alice.locator("header #admin-link")).to_have_count(0)
    await expect(alice.locator("header")).not_to_contain_text("Admin")
    response = await alice.goto("/admin/federation")
    assert response is not None and response.status == 404
    await context.close()

    anonymous = await (await browser.new_context(base_url=site.url)).new_page()
    await anonymous.goto("/admin/federation")
    sent_to = urlsplit(anonymous.url)
    assert sent_to.path == "/login"
    assert parse_qs(sent_to.query) == {"next": ["/admin/federation"]}
