"""The callback address policy, end to end through the hub: with allow_private_callbacks
off (the default), callbacks on loopback, private, link-local addresses, or on a name that
resolves to loopback, are never called, and the subscription is refused with a reason.
Only 127.0.0.1 / [::1] / localhost are ever listened on; the other addresses are refused
before any connection is tried (tests/hub/test_outbound.py proves that part)."""

from __future__ import annotations

import shutil
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import pytest_asyncio

from instance.app import create_app
from instance.db import Database
from keys.store import KeyStore
from tests.conftest import fast_settings
from tests.federation.conftest import LEASES, TEST_VERIFIER, Peer, World, make_world, serving

pytestmark = pytest.mark.asyncio(loop_scope="module")


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def strict_world(tmp_path_factory: pytest.TempPathFactory,
                       sqlite_template: Path) -> AsyncIterator[World]:
    root = tmp_path_factory.mktemp("strict")
    partner, stranger = (Peer(name, KeyStore(root / name)) for name in ("b", "c"))
    for peer in (partner, stranger):
        assert peer.keys is not None
        peer.keys.generate(time.time())
    public = Peer("websub")
    data = tmp_path_factory.mktemp("hub")
    url = f"sqlite+aiosqlite:///{data / 'hub.db'}"
    shutil.copy(sqlite_template, data / "hub.db")
    # Plain http stays allowed, so each refusal below is the address's, not the scheme's.
    settings = fast_settings(data, url, allow_private_callbacks=False,
                             allow_http_callbacks=True, **LEASES)
    KeyStore(settings.data_dir / "keys").generate(time.time())
    app = create_app(settings, database=Database(settings.effective_database_url),
                     verifier_config=TEST_VERIFIER)
    async with serving([partner, stranger, public]), app.test_app():
        yield await make_world(app, settings.base_url, partner, stranger, public)


@pytest.mark.parametrize("host", ["127.0.0.1", "[::1]", "localhost", "10.1.2.3",
                                  "169.254.169.254", "[::ffff:127.0.0.1]"])
async def test_private_callbacks_are_refused_and_never_called(strict_world: World,
                                                              host: str) -> None:
    world = strict_world
    item = await world.item(title="public")
    port = world.public.port
    callback = f"http://{host}:{port}/callback/ssrf?token=t1"
    await world.subscribe(world.topic(item), callback)
    await world.idle()
    # Nothing reached the listening subscriber: not the verification, not a denial.
    assert not [s for s in world.public.seen if s.path == "/callback/ssrf"]
    (sub,) = await world.subscriptions(callback)
    assert sub["state"] == "denied"
    assert "allow_private_callbacks" in sub["last_error"], sub["last_error"]
    # No pings either, whatever changes.
    r = await world.admin.patch(f"/api/items/{item}/fields/title", json={"value": "new"})
    assert r.status_code == 200
    await world.idle()
    assert not [s for s in world.public.seen if s.path == "/callback/ssrf"]
