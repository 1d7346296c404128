"""A standard WebSub subscriber written from the REC, and one hub app per database.

``Peer`` is a small Quart app served by Hypercorn on a free 127.0.0.1 port. It records
every request it receives, answers verifications of intent as REC §5.3.1 says (echo
``hub.challenge`` with 200), or as a test asks it to misbehave (wrong echo, 404), and,
when it has keys, publishes them at ``/.well-known/fieldcast`` like a fieldcast
instance, so that requests it signs are verified over real HTTP.

The hub app, its tracker and the peers are shared by every test of a module (one per
database): each test uses its own items and callbacks, so they do not see each other.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import pytest
import pytest_asyncio
from hypercorn.asyncio import serve
from hypercorn.config import Config
from quart import Quart, request
from quart.testing import QuartClient

from hub.verifier import VerifierConfig
from instance import accounts
from instance.app import create_app
from instance.db import Database
from keys.publish import well_known_document
from keys.store import KeyStore
from protocol.signatures import RFC9421_ED25519, sign_request
from tests.conftest import PASSWORD, RUN_ID, _pg_exec, _with_db, fast_settings
from tests.harness import free_port

FORM = "application/x-www-form-urlencoded"
NOW = time.time


@dataclass
class Seen:
    method: str
    path: str
    args: dict[str, str]
    body: bytes


@dataclass
class Peer:
    """A subscriber (and, with keys, a fieldcast-like instance) on a real port."""

    name: str
    keys: KeyStore | None = None
    port: int = field(default_factory=free_port)
    seen: list[Seen] = field(default_factory=list)
    #: callback name -> "echo" (default), "wrong" (echo something else), "refuse" (404)
    behaviour: dict[str, str] = field(default_factory=dict)

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def callback(self, label: str = "cb") -> str:
        return f"{self.base}/callback/{label}-{uuid.uuid4().hex[:8]}?token=t1"

    def app(self) -> Quart:
        app = Quart(f"peer-{self.name}")

        @app.get("/.well-known/fieldcast")
        async def well_known() -> Any:
            if self.keys is None:
                return "", 404
            return well_known_document(self.keys, name=self.name, base_url=self.base,
                                       now=time.time())

        @app.route("/callback/<name>", methods=["GET", "POST"])
        async def callback(name: str) -> Any:
            body = await request.get_data()
            self.seen.append(Seen(request.method, request.path, dict(request.args), body))
            if request.method == "POST":
                return "", 202
            mode = request.args.get("hub.mode")
            if mode == "denied":
                return "", 200
            challenge = request.args.get("hub.challenge", "")
            if request.args.get("token") != "t1" or not challenge:
                return "", 404  # the hub lost the callback's own query string
            how = self.behaviour.get(name, "echo")
            if how == "refuse":
                return "", 404
            if how == "wrong":
                return challenge + "x", 200
            return challenge, 200, {"Content-Type": "text/plain"}

        return app

    def gets(self, callback: str) -> list[Seen]:
        path = callback.split(self.base, 1)[1].split("?")[0]
        return [s for s in self.seen if s.path == path and s.method == "GET"]

    async def wait_gets(self, callback: str, count: int = 1, within: float = 10.0
                        ) -> list[Seen]:
        deadline = time.monotonic() + within
        while len(self.gets(callback)) < count:
            if time.monotonic() > deadline:
                raise AssertionError(f"{count} GET(s) to {callback} expected, got "
                                     f"{self.gets(callback)}")
            await asyncio.sleep(0.02)
        return self.gets(callback)

    def sign(self, method: str, url: str, headers: dict[str, str], body: bytes) -> dict[str, str]:
        assert self.keys is not None
        key = self.keys.current("ed25519")
        kid = f"{self.base}/.well-known/fieldcast/keys/{key.record.kid}"
        return {**headers, **sign_request(RFC9421_ED25519, method, url, list(headers.items()),
                                          body, key.private, kid, time.time())}


@contextlib.asynccontextmanager
async def serving(peers: list[Peer]) -> AsyncIterator[None]:
    stop = asyncio.Event()
    tasks = []
    for peer in peers:
        config = Config()
        config.bind = [f"127.0.0.1:{peer.port}"]
        config.accesslog = config.errorlog = None
        tasks.append(asyncio.create_task(
            serve(peer.app(), config, shutdown_trigger=stop.wait)))  # type: ignore[arg-type]
    await asyncio.sleep(0.3)
    try:
        yield
    finally:
        stop.set()
        await asyncio.gather(*tasks, return_exceptions=True)


@dataclass
class World:
    """The hub instance under test, two partners' worth of peers, and helpers."""

    app: Quart
    base: str
    partner: Peer  # B: listed as a partner of the tracker's partner field
    stranger: Peer  # C: an instance with keys, but no partner of anything
    public: Peer  # a plain WebSub subscriber, no keys
    admin: QuartClient
    client: QuartClient

    @property
    def hub(self) -> str:
        return f"{self.base}/federation/hub"

    def topic(self, item_id: int) -> str:
        return f"{self.base}/federation/items/{item_id}"

    async def item(self, tracker: str = "shared", **values: Any) -> int:
        r = await self.admin.post(f"/api/trackers/{tracker}/items", json={"fields": values})
        assert r.status_code == 201, await r.get_data(as_text=True)
        return int((await r.get_json())["id"])

    async def post_hub(self, params: list[tuple[str, str]] | dict[str, str], *,
                       signer: Peer | None = None, content_type: str = FORM,
                       tamper: bytes | None = None) -> tuple[int, str, str]:
        body = urlencode(params).encode()
        headers = {"Content-Type": content_type}
        if signer is not None:
            headers = signer.sign("POST", self.hub, headers, body)
        r = await self.client.post("/federation/hub", data=tamper or body, headers=headers)
        return r.status_code, r.headers.get("Content-Type", ""), await r.get_data(as_text=True)

    async def subscribe(self, topic: str, callback: str, *, signer: Peer | None = None,
                        **extra: str) -> None:
        status, ctype, text = await self.post_hub(
            {"hub.mode": "subscribe", "hub.topic": topic, "hub.callback": callback, **extra},
            signer=signer)
        assert status == 202, text
        assert ctype.startswith("text/plain")

    async def subscriptions(self, callback: str) -> list[dict[str, Any]]:
        r = await self.admin.get("/api/federation/subscriptions")
        assert r.status_code == 200
        return [s for s in (await r.get_json())["subscriptions"] if s["callback"] == callback]

    async def wait_state(self, callback: str, state: str, within: float = 10.0
                         ) -> dict[str, Any]:
        deadline = time.monotonic() + within
        while True:
            subs = await self.subscriptions(callback)
            if subs and subs[0]["state"] == state:
                assert len(subs) == 1
                return subs[0]
            if time.monotonic() > deadline:
                raise AssertionError(f"subscription of {callback} never became {state}: {subs}")
            await asyncio.sleep(0.02)

    async def idle(self) -> None:
        """Until the verifier has nothing due (the intents queue is empty)."""
        from sqlalchemy import func, select

        from instance.models import FederationIntent
        db: Database = self.app.extensions["fieldcast"].db
        for _ in range(500):
            async with db.read() as session:
                if not await session.scalar(select(func.count()).select_from(FederationIntent)):
                    return
            await asyncio.sleep(0.02)
        raise AssertionError("intents still queued")


