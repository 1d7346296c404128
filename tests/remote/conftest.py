"""Two real instances in one test process: A (the host) and B (the subscriber), each a
``create_app`` served by Hypercorn on its own loopback port with its own database and
keys, so every federation request (key documents, topic GETs, subscribe, verification)
crosses real HTTP. Pings are signed with A's key by the test (``Pair.ping``) until the
delivery worker sends them.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
import pytest_asyncio
from hypercorn.asyncio import serve
from hypercorn.config import Config
from quart import Quart

from hub.fetcher import FetcherConfig
from instance import accounts
from instance.app import create_app
from instance.db import Database
from keys.store import KeyStore, key_url
from protocol.delivery import RetryPolicy
from protocol.documents import Notification, dumps
from protocol.signatures import RFC9421_ED25519, sign_request
from tests.conftest import PASSWORD, PG_ADMIN_URL, RUN_ID, _pg_exec, _with_db, fast_settings
from tests.federation.conftest import LEASES, TEST_VERIFIER
from tests.harness import free_port

FAST_FETCH = FetcherConfig(poll_interval=0.05, claim_hold=10.0, sweep_interval=3600.0,
                           retry=RetryPolicy(base=0.2, cap=0.5, max_attempts=100, jitter=0.0))


@dataclass
class Instance:
    name: str
    app: Quart
    base: str
    port: int
    settings: Any
    keys: KeyStore
    stop: asyncio.Event | None = None
    task: asyncio.Task[Any] | None = None

    async def start(self) -> None:
        config = Config()
        config.bind = [f"127.0.0.1:{self.port}"]
        config.accesslog = config.errorlog = None
        self.stop = asyncio.Event()
        self.task = asyncio.create_task(
            serve(self.app, config, shutdown_trigger=self.stop.wait))  # type: ignore[arg-type]
        for _ in range(200):
            with contextlib.suppress(httpx.HTTPError):
                async with httpx.AsyncClient() as c:
                    if (await c.get(self.base + "/healthz")).status_code == 200:
                        return
            await asyncio.sleep(0.02)
        raise AssertionError(f"{self.name} did not start")

    async def halt(self) -> None:
        assert self.stop is not None and self.task is not None
        self.stop.set()
        await self.task

    def client(self) -> httpx.AsyncClient:
        return httpx.AsyncClient(base_url=self.base, timeout=20)


def _make(tmp: Path, name: str, database_url: str) -> Instance:
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    settings = fast_settings(tmp, database_url, allow_private_callbacks=True,
                             allow_http_callbacks=True, base_url=base, instance_name=name,
                             remote_lease_seconds=600, **LEASES)
    keys = KeyStore(settings.data_dir / "keys")
    keys.generate(time.time())
    app = create_app(settings, database=Database(settings.effective_database_url),
                     verifier_config=TEST_VERIFIER, fetcher_config=FAST_FETCH)
    return Instance(name, app, base, port, settings, keys)


@dataclass
class Pair:
    a: Instance
    b: Instance
    admin_a: httpx.AsyncClient
    admin_b: httpx.AsyncClient

    async def a_item(self, **values: Any) -> int:
        r = await self.admin_a.post("/api/trackers/bugs/items", json={"fields": values})
        assert r.status_code == 201, r.text
        return int(r.json()["id"])

    async def b_item(self, tracker: str = "mirror", **values: Any) -> int:
        r = await self.admin_b.post(f"/api/trackers/{tracker}/items", json={"fields": values})
        assert r.status_code == 201, r.text
        return int(r.json()["id"])

    def topic(self, item: int) -> str:
        return f"{self.a.base}/federation/items/{item}"

    async def link(self, b_item: int, url: str) -> httpx.Response:
        return await self.admin_b.put(f"/api/items/{b_item}/link", json={"url": url})

    async def b_fields(self, b_item: int) -> dict[str, Any]:
        r = await self.admin_b.get(f"/api/items/{b_item}")
        assert r.status_code == 200, r.text
        return dict(r.json()["fields"])

    async def outgoing(self, topic: str | None = None) -> list[dict[str, Any]]:
        r = await self.admin_b.get("/api/federation/outgoing")
        assert r.status_code == 200, r.text
        subs = r.json()["subscriptions"]
        return [s for s in subs if topic is None or s["topic"] == topic]

    async def hub_subs(self, topic: str) -> list[dict[str, Any]]:
        r = await self.admin_a.get("/api/federation/subscriptions")
        return [s for s in r.json()["subscriptions"] if s["topic"] == topic]

    def ping_request(self, callback: str, topic: str, item: int, version: int,
                     fields: tuple[str, ...] = ("title",), event: int = 1,
                     key: KeyStore | None = None, origin: str | None = None
                     ) -> tuple[bytes, dict[str, str]]:
        body = dumps(Notification(topic=topic, item=item, fields=fields, version=version,
                                  event=event, sent_at=datetime.now(UTC)))
        headers = {"content-type": "application/json"}
        signer = (key or self.a.keys).current("ed25519")
        kid = key_url(origin or self.a.base, signer.record.kid)
        headers.update(sign_request(RFC9421_ED25519, "POST", callback, list(headers.items()),
                                    body, signer.private, kid, time.time()))
        return body, headers

    async def ping(self, callback: str, topic: str, item: int, version: int, **kw: Any
                   ) -> httpx.Response:
        body, headers = self.ping_request(callback, topic, item, version, **kw)
        async with httpx.AsyncClient(timeout=20) as c:
            return await c.post(callback, content=body, headers=headers)




def _clone(request: pytest.FixtureRequest, tmp: Path, backend: str, label: str) -> str:
    import shutil
    if backend == "sqlite":
        path = tmp / f"{label}.db"
        shutil.copy(request.getfixturevalue("sqlite_template"), path)
        return f"sqlite+aiosqlite:///{path}"
    template = request.getfixturevalue("pg_template")
    name = f"fc_rm_{RUN_ID}_{label}_{uuid.uuid4().hex[:6]}"
    asyncio.run(_pg_exec(f'CREATE DATABASE "{name}" TEMPLATE "{template}"'))
    return _with_db(PG_ADMIN_URL, name)


@pytest.fixture(scope="module", params=["sqlite", "postgres"])
def pair_urls(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
              ) -> Any:
    tmp = tmp_path_factory.mktemp("pairdb")
    urls = [_clone(request, tmp, request.param, label) for label in ("a", "b")]
    yield urls
    if request.param == "postgres":
        for url in urls:
            name = url.rsplit("/", 1)[1]
            asyncio.run(_pg_exec(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


async def _admin(inst: Instance) -> httpx.AsyncClient:
    state = inst.app.extensions["fieldcast"]
    async with state.change_log.write() as session:
        await accounts.create_user(session, state.passwords, username="admin",
                                   password=PASSWORD, is_admin=True, groups=[])
    client = inst.client()
    r = await client.post("/api/login", json={"username": "admin", "password": PASSWORD})
    assert r.status_code == 200, r.text
    return client


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def pair(pair_urls: list[str], tmp_path_factory: pytest.TempPathFactory
               ) -> AsyncIterator[Pair]:
    a = _make(tmp_path_factory.mktemp("a"), "a", pair_urls[0])
    b = _make(tmp_path_factory.mktemp("b"), "b", pair_urls[1])
    await a.start()
    await b.start()
    admin_a, admin_b = await _admin(a), await _admin(b)
    p = Pair(a, b, admin_a, admin_b)
    assert (await admin_a.post("/api/trackers", json={"slug": "bugs"})).status_code == 201
    for data in ({"name": "title", "export": {"mode": "partners", "partners": [b.base]}},
                 {"name": "status", "export": {"mode": "partners", "partners": [b.base]}},
                 {"name": "internal"}):
        r = await admin_a.post("/api/trackers/bugs/fields", json={"label": data["name"], **data})
        assert r.status_code == 201, r.text
    for slug in ("mirror", "plain", "elsewhere"):
        assert (await admin_b.post("/api/trackers", json={"slug": slug})).status_code == 201
    fields = [
        ("mirror", {"name": "notes"}),
        ("mirror", {"name": "their_title", "type": "remote", "options": {"source": {
            "instance": a.base, "tracker": "bugs", "field": "title"}}}),
        ("mirror", {"name": "their_status", "type": "remote", "options": {"source": {
            "instance": a.base, "tracker": "bugs", "field": "status"}}}),
        ("plain", {"name": "notes"}),
        ("elsewhere", {"name": "their_internal", "type": "remote", "options": {"source": {
            "instance": a.base, "tracker": "bugs", "field": "internal"}}}),
    ]
    for slug, data in fields:
        r = await admin_b.post(f"/api/trackers/{slug}/fields", json={"label": data["name"], **data})
        assert r.status_code == 201, r.text
    try:
        yield p
    finally:
        await admin_a.aclose()
        await admin_b.aclose()
        for inst in (b, a):
            if inst.stop is not None and not inst.stop.is_set():
                await inst.halt()
