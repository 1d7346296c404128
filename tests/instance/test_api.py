"""The JSON API through the ASGI interface, on SQLite and PostgreSQL."""

from __future__ import annotations

from typing import Any

from tests.conftest import Env


async def make_tracker(env: Env, **tracker: Any) -> None:
    admin = await env.client("admin")
    body = {"slug": "bugs", "name": "Bugs", **tracker}
    r = await admin.post("/api/trackers", json=body)
    assert r.status_code == 201, await r.get_json()
    for field in (
        {"name": "title", "type": "text"},
        {"name": "status", "type": "dropdown", "options": {"choices": ["open", "closed"]}},
        {"name": "estimate", "type": "number", "options": {"min": 0, "integer": True}},
        {"name": "due", "type": "date"},
        {"name": "owner", "type": "user"},
        {"name": "notes", "type": "textarea", "read_groups": ["Staff"], "edit_groups": ["Staff"]},
        {"name": "upstream", "type": "remote", "options": {"source": {
            "instance": "https://a.example", "tracker": "bugs", "field": "status"}}},
    ):
        r = await admin.post("/api/trackers/bugs/fields", json=field)
        assert r.status_code == 201, await r.get_json()


async def setup(env: Env) -> None:
    admin = await env.client("admin")
    assert (await admin.post("/api/groups", json={"name": "Staff"})).status_code == 201
    await make_tracker(env)
    await env.user("alice", groups=("Staff",))
    await env.user("bob")


async def test_login_required_and_bad_credentials(env: Env) -> None:
    anon = await env.client()
    r = await anon.get("/api/me")
    assert r.status_code == 401
    assert (await r.get_json())["error"] == "login_required"
    r = await anon.post("/api/login", json={"username": "admin", "password": "wrong password"})
    assert r.status_code == 401
    body = await r.get_json()
    assert body == {"error": "bad_credentials", "detail": "unknown username or wrong password"}
    r = await anon.post("/api/login", data="username=admin")
    assert r.status_code == 415


async def test_create_item_get_only_readable_fields(env: Env) -> None:
    await setup(env)
    alice, bob = await env.client("alice"), await env.client("bob")
    r = await alice.post("/api/trackers/bugs/items",
                         json={"fields": {"title": "Crash", "notes": "secret notes"}})
    assert r.status_code == 201, await r.get_json()
    item = await r.get_json()
    assert item["fields"]["title"]["value"] == "Crash"
    assert item["fields"]["title"]["version"] == 1
    assert item["fields"]["notes"]["value"] == "secret notes"
    r = await bob.get(f"/api/items/{item['id']}")
    assert r.status_code == 200
    seen = await r.get_json()
    assert "notes" not in seen["fields"]
    assert "secret notes" not in await r.get_data(as_text=True)
    assert seen["fields"]["title"]["value"] == "Crash"
    # Bob cannot learn that the field exists either.
    r = await bob.patch(f"/api/items/{item['id']}/fields/notes", json={"value": "x"})
    assert r.status_code == 404
    r = await bob.get(f"/api/items/{item['id']}/fields/notes")
    assert r.status_code == 404


async def test_etag_and_not_modified(env: Env) -> None:
    await setup(env)
    alice = await env.client("alice")
    item = await (await alice.post("/api/trackers/bugs/items",
                                   json={"fields": {"title": "A"}})).get_json()
    r = await alice.get(f"/api/items/{item['id']}")
    etag = r.headers["ETag"]
    r = await alice.get(f"/api/items/{item['id']}", headers={"If-None-Match": etag})
    assert r.status_code == 304
    await alice.patch(f"/api/items/{item['id']}/fields/title", json={"value": "B"})
    r = await alice.get(f"/api/items/{item['id']}", headers={"If-None-Match": etag})
    assert r.status_code == 200
    assert r.headers["ETag"] != etag


