"""Hostile values, one class at a time: each answers a clear 4xx and breaks nothing."""

from __future__ import annotations

from typing import Any

import pytest

from instance.fieldtypes import FieldTypeError, validate_options, validate_value
from tests.conftest import Env
from tests.instance.test_api import setup

SURROGATE = "x\ud800"
NOT_TEXT = [SURROGATE, "\udfff", "a\x00b"]


@pytest.mark.parametrize("bad", NOT_TEXT)
@pytest.mark.parametrize("field_type,options", [
    ("text", {}), ("textarea", {}), ("dropdown", {"choices": ["a", "x\ud800", "a\x00b"]}),
    ("date", {}), ("user", {}), ("remote", {}),
])
def test_every_type_refuses_strings_that_are_not_text(field_type: str, options: dict[str, Any],
                                                      bad: str) -> None:
    with pytest.raises(FieldTypeError):
        validate_value(field_type, options, bad)
    if field_type == "remote":
        with pytest.raises(FieldTypeError):
            validate_value(field_type, options, {"nested": [bad]})


@pytest.mark.parametrize("bad", NOT_TEXT)
def test_options_refuse_strings_that_are_not_text(bad: str) -> None:
    with pytest.raises(FieldTypeError):
        validate_options("dropdown", {"choices": ["open", bad]})
    with pytest.raises(FieldTypeError):
        validate_options("remote", {"source": {"instance": "https://a.example/" + bad,
                                               "tracker": "t", "field": "f"}})


def test_numbers_past_64_bits_are_refused() -> None:
    for value in (10**400, -(10**400), 2**63):
        with pytest.raises(FieldTypeError):
            validate_value("number", {}, value)
        with pytest.raises(FieldTypeError):
            validate_options("number", {"min": value})
    assert validate_value("number", {}, 2**63 - 1) == 2**63 - 1


async def test_a_lone_surrogate_is_refused_and_the_pages_keep_working(env: Env) -> None:
    await setup(env)
    alice = await env.client("alice")
    item = await (await alice.post("/api/trackers/bugs/items",
                                   json={"fields": {"title": "A"}})).get_json()
    for raw in (b'{"value":"x\\ud800"}', b'{"value":"\\udfff"}', b'{"value":"a\\u0000"}'):
        r = await alice.patch(f"/api/items/{item['id']}/fields/title", data=raw,
                              headers={"Content-Type": "application/json"})
        assert r.status_code == 422, await r.get_data()
        assert (await r.get_json())["error"] == "invalid"
    r = await alice.post("/api/trackers/bugs/items", data=b'{"fields":{"title":"\\ud800"}}',
                         headers={"Content-Type": "application/json"})
    assert r.status_code == 422
    r = await alice.get(f"/items/{item['id']}")
    assert r.status_code == 200
    assert (await alice.get("/trackers/bugs")).status_code == 200
    got = await (await alice.get(f"/api/items/{item['id']}")).get_json()
    assert got["fields"]["title"]["value"] == "A"


async def test_bad_json_bodies_answer_400(env: Env) -> None:
    anon = await env.client()
    for raw in (b'{"username":"\xff","password":"x"}', b"[" * 1000 + b"]" * 1000,
                b'{"a":' * 40 + b"1" + b"}" * 40):
        r = await anon.post("/api/login", data=raw, headers={"Content-Type": "application/json"})
        assert r.status_code == 400, (raw[:20], r.status_code)
        assert (await r.get_json())["error"] == "bad_json"


async def test_integers_past_64_bits(env: Env) -> None:
    await setup(env)
    admin = await env.client("admin")
    big = 2**63
    for path in (f"/api/items/{big}", f"/api/items/{10**30}/fields/title", f"/items/{big}",
                 f"/federation/items/{big}"):
        r = await admin.get(path)
        assert r.status_code == 404, path
    assert (await admin.delete(f"/api/tokens/{big}")).status_code == 404
    for query, name in ((f"since={10**20}", "since"), (f"after={big}", "after"),
                        (f"item={big}", "item"), ("limit=1_0", "limit")):
        path = "/api/changes?" if name != "after" else "/api/trackers/bugs/items?"
        r = await admin.get(path + query)
        assert r.status_code == 400, query
        body = await r.get_json()
        assert body["error"] == "bad_query" and name in body["detail"]
    item = await (await admin.post("/api/trackers/bugs/items",
                                   json={"fields": {"title": "n"}})).get_json()
    r = await admin.patch(f"/api/items/{item['id']}/fields/estimate",
                          data=b'{"value":' + b"9" * 400 + b"}",
                          headers={"Content-Type": "application/json"})
    assert r.status_code == 422
    r = await admin.patch("/api/trackers/bugs/fields/estimate",
                          json={"options": {"min": 10**400}})
    assert r.status_code == 422
    r = await admin.patch("/api/trackers/bugs/fields/estimate", json={"position": 2**40})
    assert r.status_code == 422
