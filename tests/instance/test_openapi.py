"""``/openapi.json`` describes the JSON API, and the running server does what it says.

The contract test starts one real ``fieldcast serve`` with a tracker whose fields a
restricted user may partly read, and lets schemathesis generate requests from the
served description (valid and invalid ones), first as that user, then as the admin:
no answer may be a 5xx, and every answer's status, content type and body must be
one the description lists. The restricted user must never see the value of a field
they may not read, in any answer. The other tests check the decorators that keep the
description true, in process.
"""

from __future__ import annotations

import asyncio
import logging
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
import schemathesis
from quart import Quart
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from instance.api import schemas
from instance.openapi import STRICT, ResponseDrift, responds
from tests.conftest import Env
from tests.harness import RunningInstance

SECRET = "TOP-SECRET-7f3a"
CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance,
          response_schema_conformance]
# Per operation and caller: enough to reach every handler's answers and a good share of
# its refusals, within about a minute for both callers on a loaded 2-core machine.
MAX_EXAMPLES = 12


@dataclass
class Contract:
    who: str  # "restricted" or "admin"
    token: str
    own_token_ids: set[int]
    base_url: str
    item_ids: list[int]
    disposable: dict[str, list[Any]]  # what DELETE may take, so the others still exist


async def _seed(inst: RunningInstance) -> dict[str, Any]:
    admin = await inst.client()

    async def ok(method: str, url: str, json: Any = None) -> Any:
        r = await admin.request(method, url, json=json)
        assert r.status_code < 300, (method, url, r.status_code, r.text)
        return r.json() if r.content else None

    await ok("POST", "/api/groups", {"name": "Staff"})
    await ok("POST", "/api/groups", {"name": "Spare"})
    await ok("POST", "/api/users", {"username": "carol", "password": "carol's long password"})
    await ok("POST", "/api/users", {"username": "dave", "password": "dave's long password",
                                   "groups": ["Staff"]})
    await ok("POST", "/api/trackers", {"slug": "bugs", "name": "Bugs"})
    for field in (
        {"name": "title", "export": {"mode": "public"}},
        {"name": "status", "type": "dropdown", "options": {"choices": ["open", "closed"]}},
        {"name": "estimate", "type": "number", "options": {"min": 0, "max": 100}},
        {"name": "due", "type": "date"},
        {"name": "owner", "type": "user"},
        {"name": "notes", "type": "textarea", "edit_groups": ["Staff"]},
        {"name": "secret", "read_groups": ["Staff"], "edit_groups": ["Staff"]},
        {"name": "mirror", "type": "remote", "options": {"source": {
            "instance": "http://127.0.0.1:9", "tracker": "bugs", "field": "title"}}},
        {"name": "spare1"}, {"name": "spare2"},
    ):
        await ok("POST", "/api/trackers/bugs/fields", field)
    await ok("POST", "/api/trackers", {"slug": "hidden"})
    await ok("POST", "/api/trackers/hidden/fields", {"name": "plan", "read_groups": ["Staff"]})
    items = []
    for n in range(4):
        item = await ok("POST", "/api/trackers/bugs/items", {"fields": {
            "title": f"bug {n}", "status": "open", "estimate": 3, "due": "2026-12-24",
            "owner": "dave", "notes": "a\nb", "secret": SECRET}})
        items.append(item["id"])
    await ok("PATCH", f"/api/items/{items[0]}/fields/estimate", {"value": 5})
    await ok("POST", "/api/trackers/hidden/items", {"fields": {"plan": SECRET}})
    admin_token = await ok("POST", "/api/tokens", {"name": "contract"})
    await admin.aclose()
    carol = await inst.client("carol", "carol's long password")
    r = await carol.post("/api/tokens", json={"name": "contract"})
    carol_token = r.json()
    await carol.aclose()
    return {"admin": admin_token, "restricted": carol_token, "items": items[:2],
            "disposable": {"item_id": items[2:], "name": ["spare1", "spare2"],
                           "group": ["Spare"]}}


