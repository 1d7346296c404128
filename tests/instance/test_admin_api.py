"""What the admin and account pages need from the API, on SQLite and PostgreSQL: changing
one's own password, revoking tokens, reordering fields, disabling a user or removing an
admin flag with effect at once, and /admin pages for admins only."""

from __future__ import annotations

from tests.conftest import PASSWORD, Env
from tests.instance.test_api import setup

NEW_PASSWORD = "a brand new password"


async def test_change_own_password_ends_the_other_sessions(env: Env) -> None:
    await setup(env)
    here, elsewhere = await env.client("alice"), await env.client("alice")
    token = (await (await here.post("/api/tokens", json={"name": "s"})).get_json())["token"]
    bearer = {"Authorization": f"Bearer {token}"}
    url = "/api/me/password"
    for body, status, words in (
        ({"old_password": "wrong password", "new_password": NEW_PASSWORD}, 403,
         "current password is wrong"),
        ({"old_password": PASSWORD, "new_password": "short"}, 422, "at least 8"),
        ({"old_password": "", "new_password": NEW_PASSWORD}, 422, "current password"),
        ({"old_password": PASSWORD, "new_password": NEW_PASSWORD, "x": 1}, 422, "unknown"),
    ):
        r = await here.post(url, json=body)
        assert r.status_code == status, (body, await r.get_json())
        assert words in (await r.get_json())["detail"]
    # Nothing changed yet: both sessions work.
    assert (await elsewhere.get("/api/me")).status_code == 200
    r = await here.post(url, json={"old_password": PASSWORD, "new_password": NEW_PASSWORD},
                        headers={"Origin": "https://evil.example"})
    assert r.status_code == 403 and (await r.get_json())["error"] == "cross_origin"

    r = await here.post(url, json={"old_password": PASSWORD, "new_password": NEW_PASSWORD})
    assert r.status_code == 204, await r.get_json()
    assert (await here.get("/api/me")).status_code == 200
    assert (await elsewhere.get("/api/me")).status_code == 401
    assert (await (await env.client()).get("/api/me", headers=bearer)).status_code == 200
    anon = await env.client()
    r = await anon.post("/api/login", json={"username": "alice", "password": PASSWORD})
    assert r.status_code == 401
    r = await anon.post("/api/login", json={"username": "alice", "password": NEW_PASSWORD})
    assert r.status_code == 200
    # Through a token (no session of its own), every browser session ends.
    r = await anon.post(url, headers=bearer,
                        json={"old_password": NEW_PASSWORD, "new_password": PASSWORD})
    assert r.status_code == 204
    assert (await here.get("/api/me")).status_code == 401
    assert (await anon.get("/api/me")).status_code == 401
    # Nobody logged in: 401 (a body of the wrong shape is a 422 before that, as for
    # every route whose body /openapi.json describes).
    nobody = await env.client()
    assert (await nobody.post(url, json={"old_password": PASSWORD, "new_password": "x" * 12})
            ).status_code == 401
    assert (await nobody.post(url, json={})).status_code == 422


async def test_tokens_are_revoked_by_their_owner_only(env: Env) -> None:
    await setup(env)
    alice, bob = await env.client("alice"), await env.client("bob")
    made = await (await alice.post("/api/tokens", json={"name": "cron"})).get_json()
    r = await alice.post("/api/tokens", json={"name": " "})
    assert r.status_code == 422 and "name" in (await r.get_json())["detail"]
    assert (await bob.delete(f"/api/tokens/{made['id']}")).status_code == 404
    assert [t["name"] for t in (await (await alice.get("/api/tokens")).get_json())["tokens"]] \
        == ["cron"]
    assert (await bob.get("/api/tokens")).status_code == 200
    assert (await (await bob.get("/api/tokens")).get_json())["tokens"] == []
    assert (await alice.delete(f"/api/tokens/{made['id']}")).status_code == 204
    assert (await alice.delete(f"/api/tokens/{made['id']}")).status_code == 404
    assert (await (await alice.get("/api/tokens")).get_json())["tokens"] == []


