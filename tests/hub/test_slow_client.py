"""A client that never reads is dropped at the TCP level, against a real Hypercorn.

Its close frame cannot reach it (the socket's buffers are full), and Hypercorn's
``transport.close()`` waits for unsent bytes forever: before the endpoint aborted the
transport, such a socket stayed ESTABLISHED, with its frames in the server's memory, long
after the send time-out had closed it in the hub.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import socket

from hypercorn.asyncio import serve
from hypercorn.config import Config

from hub.hub import HubConfig
from instance.app import create_app
from instance.config import Settings
from instance.db import Database
from tests.conftest import Env
from tests.harness import free_port

TCP_ESTABLISHED = 1


def _tcp_state(sock: socket.socket) -> int:
    # struct tcp_info starts with tcpi_state (Linux).
    return sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 8)[0]


def _client_frame(text: str) -> bytes:
    payload, mask = text.encode(), os.urandom(4)
    masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
    assert len(payload) < 126
    return bytes([0x81, 0x80 | len(payload)]) + mask + masked


def _open_socket_that_never_reads(port: int) -> socket.socket:
    sock = socket.socket()
    # A small receive window fills at once; the server's buffers fill behind it.
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.connect(("127.0.0.1", port))
    key = base64.b64encode(os.urandom(16)).decode()
    sock.sendall((f"GET /live HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\n"
                  f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
                  "Sec-WebSocket-Version: 13\r\n\r\n").encode())
    answer = b""
    while b"\r\n\r\n" not in answer:
        answer += sock.recv(1)
    assert answer.startswith(b"HTTP/1.1 101"), answer
    return sock


async def test_a_socket_that_never_reads_is_dropped(settings: Settings) -> None:
    hub_config = HubConfig(send_timeout=0.5, close_grace=0.5, heartbeat=60,
                           queued_budget=64 * 2**20)
    app = create_app(settings, database=Database(settings.effective_database_url),
                     hub_config=hub_config)
    port = free_port()
    config = Config()
    config.bind = [f"127.0.0.1:{port}"]
    config.accesslog = None
    stop = asyncio.Event()
    server = asyncio.create_task(serve(app, config, shutdown_trigger=stop.wait))  # type: ignore[arg-type]
    try:
        for _ in range(100):
            if app.extensions["fieldcast.live"].hub is not None:
                break
            await asyncio.sleep(0.05)
        env = Env(app)
        await env.user("admin", admin=True)
        admin = await env.client("admin")
        assert (await admin.post("/api/trackers", json={"slug": "bugs"})).status_code == 201
        r = await admin.post("/api/trackers/bugs/fields", json={
            "name": "notes", "type": "textarea", "read_groups": ["Anonymous"]})
        assert r.status_code == 201, await r.get_json()
        item = (await (await admin.post("/api/trackers/bugs/items",
                                        json={"fields": {}})).get_json())["id"]
        sock = await asyncio.to_thread(_open_socket_that_never_reads, port)
        try:
            sock.sendall(_client_frame(json.dumps({"type": "subscribe", "items": [item]})))
            await asyncio.sleep(0.3)
            for n in range(30):
                r = await admin.patch(f"/api/items/{item}/fields/notes",
                                      json={"value": f"{n} " + "x" * 150_000})
                assert r.status_code == 200
            for _ in range(100):  # the send time-out, then the close grace
                if _tcp_state(sock) != TCP_ESTABLISHED:
                    break
                await asyncio.sleep(0.1)
            assert _tcp_state(sock) != TCP_ESTABLISHED, "the server kept the connection"
            hub = app.extensions["fieldcast.live"].hub
            assert not hub.connections
        finally:
            sock.close()
    finally:
        stop.set()
        await asyncio.wait_for(server, 10)