@pytest.fixture(scope="module")
def contract_instance(tmp_path_factory: pytest.TempPathFactory
                      ) -> Iterator[tuple[RunningInstance, dict[str, Any]]]:
    inst = RunningInstance.create(tmp_path_factory.mktemp("contract"), "contract")
    inst.start()
    try:
        yield inst, asyncio.run(_seed(inst))
    finally:
        inst.stop()


# The restricted user first: the admin's run may change anyone's rights.
@pytest.fixture(scope="module", params=["restricted", "admin"])
def contract(request: pytest.FixtureRequest,
             contract_instance: tuple[RunningInstance, dict[str, Any]]) -> Contract:
    inst, seeded = contract_instance
    token = seeded[request.param]
    return Contract(who=request.param, token=token["token"], own_token_ids={token["id"]},
                    base_url=inst.base_url, item_ids=seeded["items"],
                    disposable=seeded["disposable"])


@pytest.fixture(scope="module")
def api_schema(contract: Contract) -> Any:
    config = schemathesis.Config.from_dict({
        "seed": 14,
        "headers": {"Authorization": f"Bearer {contract.token}"},
        "generation": {"max-examples": MAX_EXAMPLES, "mode": "all", "database": "none",
                       "with-security-parameters": False},
        # Coverage would send hundreds of boundary cases per operation (the hostile-route
        # walk covers those); stateful links are not described.
        "phases": {"coverage": {"enabled": False}, "stateful": {"enabled": False}},
        "request-timeout": 30,
    })
    return schemathesis.openapi.from_url(f"{contract.base_url}/openapi.json", config=config)


schema = schemathesis.pytest.from_fixture("api_schema")


_PICKS: Counter[tuple[str, str, str]] = Counter()


