"""Three real instances, as three organisations would run them: A hosts a tracker,
B and C are its partners and mirror some of its fields.

A's tracker ``bugs`` has ``title`` (exported to B and C), ``status`` (to B only),
``priority`` (to C only) and ``internal`` (to nobody); nothing is public. B and C each
have a tracker ``mirror`` with a field of their own (``notes``) and a remote field for
each of A's four, so that a leak would have somewhere to land.

The instances are started once per module and shared by its tests; each test makes its
own items. A failed test's report carries every instance's log (tests/harness/plugin.py).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import pytest
import pytest_asyncio

from tests.conftest import PG_ADMIN_URL, _pg_exec
from tests.harness import Client, Cluster, RunningInstance, eventually
from tests.harness.plugin import pytest_runtest_makereport  # noqa: F401  (the hook)

A_FIELDS = ("title", "status", "priority", "internal")


@dataclass
class World:
    cluster: Cluster
    backend: str

    @property
    def a(self) -> Client:
        return self.cluster.clients["a"]

    @property
    def b(self) -> Client:
        return self.cluster.clients["b"]

    @property
    def c(self) -> Client:
        return self.cluster.clients["c"]

    def proc(self, name: str) -> RunningInstance:
        return self.cluster[name]

    async def exports_for(self) -> None:
        """A's export settings as the story starts."""
        b, c = self.b.base, self.c.base
        await self.a.export("bugs", "title", "partners", [b, c])
        await self.a.export("bugs", "status", "partners", [b])
        await self.a.export("bugs", "priority", "partners", [c])
        await self.a.export("bugs", "internal", "none")

    async def a_item(self, **values: Any) -> int:
        return await self.a.create_item("bugs", **{"internal": "A only", **values})

    async def linked(self, partner: Client, a_item: int) -> int:
        """A new item on ``partner`` linked to ``a_item``; returns once subscribed."""
        item = await partner.create_item("mirror", notes=f"{partner.instance.name}'s own")
        await partner.link(item, f"{self.a.base}/items/{a_item}")
        topic = self.a.topic(a_item)

        async def active() -> bool:
            (sub,) = await partner.outgoing(topic)
            return bool(sub["state"] == "active")
        await eventually(active)
        return item


async def mirrored(partner: Client, item: int, field: str, value: Any,
                   within: float = 10.0) -> dict[str, Any]:
    """Waits until ``partner`` shows ``value`` in ``field`` of ``item`` (live)."""
    async def check() -> dict[str, Any]:
        f = (await partner.fields(item))[field]
        assert f.get("value") == value, f
        return dict(f)
    return await eventually(check, within=within)


async def _backend_available(backend: str) -> None:
    if backend != "postgres":
        return
    try:
        await _pg_exec("SELECT 1")
    except Exception as exc:  # any reason to be unreachable
        from tests.conftest import IN_CI
        if IN_CI:
            pytest.fail(f"PostgreSQL unreachable under CI=true: {exc!r}")
        pytest.skip(f"PostgreSQL at {PG_ADMIN_URL} is unreachable: {exc!r}")


async def make_world(tmp: Any, backend: str) -> World:
    await _backend_available(backend)
    cluster = await Cluster(tmp, ["a", "b", "c"], backend=backend,
                            pg_admin_url=PG_ADMIN_URL).start()
    world = World(cluster, backend)
    try:
        a = world.a
        await a.create_tracker("bugs")
        for name in A_FIELDS:
            await a.add_field("bugs", name)
        await world.exports_for()
        for partner in (world.b, world.c):
            await partner.create_tracker("mirror")
            await partner.add_field("mirror", "notes")
            for name in A_FIELDS:
                await partner.add_remote_field("mirror", f"a_{name}", cluster["a"], "bugs",
                                               name)
            # Every request to the partner's callback is written down from now on.
            partner.instance.callback_fault(None, record=True)
    except BaseException:
        await cluster.close()
        raise
    return world


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def world(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
                ) -> AsyncIterator[World]:
    backend = getattr(request, "param", "sqlite")
    w = await make_world(tmp_path_factory.mktemp(f"world-{backend}"), backend)
    try:
        yield w
    finally:
        await w.cluster.close()


def sign_ping(world: World, partner: Client, a_item: int, version: int, callback: str,
              fields: tuple[str, ...] = ("status",), key: Any = None
              ) -> tuple[bytes, dict[str, str]]:
    """A notification for ``a_item`` signed as A signs them (A's current Ed25519 key from
    its data directory, or ``key``, a ``keys.store.LiveKey``)."""
    import time
    from datetime import UTC, datetime

    from keys.store import key_url
    from protocol.documents import Notification, dumps
    from protocol.signatures import RFC9421_ED25519, sign_request

    body = dumps(Notification(topic=world.a.topic(a_item), item=a_item, fields=fields,
                              version=version, event=1, sent_at=datetime.now(UTC)))
    signer = key or world.proc("a").key_store().current("ed25519")
    headers = {"content-type": "application/json"}
    headers.update(sign_request(RFC9421_ED25519, "POST", callback, list(headers.items()), body,
                                signer.private, key_url(world.a.base, signer.record.kid),
                                time.time()))
    return body, headers


async def callback_of(partner: Client, world: World, a_item: int) -> str:
    (sub,) = await partner.outgoing(world.a.topic(a_item))
    return str(sub["callback"])