async def test_patch_with_if_match_and_conflict(env: Env) -> None:
    await setup(env)
    alice, bob = await env.client("alice"), await env.client("bob")
    item = await (await alice.post("/api/trackers/bugs/items",
                                   json={"fields": {"status": "open"}})).get_json()
    url = f"/api/items/{item['id']}/fields/status"
    r = await alice.patch(url, json={"value": "closed"}, headers={"If-Match": '"1"'})
    assert r.status_code == 200, await r.get_json()
    body = await r.get_json()
    assert body["version"] == 2 and body["changed"] and body["updated_by"] == "alice"
    assert r.headers["ETag"] == '"2"'
    # Bob edited version 1 too: his save is stale.
    r = await bob.patch(url, json={"value": "open"}, headers={"If-Match": '"1"'})
    assert r.status_code == 412
    conflict = await r.get_json()
    assert conflict["error"] == "version_conflict"
    assert conflict["current"]["value"] == "closed"
    assert conflict["current"]["version"] == 2
    assert conflict["current"]["updated_by"] == "alice"
    assert "alice" in conflict["detail"]
    # Nothing was lost: the value is alice's.
    r = await bob.get(url)
    assert (await r.get_json())["value"] == "closed"
    # Without If-Match the last write wins.
    r = await bob.patch(url, json={"value": "open"})
    assert r.status_code == 200 and (await r.get_json())["version"] == 3
    r = await bob.patch(url, json={"value": "open"}, headers={"If-Match": "bogus"})
    assert r.status_code == 400


async def test_require_if_match(env: Env) -> None:
    await setup(env)
    admin = await env.client("admin")
    r = await admin.patch("/api/trackers/bugs", json={"require_if_match": True})
    assert r.status_code == 200
    alice = await env.client("alice")
    item = await (await alice.post("/api/trackers/bugs/items",
                                   json={"fields": {"title": "t"}})).get_json()
    r = await alice.patch(f"/api/items/{item['id']}/fields/title", json={"value": "u"})
    assert r.status_code == 428
    assert "If-Match" in (await r.get_json())["detail"]
    r = await alice.patch(f"/api/items/{item['id']}/fields/title", json={"value": "u"},
                          headers={"If-Match": '"1"'})
    assert r.status_code == 200


async def test_values_validated_per_type(env: Env) -> None:
    await setup(env)
    alice = await env.client("alice")
    item = await (await alice.post("/api/trackers/bugs/items", json={"fields": {}})).get_json()
    bad = {
        "status": "maybe",
        "estimate": -1,
        "due": "2026-02-30",
        "owner": "nobody",
        "title": "two\nlines",
    }
    for field, value in bad.items():
        r = await alice.patch(f"/api/items/{item['id']}/fields/{field}", json={"value": value})
        assert r.status_code == 422, (field, await r.get_json())
        body = await r.get_json()
        assert body["field"] == field and field in body["detail"]
    good = {"status": "closed", "estimate": 3, "due": "2026-02-28", "owner": "bob",
            "title": "ok"}
    for field, value in good.items():
        r = await alice.patch(f"/api/items/{item['id']}/fields/{field}", json={"value": value})
        assert r.status_code == 200, (field, await r.get_json())
    r = await alice.patch(f"/api/items/{item['id']}/fields/estimate", json={"value": None})
    assert (await r.get_json())["value"] is None


async def test_remote_field_is_read_only(env: Env) -> None:
    await setup(env)
    admin = await env.client("admin")
    item = await (await admin.post("/api/trackers/bugs/items", json={"fields": {}})).get_json()
    r = await admin.patch(f"/api/items/{item['id']}/fields/upstream", json={"value": "x"})
    assert r.status_code == 409
    assert "https://a.example" in (await r.get_json())["detail"]