TEST_VERIFIER = VerifierConfig(poll_interval=0.05, claim_hold=10.0, retry_delays=(0.1,))
LEASES = {"hub_lease_min_seconds": 1, "hub_lease_default_seconds": 600,
          "hub_lease_max_seconds": 3600}


def hub_settings(tmp_path: Path, database_url: str) -> Any:
    return fast_settings(tmp_path, database_url, allow_private_callbacks=True,
                         allow_http_callbacks=True, **LEASES)


@pytest.fixture(scope="module", params=["sqlite", "postgres"])
def module_database_url(request: pytest.FixtureRequest,
                        tmp_path_factory: pytest.TempPathFactory) -> Any:
    """One database per module and backend (tests/conftest.py's, but shared)."""
    import shutil
    if request.param == "sqlite":
        path = tmp_path_factory.mktemp("fedhub") / "fieldcast.db"
        shutil.copy(request.getfixturevalue("sqlite_template"), path)
        yield f"sqlite+aiosqlite:///{path}"
        return
    template = request.getfixturevalue("pg_template")
    from tests.conftest import PG_ADMIN_URL
    name = f"fc_fed_{RUN_ID}_{uuid.uuid4().hex[:8]}"
    asyncio.run(_pg_exec(f'CREATE DATABASE "{name}" TEMPLATE "{template}"'))
    yield _with_db(PG_ADMIN_URL, name)
    asyncio.run(_pg_exec(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


async def make_world(app: Quart, base: str, partner: Peer, stranger: Peer, public: Peer
                     ) -> World:
    state = app.extensions["fieldcast"]
    async with state.change_log.write() as session:
        await accounts.create_user(session, state.passwords, username="admin",
                                   password=PASSWORD, is_admin=True, groups=[])
    admin = app.test_client()
    r = await admin.post("/api/login", json={"username": "admin", "password": PASSWORD})
    assert r.status_code == 200
    world = World(app, base, partner, stranger, public, admin, app.test_client())
    assert (await admin.post("/api/trackers", json={"slug": "shared"})).status_code == 201
    assert (await admin.post("/api/trackers", json={"slug": "partners"})).status_code == 201
    assert (await admin.post("/api/trackers", json={"slug": "closed"})).status_code == 201
    fields = [
        ("shared", {"name": "title", "export": {"mode": "public", "partners": []}}),
        ("shared", {"name": "plan", "export": {"mode": "partners",
                                               "partners": [partner.base]}}),
        ("shared", {"name": "internal"}),
        ("partners", {"name": "plan", "export": {"mode": "partners",
                                                 "partners": [partner.base]}}),
        ("closed", {"name": "title"}),
    ]
    for slug, data in fields:
        r = await admin.post(f"/api/trackers/{slug}/fields", json={"label": data["name"], **data})
        assert r.status_code == 201, await r.get_data(as_text=True)
    return world


@asynccontextmanager
async def open_world(database_url: str, tmp_path_factory: pytest.TempPathFactory,
                     peer: Callable[..., Peer] = Peer,
                     configure: Callable[[Quart], None] | None = None
                     ) -> AsyncIterator[World]:
    """A hub app on ``database_url`` with partner "b", stranger "c" and a plain WebSub
    subscriber, all serving; ``configure`` may adjust the app before it starts."""
    root = tmp_path_factory.mktemp("peers")
    peers = []
    for name in ("b", "c"):
        store = KeyStore(root / name)
        store.generate(time.time())
        peers.append(peer(name, store))
    partner, stranger = peers
    public = peer("websub")
    settings = hub_settings(tmp_path_factory.mktemp("hub"), database_url)
    KeyStore(settings.data_dir / "keys").generate(time.time())
    app = create_app(settings, database=Database(settings.effective_database_url),
                     verifier_config=TEST_VERIFIER)
    if configure is not None:
        configure(app)
    async with serving([partner, stranger, public]), app.test_app():
        yield await make_world(app, settings.base_url, partner, stranger, public)


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def world(module_database_url: str, tmp_path_factory: pytest.TempPathFactory
                ) -> AsyncIterator[World]:
    async with open_world(module_database_url, tmp_path_factory) as world:
        yield world
