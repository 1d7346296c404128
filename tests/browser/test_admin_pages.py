"""The admin pages and the account page in Chromium, on one instance for the module: an
admin sets up a tracker (fields of several types, options, read and edit groups, order),
a group and a user entirely from the browser, and that user then sees and edits exactly
what the rights say; a user changes their password (another session of theirs ends,
live socket included) and creates, uses and revokes an API token."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from playwright.async_api import Browser, BrowserContext, Page, expect

from tests.browser.conftest import ARTIFACTS, log_in
from tests.harness import ADMIN_PASSWORD, RunningInstance

DANA_PASSWORD = "dana's first password"
ERIN_PASSWORD = "erin's old password"
PHONE = {"width": 390, "height": 844}


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningInstance]:
    # The tests below touch disjoint trackers and users, so they share one instance.
    instance = RunningInstance.create(Path(tmp_path_factory.mktemp("admin-pages")), "admin")
    instance.start()
    yield instance
    instance.stop()


async def admin_api(server: RunningInstance) -> httpx.AsyncClient:
    api = httpx.AsyncClient(base_url=server.base_url)
    (await api.post("/api/login", json={"username": "admin", "password": ADMIN_PASSWORD})
     ).raise_for_status()
    return api


async def login(browser: Browser, server: RunningInstance, user: str, password: str,
                **context_args: object) -> tuple[BrowserContext, Page]:
    return await log_in(browser, server.base_url, user, password, **context_args)


async def unlabelled_controls(page: Page) -> list[str]:
    """Every form control and button of the page without a name a screen reader reads."""
    result: list[str] = await page.evaluate("""() => [...document.querySelectorAll(
        "input:not([type=hidden]):not([hidden]), select, textarea, button, a[href]")]
      .filter(e => !e.closest("[hidden]"))
      .filter(e => !((e.labels && [...e.labels].some(l => l.textContent.trim()))
                     || e.getAttribute("aria-label")
                     || (e.matches("button, a") && e.textContent.trim())))
      .map(e => e.outerHTML.slice(0, 80))""")
    return result


async def fits(page: Page) -> bool:
    return bool(await page.evaluate(
        "() => document.documentElement.scrollWidth <= window.innerWidth"))


async def add_field(page: Page, name: str, label: str, kind: str, *, read: list[str],
                    edit: list[str], choices: str = "") -> None:
    form = page.locator("#new-field")
    await form.locator("#nf-name").fill(name)
    await form.locator("#nf-label").fill(label)
    await form.locator("#nf-type").select_option(kind)
    if choices:
        await form.locator("#nf-choices").fill(choices)
    for kind_of, chosen in (("read", read), ("edit", edit)):
        for box in await form.locator(f"input[name={kind_of}_groups]").all():
            await box.set_checked(await box.get_attribute("value") in chosen)
    await form.locator("button[type=submit]").click()
    await expect(page.locator(f"#field-{name}")).to_be_visible()


async def test_admin_sets_up_a_tracker_and_the_rights_hold(
    browser: Browser, server: RunningInstance,
) -> None:
    admin_ctx, admin = await login(browser, server, "admin", ADMIN_PASSWORD)
    await admin.click("header >> #admin-link")
    await admin.wait_for_url(server.base_url + "/admin")
    assert await unlabelled_controls(admin) == []

    # A bad slug: the API's message beside the form, the typing kept.
    form = admin.locator("#new-tracker")
    await form.locator("#nt-slug").fill("Bad Slug")
    await form.locator("#nt-name").fill("Tasks")
    await form.locator("button[type=submit]").click()
    await expect(form.locator(".note")).to_contain_text(
        "tracker name must start with a lowercase letter")
    await expect(form.locator("#nt-slug")).to_have_value("Bad Slug")
    await expect(form.locator("#nt-name")).to_have_value("Tasks")
    await form.locator("#nt-slug").fill("tasks")
    await form.locator("button[type=submit]").click()
    await admin.wait_for_url(server.base_url + "/admin/trackers/tasks")

    # A group, with the keyboard only: type, Tab, Tab, Enter.
    await admin.click("nav.admin-nav >> text=Groups")
    await admin.wait_for_url(server.base_url + "/admin/groups")
    assert await unlabelled_controls(admin) == []
    await admin.focus("#ng-name")
    await admin.keyboard.type("Team")
    await admin.keyboard.press("Tab")
    await admin.keyboard.type("the people doing the tasks")
    await admin.keyboard.press("Tab")
    await admin.keyboard.press("Enter")
    await expect(admin.locator("[data-group=Team] h2")).to_have_text("Team")
    await expect(admin.locator("#flash")).to_have_text("Saved.")
    team = admin.locator("[data-group=Team]")
    await team.locator("input[name=username]").fill("nobody")
    await team.locator("button[type=submit]").click()
    await expect(team.locator(".note")).to_have_text(
        "user 'nobody' does not exist or you may not see it")
    await team.locator("input[name=username]").fill("admin")
    await team.locator("button[type=submit]").click()
    await expect(team.locator(".members li")).to_have_text(["admin Remove"])
    await team.get_by_role("button", name="Remove admin from Team").click()
    await expect(team.locator(".members li")).to_have_text(["No members yet."])

    # A user in that group; a short password is refused in the API's words.
    await admin.click("nav.admin-nav >> text=Users")
    form = admin.locator("#new-user")
    await form.locator("#nu-username").fill("dana")
    await form.locator("#nu-password").fill("short")
    await form.get_by_label("Team").check()
    await form.locator("button[type=submit]").click()
    await expect(form.locator(".note")).to_have_text("a password needs at least 8 characters")
    await expect(form.locator("#nu-username")).to_have_value("dana")
    await form.locator("#nu-password").fill(DANA_PASSWORD)
    await form.locator("button[type=submit]").click()
    dana_row = admin.locator("[data-username=dana]")
    await expect(dana_row.locator("summary")).to_contain_text("Team")
    await dana_row.locator("summary").click()
    await expect(dana_row.get_by_label("Team")).to_be_checked()
    assert await unlabelled_controls(admin) == []

    # The fields: types, options, rights.
    await admin.goto("/admin/trackers/tasks")
    await add_field(admin, "title", "Title", "text", read=["Registered"], edit=["Registered"])
    form = admin.locator("#new-field")
    await form.locator("#nf-name").fill("status")
    await form.locator("#nf-type").select_option("dropdown")
    await form.locator("button[type=submit]").click()
    await expect(form.locator(".note")).to_have_text(
        "a dropdown field needs options.choices, a non-empty list")
    await expect(form.locator("#nf-name")).to_have_value("status")
    await add_field(admin, "status", "Status", "dropdown", read=["Registered"], edit=[],
                    choices="open\nclosed")
    await add_field(admin, "notes", "Notes", "textarea", read=["Team"], edit=["Team"])
    await add_field(admin, "budget", "Budget", "number", read=[], edit=[])
    assert await unlabelled_controls(admin) == []

    # Edit in place: the number's options (a bad one first), then a choice more.
    budget = admin.locator("#f-budget-form")
    await budget.locator("#f-budget-min").fill("10")
    await budget.locator("#f-budget-max").fill("1")
    await budget.locator("button[type=submit]").click()
    await expect(budget.locator(".note")).to_have_text("option min must not be greater than max")
    await budget.locator("#f-budget-max").fill("1000")
    await budget.locator("#f-budget-integer").check()
    await budget.locator("button[type=submit]").click()
    await expect(budget.locator(".note")).to_have_text("Saved.")
    status = admin.locator("#f-status-form")
    await status.locator("#f-status-choices").fill("open\nclosed\nwontfix")
    await status.locator("button[type=submit]").click()
    await expect(status.locator(".note")).to_have_text("Saved.")

    title = admin.locator("#f-title-form")
    await title.get_by_label("Exported to").select_option("public")
    await title.locator("button[type=submit]").click()
    await expect(title.locator(".note")).to_have_text("Saved.")
    settings = admin.locator("#tracker-settings")
    await settings.get_by_label("Name", exact=True).fill("Team tasks")
    await settings.get_by_label("Saves must name the version").check()
    await settings.locator("button[type=submit]").click()
    await expect(settings.locator(".note")).to_have_text("Saved.")
    await expect(admin.locator("h1")).to_have_text("Team tasks (tasks)")
    await title.get_by_label("Label").fill("Headline")
    await title.locator("button[type=submit]").click()
    await expect(admin.locator("#field-title h3")).to_have_text("Headline (title, text)")
    await expect(title.get_by_role("button", name="Save Headline")).to_be_visible()

    # Order: Notes up, by keyboard; the focus stays on the button.
    await admin.focus("#field-notes button.move[data-dir='-1']")
    await admin.keyboard.press("Enter")
    order = ".admin-field"
    await expect(admin.locator(order)).to_have_count(4)
    await expect(admin.locator(f"{order} >> nth=1")).to_have_attribute("data-name", "notes")
    assert await admin.evaluate("() => document.activeElement.dataset.dir") == "-1"

    api = await admin_api(server)
    tracker = (await api.get("/api/trackers/tasks")).json()
    assert (tracker["name"], tracker["require_if_match"]) == ("Team tasks", True)
    groups = {g["name"]: g for g in (await api.get("/api/groups")).json()["groups"]}
    assert groups["Team"]["members"] == ["dana"]
    assert groups["Team"]["description"] == "the people doing the tasks"
    assert [f["name"] for f in tracker["fields"]] == ["title", "notes", "status", "budget"]
    by_name = {f["name"]: f for f in tracker["fields"]}
    assert by_name["status"]["options"] == {"choices": ["open", "closed", "wontfix"]}
    assert by_name["status"]["edit_groups"] == [] and by_name["status"]["read_groups"] == [
        "Registered"]
    assert by_name["notes"]["read_groups"] == ["Team"] == by_name["notes"]["edit_groups"]
    assert by_name["budget"]["options"] == {"min": 10, "max": 1000, "integer": True}
    assert by_name["budget"]["read_groups"] == []
    assert by_name["title"]["export"] == {"mode": "public", "partners": []}

    # A phone: every admin page fits 390 px; one screenshot.
    phone = await admin_ctx.new_page()
    await phone.set_viewport_size(PHONE)
    for path in ("/admin", "/admin/users", "/admin/groups", "/admin/trackers/tasks"):
        await phone.goto(path)
        assert await fits(phone), path
    ARTIFACTS.mkdir(exist_ok=True)
    await phone.screenshot(path=str(ARTIFACTS / "admin-tracker-phone.png"), full_page=True)

    # Dana sees the tracker, reads title, status and notes (never the budget), edits
    # title and notes but not the status.
    item = (await api.post("/api/trackers/tasks/items", json={"fields": {
        "title": "Paint the fence", "status": "open", "notes": "white", "budget": 99}})).json()
    dana_ctx, dana = await login(browser, server, "dana", DANA_PASSWORD)
    await dana.click("text=Team tasks")
    await dana.wait_for_url(server.base_url + "/trackers/tasks")
    await dana.goto(f"/items/{item['id']}")
    await dana.wait_for_selector("#conn[data-state=live]")
    assert await dana.eval_on_selector_all(".field", "s => s.map(e => e.dataset.field)") == [
        "title", "notes", "status"]
    await expect(dana.locator("#field-title button.edit")).to_have_count(1)
    await expect(dana.locator("#field-notes button.edit")).to_have_count(1)
    await expect(dana.locator("#field-status button.edit")).to_have_count(0)
    assert "99" not in await dana.locator("#fields").inner_text()
    await dana.click("#field-notes button.edit")
    await dana.fill("#input-notes", "green")
    await dana.click("#field-notes button[type=submit]")
    await expect(dana.locator("#value-notes")).to_have_text("green")
    await expect(dana.locator("header #admin-link")).to_have_count(0)
    response = await dana.goto("/admin/trackers/tasks")
    assert response is not None and response.status == 404

    # Disabled from the browser: Dana's next page finds her logged out.
    await admin.goto("/admin/users")
    row = admin.locator("[data-username=dana]")
    await row.locator("summary").focus()
    await admin.keyboard.press("Enter")  # opens the details
    await row.get_by_label("Disabled").check()
    await row.locator("button[type=submit]").click()
    await expect(row.locator(".note")).to_have_text("Saved.")
    await expect(row.locator("summary .badge.bad")).to_have_text("disabled")
    await dana.goto(f"/items/{item['id']}")
    assert dana.url.startswith(server.base_url + "/login")
    await api.aclose()
    await dana_ctx.close()
    await admin_ctx.close()


async def test_user_changes_password_and_manages_tokens(
    browser: Browser, server: RunningInstance,
) -> None:
    api = await admin_api(server)
    for url, body in (("/api/users", {"username": "erin", "password": ERIN_PASSWORD}),
                      ("/api/trackers", {"slug": "erins"}),
                      ("/api/trackers/erins/fields", {"name": "title"})):
        (await api.post(url, json=body)).raise_for_status()
    item = (await api.post("/api/trackers/erins/items", json={"fields": {"title": "x"}})
            ).json()["id"]
    await api.aclose()

    here_ctx, here = await login(browser, server, "erin", ERIN_PASSWORD, viewport=PHONE)
    there_ctx, there = await login(browser, server, "erin", ERIN_PASSWORD)
    await there.goto(f"/items/{item}")
    await there.wait_for_selector("#conn[data-state=live]")

    await here.click("header >> #account-link")
    await here.wait_for_url(server.base_url + "/account")
    assert await unlabelled_controls(here) == []
    assert await fits(here)
    form = here.locator("#password-form")
    await form.get_by_label("Current password").fill("not my password")
    await form.get_by_label("New password", exact=False).first.fill("erin's new password")
    await form.get_by_label("New password again").fill("erin's new password")
    await form.locator("button[type=submit]").click()
    await expect(form.locator(".note")).to_have_text("the current password is wrong")
    await expect(form.locator("#pw-new")).to_have_value("erin's new password")
    await form.get_by_label("Current password").fill(ERIN_PASSWORD)
    await form.locator("button[type=submit]").click()
    await expect(form.locator(".note")).to_have_text(
        "Password changed. Your other sessions were ended.")
    # The other browser's live socket closes with the session; its next page is the login.
    await expect(there.locator("#conn-text")).to_have_text("offline: log in again")
    await there.reload()
    assert there.url.startswith(server.base_url + "/login")
    await here.reload()
    assert here.url == server.base_url + "/account"

    # A token: refused without a name, shown once, works, then revoked.
    tokens = here.locator("#token-form")
    await tokens.locator("button[type=submit]").click()
    await expect(tokens.locator(".note")).to_contain_text("a token needs a name")
    await tokens.get_by_label("New token's name").fill("backup")
    await tokens.locator("button[type=submit]").click()
    await expect(here.locator("#new-token")).to_be_visible()
    await expect(here.locator("#new-token-value")).to_be_focused()
    secret = await here.locator("#new-token-value").input_value()
    assert secret.startswith("fc_")
    await expect(here.locator("#tokens tbody tr")).to_have_count(1)
    async with httpx.AsyncClient(base_url=server.base_url,
                                 headers={"Authorization": f"Bearer {secret}"}) as script:
        assert (await script.get("/api/me")).json()["username"] == "erin"
        await here.reload()
        assert secret not in await here.content()
        await expect(here.locator("#tokens tbody tr")).to_contain_text("backup")
        here.once("dialog", lambda dialog: dialog.accept())
        await here.get_by_role("button", name="Revoke token backup").click()
        await expect(here.locator("#tokens tbody tr")).to_have_count(0)
        await expect(here.locator("#no-tokens")).to_be_visible()
        assert (await script.get("/api/me")).status_code == 401
    ARTIFACTS.mkdir(exist_ok=True)
    await here.screenshot(path=str(ARTIFACTS / "account-phone.png"), full_page=True)
    await here_ctx.close()
    await there_ctx.close()