async def test_change_log_filtered_by_read_rights(env: Env) -> None:
    await setup(env)
    alice, bob = await env.client("alice"), await env.client("bob")
    item = await (await alice.post(
        "/api/trackers/bugs/items", json={"fields": {"title": "T", "notes": "hidden"}}
    )).get_json()
    await alice.patch(f"/api/items/{item['id']}/fields/notes", json={"value": "hidden 2"})
    r = await alice.get("/api/changes?since=0")
    log = await r.get_json()
    # The creation row first, then the values set in the same transaction.
    assert log["changes"][0]["created"] is True and log["changes"][0]["item"] == item["id"]
    assert [c.get("field") for c in log["changes"]] == [None, "title", "notes", "notes"]
    events = [c["event"] for c in log["changes"]]
    # Creating the item and setting two fields was one transaction: consecutive ids.
    assert events[1:3] == [events[0] + 1, events[0] + 2] and events[3] > events[2]
    assert log["next"] == events[3] == log["head"] and log["epoch"] and not log["more"]
    r = await bob.get("/api/changes?since=0")
    text = await r.get_data(as_text=True)
    log = await r.get_json()
    assert [c.get("field") for c in log["changes"]] == [None, "title"]
    assert "hidden" not in text
    assert log["next"] == events[3]
    r = await bob.get(f"/api/changes?since={events[1]}")
    assert (await r.get_json())["changes"] == []
    # A full page says more may follow, and resumes after its last row.
    page = await (await alice.get("/api/changes?since=0&limit=1")).get_json()
    assert page["more"] and page["next"] == events[0]
    # A page that is not full ends at the head: there is nothing more to read.
    page = await (await alice.get("/api/changes?since=0&limit=5")).get_json()
    assert not page["more"] and page["next"] == page["head"]


async def test_rights_change_takes_effect_at_once(env: Env) -> None:
    await setup(env)
    alice, bob = await env.client("alice"), await env.client("bob")
    item = await (await alice.post("/api/trackers/bugs/items",
                                   json={"fields": {"notes": "n"}})).get_json()
    assert "notes" not in (await (await bob.get(f"/api/items/{item['id']}")).get_json())["fields"]
    admin = await env.client("admin")
    r = await admin.put("/api/groups/Staff/members/bob")
    assert r.status_code == 204
    fields = (await (await bob.get(f"/api/items/{item['id']}")).get_json())["fields"]
    assert fields["notes"]["value"] == "n"
    await admin.delete("/api/groups/Staff/members/bob")
    assert "notes" not in (await (await bob.get(f"/api/items/{item['id']}")).get_json())["fields"]


async def test_api_tokens(env: Env) -> None:
    await setup(env)
    alice = await env.client("alice")
    r = await alice.post("/api/tokens", json={"name": "script"})
    assert r.status_code == 201
    token = (await r.get_json())["token"]
    script = await env.client()
    r = await script.get("/api/me", headers={"Authorization": f"Bearer {token}"})
    assert r.status_code == 200 and (await r.get_json())["username"] == "alice"
    tokens = (await (await alice.get("/api/tokens")).get_json())["tokens"]
    assert tokens[0]["last_used_at"] is not None and "token" not in tokens[0]
    await alice.delete(f"/api/tokens/{tokens[0]['id']}")
    r = await script.get("/api/me", headers={"Authorization": f"Bearer {token}"})
    assert r.status_code == 401
    r = await script.get("/api/me", headers={"Authorization": "Basic abc"})
    assert r.status_code == 401


async def test_logout_and_password_change_end_sessions(env: Env) -> None:
    await setup(env)
    bob = await env.client("bob")
    assert (await bob.get("/api/me")).status_code == 200
    assert (await bob.post("/api/logout")).status_code == 204
    assert (await bob.get("/api/me")).status_code == 401
    bob = await env.client("bob")
    admin = await env.client("admin")
    r = await admin.patch("/api/users/bob", json={"password": "another long one"})
    assert r.status_code == 200
    assert (await bob.get("/api/me")).status_code == 401


