"""A client that hangs up after sending a save: the save still happens, and the server
goes on answering. Before, the disconnect cancelled the handler inside its database
transaction; the save was lost, and under load (wrk ending its runs) a real server
stopped answering saves altogether, its SQLite connection half torn down
(instance/completion.py)."""

from __future__ import annotations

import asyncio
import json
import socket
import sqlite3
import struct
import time
from pathlib import Path
from urllib.parse import urlsplit

from tests.harness import Client, RunningInstance, eventually


def _send_and_hang_up(base_url: str, token: str, item: int, value: str) -> None:
    url = urlsplit(base_url)
    body = json.dumps({"value": value}).encode()
    head = (f"PATCH /api/items/{item}/fields/title HTTP/1.1\r\nHost: {url.netloc}\r\n"
            f"Authorization: Bearer {token}\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\n\r\n").encode()
    with socket.create_connection((url.hostname, url.port), timeout=5) as s:
        s.sendall(head + body)
        time.sleep(0.3)  # the server has read the request (a reset would drop it unread)
        # Then a reset, not a polite close: the server hears at once that nobody waits.
        s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))


async def test_a_save_whose_client_hung_up_still_happens(tmp_path: Path) -> None:
    inst = RunningInstance.create(tmp_path, "a")
    inst.start()
    admin = await Client.login(inst)
    try:
        await admin.create_tracker("t")
        await admin.add_field("t", "title")
        item = await admin.create_item("t", title="first")
        r = await admin.http.post("/api/tokens", json={"name": "hangups"})
        token = r.json()["token"]
        # Another writer holds SQLite's write lock: the saves wait for it, inside their
        # requests, while their clients hang up.
        blocker = sqlite3.connect(inst.data_dir / "fieldcast.db", timeout=5,
                                  isolation_level=None)
        blocker.execute("BEGIN IMMEDIATE")
        try:
            for n in range(5):
                await asyncio.to_thread(_send_and_hang_up, inst.base_url, token, item,
                                        f"sent {n}")
            await asyncio.sleep(1.0)  # the server has seen every disconnect
        finally:
            blocker.execute("ROLLBACK")
            blocker.close()

        async def all_saved() -> bool:
            rows = await admin.changes(item=item)
            got = [c["value"] for c in rows if c.get("field") == "title"]
            assert sorted(got) == sorted(expected), got
            return True

        # Every save that was sent is in the log, in the order sent (one connection
        # after another), and the server still takes saves.
        expected = ["first"] + [f"sent {n}" for n in range(5)]
        await eventually(all_saved, within=20)
        edited = await asyncio.wait_for(admin.edit(item, "title", "after"), 15)
        assert edited["value"] == "after"
        assert "Traceback" not in inst.log_path.read_text()
    finally:
        await admin.aclose()
        inst.stop()
