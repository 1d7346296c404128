"""Every route of the app, fed hostile path values and bodies, never answers a 5xx.

The walk reads the app's own URL map, so a route added later is walked too. Each path
converter is filled with values that broke handlers before (integers past 64 bits, bad
percent-escapes, a lone surrogate), each body with what a hostile client can send
(invalid UTF-8, deep nesting, 400-digit numbers, wrong types), as anonymous and as admin.
"""

from __future__ import annotations

import itertools
import json
import time
from pathlib import Path
from typing import Any

from quart.testing import QuartClient
from werkzeug.routing import Rule

from keys.store import KeyStore
from tests.conftest import Env

BIG = str(2**63)
HOSTILE_INTS = [BIG, str(10**30), "-1", "x", "%ff", "0"]
HOSTILE_STRINGS = ["x", "%ff", "%ED%A0%80", "%00", "a" * 300, "\ud800"]
HUGE = 10**400
HOSTILE_SCALARS: list[Any] = [HUGE, -(2**64), 2**63, "x\ud800", "a\x00b", [], {}, True,
                              1e308, "y" * 5000]
KEYS = ["username", "password", "name", "slug", "value", "fields", "type", "options",
        "label", "position", "description", "display_name", "groups", "is_admin",
        "disabled", "read_groups", "edit_groups", "export", "require_if_match", "items"]
RAW_BODIES: list[bytes] = [
    b'{"username":"\xff","password":"x"}',
    b"\xff\xfe",
    b"[" * 1000 + b"]" * 1000,
    b'{"a":' * 1000 + b"1" + b"}" * 1000,
    b'{"value":' + b"9" * 400 + b"}",
    b'{"value":"x\\ud800"}',
    b'{"value":1e999}',
    b'{"fields":{"title":"\\udfff"}}',
    b'{"fields":{"estimate":' + b"9" * 400 + b"}}",
    b'{"name":"n","type":"number","options":{"min":' + b"9" * 400 + b"}}",
    b'{"name":"d","type":"dropdown","options":{"choices":["a\\ud800"]}}',
    b"[]", b'"s"', b"1", b"null", b"",
]


def _bodies() -> list[tuple[bytes, str]]:
    out = [(raw, "application/json") for raw in RAW_BODIES]
    out.append((b"hub.mode=subscribe&hub.topic=%ff&hub.callback=" + b"9" * 400,
                "application/x-www-form-urlencoded"))
    for key, value in itertools.product(KEYS, HOSTILE_SCALARS):
        try:
            out.append((json.dumps({key: value}).encode(), "application/json"))
        except ValueError:
            continue
    out.append((json.dumps({"fields": {"title": "x\ud800", "estimate": HUGE}}).encode(),
                "application/json"))
    return out


BODIES = _bodies()


def _paths(rule: Rule, valid: dict[str, str]) -> list[tuple[str, bool]]:
    """(path, all converters valid) for each converter filled with each hostile value."""
    def build(values: dict[str, str]) -> str:
        path = rule.rule
        for name, conv in rule._converters.items():
            tag = {"IntegerConverter": "int:", "PathConverter": "path:"}.get(
                type(conv).__name__, "")
            path = path.replace(f"<{tag}{name}>", values[name])
        return path

    names = list(rule._converters)
    base = {n: valid.get(n, "1") for n in names}
    out = [(build(base), True)]
    for name, conv in rule._converters.items():
        hostile = HOSTILE_INTS if type(conv).__name__ == "IntegerConverter" else HOSTILE_STRINGS
        for value in hostile:
            out.append((build({**base, name: value}), False))
    return out


async def _send(client: QuartClient, method: str, path: str, body: bytes | None,
                content_type: str | None) -> int:
    headers = {"Content-Type": content_type} if content_type else {}
    # The test client encodes the path itself; a lone surrogate goes in the scope as is,
    # as a server decoding a percent-escaped path could hand it over.
    scope = {"path": path} if "\ud800" in path else None
    response = await client.open(path.replace("\ud800", "x"), method=method, data=body,
                                 headers=headers, scope_base=scope)
    await response.get_data()
    return response.status_code


async def _setup(env: Env, tmp_path: Path) -> dict[str, str]:
    # Keys, so that /.well-known answers rather than 503 (no keys yet).
    store = KeyStore(tmp_path / "walk-keys")
    store.generate(time.time())
    env.state.keys = store.load()
    admin = await env.client("admin")
    assert (await admin.post("/api/groups", json={"name": "Staff"})).status_code == 201
    assert (await admin.post("/api/trackers", json={"slug": "bugs", "name": "B"})
            ).status_code == 201
    for field in ({"name": "title", "type": "text"},
                  {"name": "estimate", "type": "number"},
                  {"name": "status", "type": "dropdown", "options": {"choices": ["a", "b"]}},
                  {"name": "notes", "type": "textarea"}):
        r = await admin.post("/api/trackers/bugs/fields", json=field)
        assert r.status_code == 201
    r = await admin.post("/api/trackers/bugs/items", json={"fields": {"title": "t"}})
    item = (await r.get_json())["id"]
    r = await admin.post("/api/tokens", json={"name": "t"})
    token = (await r.get_json())["id"]
    return {"item_id": str(item), "token_id": str(token), "slug": "bugs", "name": "title",
            "username": "admin", "kid": "x", "filename": "fieldcast.js"}


def _order(rule: Rule, method: str) -> int:
    # Destructive requests last, so that the others still find what they act on.
    return 1 if method == "DELETE" or rule.rule == "/api/logout" else 0


async def test_no_route_answers_5xx(env: Env, tmp_path: Path) -> None:
    valid = await _setup(env, tmp_path)
    failures: list[str] = []
    query = ["?since=" + "9" * 20, "?after=" + BIG, "?item=" + BIG, "?limit=" + BIG,
             "?since=-1&item=%ff&tracker=%00", "?since=x&tracker=%ED%A0%80",
             "?limit=" + "9" * 5000]
    work = sorted(((rule, method) for rule in env.app.url_map.iter_rules()
                   if not rule.websocket for method in sorted(rule.methods or ())
                   if method not in ("HEAD", "OPTIONS")),
                  key=lambda rm: _order(*rm))
    for who in (None, "admin"):
        client = await env.client(who)
        for rule, method in work:
            for path, all_valid in _paths(rule, valid):
                if method in ("GET", "DELETE"):
                    attempts = [(path + q, None, None) for q in (["", *query] if all_valid
                                                                  else [""])]
                else:
                    attempts = [(path, b, c) for b, c in (BODIES if all_valid
                                                          else BODIES[:3])]
                for target, body, ctype in attempts:
                    status = await _send(client, method, target, body, ctype)
                    if status >= 500:
                        failures.append(f"{who} {method} {target!r} {body!r:.80} -> {status}")
    assert not failures, f"{len(failures)} answers were 5xx:\n" + "\n".join(failures[:60])