def _pick(case: Any, name: str, known: list[Any]) -> None:
    """Every other generated path value replaced by one that exists, in turn, so that
    requests reach the handlers' work and not only their 404."""
    key = (case.method, case.operation.path, name)
    n = _PICKS[key]
    _PICKS[key] += 1
    if n % 2:
        case.path_parameters[name] = known[(n // 2) % len(known)]


def _aim(case: Any, contract: Contract) -> None:
    params = case.path_parameters or {}
    path = case.operation.path
    spare = contract.disposable if case.method == "DELETE" else {}
    groups = path.startswith("/api/groups")
    if "slug" in params:
        _pick(case, "slug", ["bugs", "hidden"])
    if "item_id" in params:
        _pick(case, "item_id", spare.get("item_id", contract.item_ids))
    if "username" in params:
        _pick(case, "username", ["carol", "dave", "admin"])
    if "name" in params:
        _pick(case, "name", spare.get("group" if groups else "name") or (
            ["Staff", "Registered"] if groups else
            ["title", "status", "estimate", "notes", "secret", "mirror"]))
    if params.get("token_id") in contract.own_token_ids:
        params["token_id"] = 10**9  # revoking the run's own token would end the run
    if path.endswith("/link") and isinstance(case.body, dict) and isinstance(
            case.body.get("url"), str):
        # A link fetches the URL: never anything but this machine (refused there, as
        # the instance does not allow private addresses).
        case.body["url"] = f"{contract.base_url}/items/1"


@schema.parametrize()
def test_the_server_answers_as_its_description_says(case: Any, contract: Contract) -> None:
    _aim(case, contract)
    response = case.call_and_validate(checks=CHECKS)
    if contract.who == "restricted":
        assert SECRET not in response.text, (case.method, case.formatted_path)


# ---- in process -----------------------------------------------------------------------------


async def test_the_description_covers_every_api_route(env: Env) -> None:
    client = await env.client()
    r = await client.get("/openapi.json")
    assert r.status_code == 200 and r.mimetype == "application/json"
    doc = await r.get_json()
    assert doc["openapi"].startswith("3.")
    described = {(path, method) for path, ops in doc["paths"].items() for method in ops}
    for rule in env.app.url_map.iter_rules():
        if not rule.rule.startswith("/api/"):
            continue
        path = rule.rule
        for arg in rule.arguments:
            path = path.replace(f"<int:{arg}>", f"{{{arg}}}").replace(f"<{arg}>", f"{{{arg}}}")
        for method in rule.methods or ():
            if method in ("HEAD", "OPTIONS"):
                continue
            assert (path, method.lower()) in described, (path, method)
            op = doc["paths"][path][method.lower()]
            # Every handler says what it answers (@responds), so its answers are checked.
            assert any(code.startswith("2") for code in op["responses"]), (path, method)
            assert "default" in op["responses"] and op.get("summary"), (path, method)
    ids = [op["operationId"] for ops in doc["paths"].values() for op in ops.values()]
    assert len(ids) == len(set(ids))


async def test_a_body_that_does_not_match_is_a_422_naming_the_member(env: Env) -> None:
    admin = await env.client("admin")
    r = await admin.post("/api/users", json={"username": 7, "password": "a long password",
                                             "is_admin": "yes", "colour": "red"})
    assert r.status_code == 422
    body = await r.get_json()
    assert body["error"] == "invalid" and body["member"] == "username"
    for words in ("username must be a string", "is_admin must be true or false",
                  "unknown member(s) colour"):
        assert words in body["detail"], body
    r = await admin.post("/api/trackers", json={"slug": "t", "require_if_match": 1})
    assert r.status_code == 422 and "true or false" in (await r.get_json())["detail"]
    r = await admin.post("/api/trackers/t/items", json={"fields": {}, **{
        f"m{n}": n for n in range(5000)}})
    body = await r.get_json()
    assert r.status_code == 422 and "m4 and 4995 more" in body["detail"]
    assert len(body["detail"]) < 300 and "a new item" in body["detail"]
    # The strict parser still comes first: 400 for what is not JSON, 415 for not JSON.
    r = await admin.post("/api/groups", data=b'{"name": ', headers={
        "Content-Type": "application/json"})
    assert r.status_code == 400 and (await r.get_json())["error"] == "bad_json"
    r = await admin.get("/api/changes?limit=0")
    body = await r.get_json()
    assert r.status_code == 400 and body["error"] == "bad_query" and "limit" in body["detail"]


async def test_an_answer_the_description_does_not_allow_is_an_error() -> None:
    token = {"id": 1, "name": "t", "created_at": "2026-12-01T00:00:00Z", "last_used_at": None}

    @responds(200, schemas.Token)
    @responds(204)
    async def handler(answer: Any) -> Any:
        return answer

    assert await handler(token) == token
    assert await handler(("", 204)) == ("", 204)
    for drift in ({**token, "secret": "x"},  # a member nobody described
                  {**token, "id": "1"},  # a string where the description says integer
                  (token, 202),  # a status nobody described
                  ({"a": 1}, 204)):  # a body where none is described
        with pytest.raises(ResponseDrift):
            await handler(drift)

    @responds(200, schemas.TokenList, sample="tokens")
    async def page(answer: Any) -> Any:
        return answer

    # A page's first row is checked (the rest are made by the same code).
    assert await page({"tokens": [token, token]})
    with pytest.raises(ResponseDrift):
        await page({"tokens": [{**token, "id": "1"}, token]})
    with pytest.raises(ResponseDrift):
        await page({"tokens": [], "more": True})


async def test_drift_outside_strict_runs_is_logged_and_answered(
        caplog: pytest.LogCaptureFixture) -> None:
    # In production a drift must not turn a committed save into a 500 for the user.
    app = Quart(__name__)

    @responds(200, schemas.Token)
    async def handler(answer: Any) -> Any:
        return answer

    drifted = {"id": "1", "name": "t", "created_at": "2026-12-01T00:00:00Z",
               "last_used_at": None}
    for strict in (False, True):
        app.config[STRICT] = strict
        async with app.app_context():
            if strict:
                with pytest.raises(ResponseDrift):
                    await handler(drifted)
            else:
                with caplog.at_level(logging.ERROR, logger="instance.openapi"):
                    assert await handler(drifted) == drifted
                assert "drifted" in caplog.text