async def test_admin_only_management(env: Env) -> None:
    await setup(env)
    bob = await env.client("bob")
    for method, url, body in (
        ("post", "/api/trackers", {"slug": "x"}),
        ("post", "/api/trackers/bugs/fields", {"name": "x"}),
        ("post", "/api/users", {"username": "x", "password": "12345678"}),
        ("post", "/api/groups", {"name": "x"}),
        ("patch", "/api/users/alice", {"disabled": True}),
    ):
        r = await getattr(bob, method)(url, json=body)
        assert r.status_code == 403, (url, await r.get_json())


async def test_cross_origin_cookie_request_refused(env: Env) -> None:
    await setup(env)
    alice = await env.client("alice")
    item = await (await alice.post("/api/trackers/bugs/items", json={"fields": {}})).get_json()
    r = await alice.patch(f"/api/items/{item['id']}/fields/title", json={"value": "x"},
                          headers={"Origin": "https://evil.example"})
    assert r.status_code == 403
    assert (await r.get_json())["error"] == "cross_origin"


async def test_body_too_large_and_bad_json(env: Env) -> None:
    await setup(env)
    alice = await env.client("alice")
    item = await (await alice.post("/api/trackers/bugs/items", json={"fields": {}})).get_json()
    big = "x" * (2 * 1024 * 1024)
    r = await alice.patch(f"/api/items/{item['id']}/fields/notes", json={"value": big})
    assert r.status_code == 413
    body = await r.get_json()
    assert body["error"] == "request_entity_too_large"
    r = await alice.patch(f"/api/items/{item['id']}/fields/title", data="{not json",
                          headers={"Content-Type": "application/json"})
    assert r.status_code == 400
    assert (await r.get_json())["error"] == "bad_json"


async def test_field_definition_errors(env: Env) -> None:
    await setup(env)
    admin = await env.client("admin")
    cases = [
        ({"name": "Bad Name"}, 422),
        ({"name": "x", "type": "colour"}, 422),
        ({"name": "x", "type": "dropdown"}, 422),
        ({"name": "x", "type": "number", "options": {"min": 5, "max": 1}}, 422),
        ({"name": "x", "read_groups": ["NoSuchGroup"]}, 422),
        ({"name": "x", "export": {"mode": "partners", "partners": []}}, 422),
        ({"name": "title"}, 409),
    ]
    for body, status in cases:
        r = await admin.post("/api/trackers/bugs/fields", json=body)
        assert r.status_code == status, (body, await r.get_json())
        assert (await r.get_json())["detail"]
    r = await admin.post("/api/trackers/bugs/fields", json={
        "name": "sev", "type": "dropdown", "options": {"choices": ["low", "high"]},
        "export": {"mode": "partners", "partners": ["https://b.example/"]}})
    assert r.status_code == 201
    assert (await r.get_json())["export"] == {"mode": "partners",
                                             "partners": ["https://b.example"]}


async def test_admin_deletes_an_item_and_the_log_says_so(env: Env) -> None:
    await setup(env)
    alice, bob = await env.client("alice"), await env.client("bob")
    item = await (await alice.post("/api/trackers/bugs/items",
                                   json={"fields": {"title": "doomed"}})).get_json()
    assert (await alice.delete(f"/api/items/{item['id']}")).status_code == 403
    admin = await env.client("admin")
    assert (await admin.delete(f"/api/items/{item['id']}")).status_code == 204
    assert (await bob.get(f"/api/items/{item['id']}")).status_code == 404
    r = await bob.patch(f"/api/items/{item['id']}/fields/title", json={"value": "x"})
    assert r.status_code == 404
    assert (await admin.delete(f"/api/items/{item['id']}")).status_code == 404
    log = (await (await bob.get("/api/changes?since=0")).get_json())["changes"]
    assert log[0]["created"] is True and log[0]["by"] == "alice"
    assert log[1]["field"] == "title" and log[1]["value"] == "doomed"
    assert log[-1]["deleted"] is True and log[-1]["item"] == item["id"]
    assert log[-1]["by"] == "admin"
