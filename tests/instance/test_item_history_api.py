"""An item's history (GET /api/items/ID/history) and writes with an ended session's
cookie, through the ASGI interface, on SQLite and PostgreSQL."""

from __future__ import annotations

from http.cookies import SimpleCookie
from typing import Any

from instance.security import SESSION_COOKIE
from tests.conftest import PASSWORD, Env
from tests.instance.test_api import setup


async def test_history_pages_newest_first_and_hides_unreadable_fields(env: Env) -> None:
    await setup(env)
    admin = await env.client("admin")
    r = await admin.post("/api/trackers/bugs/items",
                         json={"fields": {"title": "v0", "notes": "SECRET-0"}})
    item = (await r.get_json())["id"]
    for n in range(1, 6):
        for field, value in (("title", f"v{n}"), ("notes", f"SECRET-{n}")):
            r = await admin.patch(f"/api/items/{item}/fields/{field}", json={"value": value})
            assert r.status_code == 200
    bob = await env.client("bob")  # may read the title, not the notes
    seen: list[dict[str, Any]] = []
    before: int | None = None
    while True:
        query = f"limit=2&before={before}" if before else "limit=2"
        r = await bob.get(f"/api/items/{item}/history?{query}")
        text = await r.get_data(as_text=True)
        assert r.status_code == 200, text
        assert "SECRET" not in text and '"notes"' not in text
        body = await r.get_json()
        # Full pages: rows bob may not read are neither returned nor counted.
        assert len(body["changes"]) == 2 or body["next_before"] is None
        seen += body["changes"]
        if (before := body["next_before"]) is None:
            break
    # Every title change, newest first, with who, when, old and new value.
    assert [c["value"] for c in seen] == [f"v{n}" for n in range(5, -1, -1)]
    assert [c["old_value"] for c in seen] == [f"v{n}" for n in range(4, -1, -1)] + [None]
    assert all(c["by"] == "admin" and c["at"] and c["field"] == "title" for c in seen)
    events = [c["event"] for c in seen]
    assert events == sorted(events, reverse=True)
    # A field bob may not read answers exactly as one that does not exist.
    hidden = await bob.get(f"/api/items/{item}/history?field=notes")
    missing = await bob.get(f"/api/items/{item}/history?field=nosuch")
    assert hidden.status_code == missing.status_code == 404
    assert (await hidden.get_json())["error"] == (await missing.get_json())["error"]
    assert "SECRET" not in await hidden.get_data(as_text=True)
    assert (await bob.get(f"/api/items/{item}/history?before=x")).status_code == 400
    assert (await bob.get(f"/api/items/{item}/history?limit=0")).status_code == 400
    alice = await env.client("alice")
    r = await alice.get(f"/api/items/{item}/history?field=notes&limit=3")
    assert [c["value"] for c in (await r.get_json())["changes"]] == [
        "SECRET-5", "SECRET-4", "SECRET-3"]
    anonymous = await env.client()
    assert (await anonymous.get(f"/api/items/{item}/history")).status_code == 404
    assert (await bob.get("/api/items/999999/history")).status_code == 404


async def test_a_write_with_an_ended_session_is_a_401_not_a_missing_field(env: Env) -> None:
    await setup(env)
    admin = await env.client("admin")
    r = await admin.post("/api/trackers/bugs/items", json={"fields": {"title": "t"}})
    item = (await r.get_json())["id"]
    browser = env.app.test_client(use_cookies=False)
    r = await browser.post("/api/login", json={"username": "alice", "password": PASSWORD})
    morsel = SimpleCookie(r.headers["Set-Cookie"])[SESSION_COOKIE]
    cookie = {"Cookie": f"{SESSION_COOKIE}={morsel.value}"}
    # Logged out in another tab: this tab still sends the cookie.
    assert (await browser.post("/api/logout", headers=cookie)).status_code == 204
    r = await browser.patch(f"/api/items/{item}/fields/title", json={"value": "x"},
                            headers=cookie)
    assert r.status_code == 401
    assert (await r.get_json())["error"] == "session_ended"
    assert "log in again" in (await r.get_json())["detail"]
    # Logging out again is harmless; reading stays anonymous.
    assert (await browser.post("/api/logout", headers=cookie)).status_code == 204
    assert (await browser.get(f"/api/items/{item}", headers=cookie)).status_code == 404
    # No cookie at all: an unreadable field answers as a missing one, as before.
    hidden = await browser.patch(f"/api/items/{item}/fields/notes", json={"value": "x"})
    missing = await browser.patch(f"/api/items/{item}/fields/nosuch", json={"value": "x"})
    assert hidden.status_code == missing.status_code == 404
    assert (await hidden.get_json()) == {
        **(await missing.get_json()), "detail": (await hidden.get_json())["detail"]}
