"""permessage-deflate on /live follows the live_deflate setting, against a real server:
off by default although every browser (and this client) offers it, on when asked. One
worker is served by `fieldcast serve` itself, several by Hypercorn's workers importing
instance.asgi; both paths are checked."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from websockets.asyncio.client import connect

from tests.harness import RunningInstance


@pytest.mark.parametrize("workers", [1, 2])
@pytest.mark.parametrize("setting", [None, "false", "true"])
async def test_deflate_follows_the_setting(tmp_path: Path, database_url: str, workers: int,
                                           setting: str | None) -> None:
    if workers > 1 and database_url.startswith("sqlite"):
        pytest.skip("several workers need PostgreSQL")
    env = {} if setting is None else {"FIELDCAST_LIVE_DEFLATE": setting}
    server = RunningInstance.create(
        tmp_path, "deflate", extra_env=env, workers=workers,
        database_url=None if database_url.startswith("sqlite") else database_url)
    server.start()
    try:
        admin = await server.client()
        (await admin.post("/api/trackers", json={"slug": "bugs"})).raise_for_status()
        (await admin.post("/api/trackers/bugs/fields", json={"name": "title"})
         ).raise_for_status()
        item = (await admin.post("/api/trackers/bugs/items", json={"fields": {}})
                ).json()["id"]
        cookie = admin.cookies["fieldcast_session"]
        async with connect(server.base_url.replace("http", "ws", 1) + "/live",
                           additional_headers={"Cookie": f"fieldcast_session={cookie}"},
                           compression="deflate") as ws:
            assert ws.request is not None and ws.response is not None
            assert "permessage-deflate" in ws.request.headers["Sec-WebSocket-Extensions"]
            answered = ws.response.headers.get("Sec-WebSocket-Extensions")
            if setting == "true":
                assert answered is not None and "permessage-deflate" in answered
            else:
                assert answered is None
            # Frames flow either way.
            assert json.loads(await ws.recv())["type"] == "hello"
            await ws.send(json.dumps({"type": "subscribe", "items": [item]}))
            assert json.loads(await ws.recv())["type"] == "subscribed"
            (await admin.patch(f"/api/items/{item}/fields/title", json={"value": "x" * 300})
             ).raise_for_status()
            frame = json.loads(await ws.recv())
            assert frame["updates"][0]["value"] == "x" * 300
        await admin.aclose()
    finally:
        server.stop()
