"""Answers that say what happened: bodiless statuses carry no type, an item needs its
fields member, membership commands report only changes that were made."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from tests.conftest import Env
from tests.instance.test_api import setup
from tests.instance.test_cli import run


async def _raw(env: Env, method: str, path: str, headers: dict[str, str]
               ) -> tuple[int, dict[str, str]]:
    """Status and headers as the app hands them to the server (the test client's
    response class would add a default Content-Type of its own)."""
    started: dict[str, Any] = {}
    sent = asyncio.Event()
    requests = [{"type": "http.request", "body": b"", "more_body": False}]

    async def receive() -> dict[str, Any]:
        if requests:
            return requests.pop()
        await sent.wait()
        return {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        if message["type"] == "http.response.start":
            started.update(message)
        elif not message.get("more_body"):
            sent.set()

    scope = {"type": "http", "http_version": "1.1", "asgi": {"spec_version": "2.1"},
             "method": method, "scheme": "http", "path": path, "raw_path": path.encode(),
             "query_string": b"", "root_path": "", "server": ("127.0.0.1", 80),
             "client": ("127.0.0.1", 1), "extensions": {},
             "headers": [(k.lower().encode(), v.encode())
                         for k, v in {"Host": "localhost", **headers}.items()]}
    await env.app.asgi_app(scope, receive, send)
    return started["status"], {k.decode().lower(): v.decode() for k, v in started["headers"]}


async def test_204_and_304_carry_no_content_type(env: Env) -> None:
    await setup(env)
    admin = await env.client("admin")
    token = (await (await admin.post("/api/tokens", json={"name": "t"})).get_json())["token"]
    auth = {"Authorization": f"Bearer {token}"}
    item = await (await admin.post("/api/trackers/bugs/items",
                                   json={"fields": {"title": "A"}})).get_json()
    status, headers = await _raw(env, "GET", f"/api/items/{item['id']}", auth)
    assert status == 200 and headers["content-type"] == "application/json"
    status, headers = await _raw(env, "GET", f"/api/items/{item['id']}",
                                 {**auth, "If-None-Match": headers["etag"]})
    assert status == 304 and "content-type" not in headers
    status, headers = await _raw(env, "PUT", "/api/groups/Staff/members/bob", auth)
    assert status == 204 and "content-type" not in headers
    status, headers = await _raw(env, "DELETE", f"/api/items/{item['id']}", auth)
    assert status == 204 and "content-type" not in headers


async def test_an_item_without_the_fields_member_is_refused(env: Env) -> None:
    await setup(env)
    alice = await env.client("alice")
    r = await alice.post("/api/trackers/bugs/items", json={})
    assert r.status_code == 422
    body = await r.get_json()
    assert body["member"] == "fields" and "missing" in body["detail"]
    listed = await (await alice.get("/api/trackers/bugs/items")).get_json()
    assert listed["items"] == []


def test_membership_commands_report_only_what_changed(tmp_path: Path) -> None:
    data = str(tmp_path / "d")
    assert run("init", "--data-dir", data, "--password-stdin",
               input="long enough pw\n").returncode == 0
    for step in (("group", "add", "Staff"), ("user", "add", "alice", "--password-stdin")):
        assert run(*step, "--data-dir", data, input="alice password\n").returncode == 0

    def member(action: str) -> str:
        out = run("group", action, "Staff", "alice", "--data-dir", data)
        assert out.returncode == 0, out.stderr
        return out.stdout

    assert "alice added to Staff" in member("add-member")
    assert "already in Staff" in member("add-member")
    assert "alice removed from Staff" in member("remove-member")
    assert "was not in Staff" in member("remove-member")