async def test_fields_reordered_in_one_go(env: Env) -> None:
    await setup(env)
    admin, alice = await env.client("admin"), await env.client("alice")
    before = [f["name"] for f in (await (await admin.get("/api/trackers/bugs")).get_json())
              ["fields"]]
    url = "/api/trackers/bugs/field-order"
    wanted = list(reversed(before))
    r = await admin.put(url, json={"fields": wanted})
    assert r.status_code == 200, await r.get_json()
    assert [f["name"] for f in (await r.get_json())["fields"]] == wanted
    seen = (await (await alice.get("/api/trackers/bugs")).get_json())["fields"]
    assert [f["name"] for f in seen] == [n for n in wanted if n in {f["name"] for f in seen}]
    assert [f["position"] for f in (await r.get_json())["fields"]] == list(range(len(wanted)))
    for body, words in (
        ({"fields": wanted[1:]}, f"missing {wanted[0]}"),
        ({"fields": [*wanted, "nosuch"]}, "no field(s) nosuch"),
        ({"fields": [*wanted, wanted[0]]}, f"lists {wanted[0]} more than once"),
        ({"fields": "title"}, "the member fields must be a list"),
        ({"order": wanted}, "unknown member(s) order"),
    ):
        r = await admin.put(url, json=body)
        assert r.status_code == 422, body
        assert words in (await r.get_json())["detail"], (body, await r.get_json())
    after = [f["name"] for f in (await (await admin.get("/api/trackers/bugs")).get_json())
             ["fields"]]
    assert after == wanted  # a refused order changed nothing
    assert (await alice.put(url, json={"fields": before})).status_code == 403
    r = await admin.put("/api/trackers/nosuch/field-order", json={"fields": []})
    assert r.status_code == 404


async def test_disabling_and_admin_flag_apply_at_once(env: Env) -> None:
    await env.user("carol", admin=True)
    admin, carol = await env.client("admin"), await env.client("carol")
    token = (await (await carol.post("/api/tokens", json={"name": "t"})).get_json())["token"]
    bearer = {"Authorization": f"Bearer {token}"}
    assert (await carol.get("/api/users")).status_code == 200
    r = await admin.patch("/api/users/carol", json={"is_admin": False})
    assert r.status_code == 200 and (await r.get_json())["is_admin"] is False
    assert (await carol.get("/api/users")).status_code == 403  # the same session
    assert (await carol.get("/api/me")).status_code == 200

    r = await admin.patch("/api/users/carol", json={"disabled": True})
    assert r.status_code == 200 and (await r.get_json())["disabled"] is True
    assert (await carol.get("/api/me")).status_code == 401
    assert (await (await env.client()).get("/api/me", headers=bearer)).status_code == 401
    r = await (await env.client()).post("/api/login",
                                        json={"username": "carol", "password": PASSWORD})
    assert r.status_code == 403 and (await r.get_json())["error"] == "account_disabled"
    assert (await admin.patch("/api/users/carol", json={"disabled": False})).status_code == 200
    assert (await env.client("carol")) is not None  # logs in again

    for change in ({"is_admin": False}, {"disabled": True}):
        r = await admin.patch("/api/users/admin", json=change)
        assert r.status_code == 403 and "ask another admin" in (await r.get_json())["detail"]
    r = await admin.patch("/api/users/carol", json={"is_admin": "yes"})
    assert r.status_code == 422 and (await r.get_json())["detail"].startswith(
        "the member is_admin must be true or false")


async def test_admin_pages_for_admins_only(env: Env) -> None:
    await setup(env)
    admin, bob, anon = await env.client("admin"), await env.client("bob"), await env.client()
    html = {"Accept": "text/html"}
    pages = ("/admin", "/admin/trackers/bugs", "/admin/users", "/admin/groups",
             "/admin/federation")
    for path in pages:
        r = await admin.get(path, headers=html)
        assert r.status_code == 200, path
        text = await r.get_data(as_text=True)
        assert 'id="admin-link"' in text and 'aria-current="page"' in text, path
        assert "admin.js" in text or path == "/admin/federation"
        assert "script-src 'self'" in r.headers["Content-Security-Policy"]
        r = await bob.get(path, headers=html)
        assert r.status_code == 404 and r.mimetype == "text/html", path
        assert 'id="admin-link"' not in await r.get_data(as_text=True)
        r = await anon.get(path, headers=html)
        assert r.status_code == 302 and r.headers["Location"].startswith("/login?next=/admin")
    r = await admin.get("/admin/trackers/nosuch", headers=html)
    assert r.status_code == 404
    home = await (await bob.get("/", headers=html)).get_data(as_text=True)
    assert 'id="admin-link"' not in home and "/admin" not in home
    assert 'id="account-link"' in home
    assert 'id="admin-link"' in await (await admin.get("/", headers=html)).get_data(as_text=True)
    # The account page is everyone's own; logged out, it leads to the login.
    made = await bob.post("/api/tokens", json={"name": "bob's <script>"})
    r = await bob.get("/account", headers=html)
    text = await r.get_data(as_text=True)
    assert r.status_code == 200 and "bob&#39;s &lt;script&gt;" in text
    assert (await made.get_json())["token"] not in text
    r = await anon.get("/account", headers=html)
    assert r.status_code == 302 and r.headers["Location"] == "/login?next=/account"
