"""Browser tests: a real instance (tests/harness.py) and Debian's Chromium via Playwright.

Chromium is not downloaded (`playwright install` cannot reach the internet here): the
tests launch /usr/bin/chromium. Missing, it skips these tests, except under CI=true,
where .ci/run installs it and a missing browser fails.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from playwright.async_api import Browser, BrowserContext, Page, async_playwright

from tests.conftest import IN_CI
from tests.harness import RunningInstance

CHROMIUM = os.environ.get("FIELDCAST_CHROMIUM", "/usr/bin/chromium")
FLAGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-quic"]
PASSWORD = "browser test password"
ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts"


@dataclass
class Site:
    server: RunningInstance
    item: int

    @property
    def url(self) -> str:
        return self.server.base_url


def populate(server: RunningInstance) -> int:
    """Staff (alice, bob), carol, and a tracker "bugs" with a staff-only field; returns the
    id of its first item."""
    admin = httpx.Client(base_url=server.base_url)
    admin.post("/api/login", json={"username": "admin",
                                   "password": "harness admin password"}).raise_for_status()
    admin.post("/api/groups", json={"name": "Staff"}).raise_for_status()
    for name, groups in (("alice", ["Staff"]), ("bob", ["Staff"]), ("carol", [])):
        admin.post("/api/users", json={"username": name, "password": PASSWORD,
                                       "groups": groups}).raise_for_status()
    admin.post("/api/trackers", json={"slug": "bugs", "name": "Bugs"}).raise_for_status()
    for field in (
        {"name": "title", "label": "Title"},
        {"name": "status", "label": "Status", "type": "dropdown",
         "options": {"choices": ["open", "closed"]}},
        {"name": "notes", "label": "Notes", "type": "textarea", "read_groups": ["Staff"],
         "edit_groups": ["Staff"]},
        {"name": "estimate", "label": "Estimate", "type": "number"},
    ):
        admin.post("/api/trackers/bugs/fields", json=field).raise_for_status()
    item = admin.post("/api/trackers/bugs/items", json={"fields": {
        "title": "Crash on save", "status": "open", "notes": "staff only"}}).json()["id"]
    admin.close()
    return int(item)


@pytest.fixture
def site(tmp_path: Path) -> Iterator[Site]:
    server = RunningInstance.create(tmp_path, "browser")
    server.start()
    item = populate(server)
    yield Site(server, item)
    server.stop()


@pytest.fixture
async def browser() -> AsyncIterator[Browser]:
    if not shutil.which(CHROMIUM):  # an absolute path is checked for being executable
        if IN_CI:
            pytest.fail(f"{CHROMIUM} is missing under CI=true (.ci/run installs chromium)")
        pytest.skip(f"{CHROMIUM} is not installed (apt-get install chromium)")
    async with async_playwright() as p:
        browser = await p.chromium.launch(executable_path=CHROMIUM, args=FLAGS)
        yield browser
        await browser.close()


async def log_in(browser: Browser, base_url: str, user: str, password: str,
                 **context_args: object) -> tuple[BrowserContext, Page]:
    """A new browser context (its own cookies) with ``user`` logged in through the form."""
    context = await browser.new_context(base_url=base_url, **context_args)  # type: ignore[arg-type]
    page = await context.new_page()
    await page.goto("/login")
    await page.fill("#username", user)
    await page.fill("#password", password)
    await page.click("button[type=submit]")
    await page.wait_for_url(base_url + "/")
    return context, page


async def logged_in(browser: Browser, site: Site, user: str, **context_args: object
                    ) -> tuple[BrowserContext, Page]:
    """``log_in`` to the shared site, with the password every user there has."""
    return await log_in(browser, site.url, user, PASSWORD, **context_args)


async def open_item(page: Page, site: Site) -> None:
    await page.goto(f"/items/{site.item}")
    await page.wait_for_selector("#conn[data-state=live]")
