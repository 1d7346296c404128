"""Property: for random users, groups and field rights, a GET never returns a field the
user may not read, and a PATCH succeeds exactly when the user may edit."""

from __future__ import annotations

import itertools
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.conftest import Env

CUSTOM = ("g0", "g1", "g2")
ALL_GROUPS = ("Anonymous", "Registered", *CUSTOM)
_counter = itertools.count()

group_sets = st.frozensets(st.sampled_from(ALL_GROUPS), max_size=3)
field_rights = st.tuples(group_sets, group_sets)
users = st.tuples(st.frozensets(st.sampled_from(CUSTOM)), st.booleans())  # groups, admin


def model_groups(member_of: frozenset[str] | None) -> set[str]:
    """The test's own statement of the rule: None is the anonymous caller."""
    if member_of is None:
        return {"Anonymous"}
    return {"Anonymous", "Registered", *member_of}


def model_can_read(rights: tuple[frozenset[str], frozenset[str]],
                   member_of: frozenset[str] | None, admin: bool) -> bool:
    return admin or bool(rights[0] & model_groups(member_of))


def model_can_edit(rights: tuple[frozenset[str], frozenset[str]],
                   member_of: frozenset[str] | None, admin: bool) -> bool:
    return admin or (bool(rights[1] & model_groups(member_of))
                     and model_can_read(rights, member_of, admin))


async def _ensure_groups(env: Env) -> None:
    admin = await env.client("admin")
    existing = {g["name"] for g in (await (await admin.get("/api/groups")).get_json())["groups"]}
    for name in CUSTOM:
        if name not in existing:
            assert (await admin.post("/api/groups", json={"name": name})).status_code == 201


@settings(max_examples=12, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(fields=st.lists(field_rights, min_size=1, max_size=4),
       people=st.lists(users, min_size=1, max_size=3))
async def test_get_and_patch_follow_the_rights(
    env: Env, fields: list[tuple[frozenset[str], frozenset[str]]],
    people: list[tuple[frozenset[str], bool]],
) -> None:
    await _ensure_groups(env)
    n = next(_counter)
    admin = await env.client("admin")
    slug = f"t{n}"
    assert (await admin.post("/api/trackers", json={"slug": slug})).status_code == 201
    names = [f"f{i}" for i in range(len(fields))]
    for name, (read, edit) in zip(names, fields, strict=True):
        r = await admin.post(f"/api/trackers/{slug}/fields", json={
            "name": name, "read_groups": sorted(read), "edit_groups": sorted(edit)})
        assert r.status_code == 201
    r = await admin.post(f"/api/trackers/{slug}/items",
                         json={"fields": {name: "secret-" + name for name in names}})
    item = (await r.get_json())["id"]

    callers: list[tuple[Any, frozenset[str] | None, bool]] = [(await env.client(), None, False)]
    for i, (member_of, is_admin) in enumerate(people):
        username = f"u{n}_{i}"
        await env.user(username, admin=is_admin, groups=tuple(sorted(member_of)))
        callers.append((await env.client(username), member_of, is_admin))

    for client, member_of, is_admin in callers:
        readable = {name for name, rights in zip(names, fields, strict=True)
                    if model_can_read(rights, member_of, is_admin)}
        r = await client.get(f"/api/items/{item}")
        if readable:
            body = await r.get_json()
            assert set(body["fields"]) == readable
            text = await r.get_data(as_text=True)
            for name in set(names) - readable:
                assert f"secret-{name}" not in text
        else:
            assert r.status_code == 404
        r = await client.get(f"/api/changes?since=0&tracker={slug}")
        if readable:
            log = await r.get_json()
            assert {c["field"] for c in log["changes"] if not c.get("created")} == readable
            # The item's creation is shown to whoever may read something of its tracker.
            assert any(c.get("created") for c in log["changes"])
        else:
            # A tracker one may read nothing of answers as one that does not exist.
            assert r.status_code == 404
        for name, rights in zip(names, fields, strict=True):
            r = await client.patch(f"/api/items/{item}/fields/{name}", json={"value": "new"})
            if model_can_edit(rights, member_of, is_admin):
                assert r.status_code == 200, (name, rights, member_of, await r.get_json())
                # Put the secret back so the next caller's checks stay meaningful.
                await admin.patch(f"/api/items/{item}/fields/{name}",
                                  json={"value": "secret-" + name})
            elif name in readable:
                assert r.status_code == 403
            else:
                # An unreadable field answers exactly as a field that does not exist.
                assert r.status_code == 404, r.status_code
