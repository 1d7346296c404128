"""Partner peers that capture thin pings, and helpers to drive a real `fieldcast serve` host.

Used by the tests that kill, restart or multiply the host process
(``test_durability.py``): everything crosses real loopback HTTP, nothing reaches into
the host but its database, read after the fact.
"""

from __future__ import annotations

import asyncio
import json
import os
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlencode

import httpx
from quart import Quart, request

from tests.federation.conftest import FORM, Peer

#: The host's settings these tests need: callbacks on 127.0.0.1 over plain http.
CALLBACK_ENV = {"FIELDCAST_ALLOW_PRIVATE_CALLBACKS": "true",
                "FIELDCAST_ALLOW_HTTP_CALLBACKS": "true"}


@dataclass(frozen=True)
class Ping:
    """One notification POST as the callback received it."""

    path: str
    item: int
    event: int
    version: int
    fields: tuple[str, ...]
    at: float  # time.monotonic() on arrival
    client_port: int  # the sender's end of the connection (see ``socket_owners``)


@dataclass
class CapturePeer(Peer):
    """A partner (keys published at its origin) whose callbacks record every thin ping.

    ``delay`` holds each answer, so that deliveries stay in flight long enough to be
    interrupted; ``max_active`` records, per callback path, the most POSTs it was
    answering at the same moment (the in-flight rule says one per topic and callback).
    """

    delay: float = 0.0
    pings: list[Ping] = field(default_factory=list)
    active: Counter[tuple[str, int]] = field(default_factory=Counter)
    max_active: Counter[tuple[str, int]] = field(default_factory=Counter)

    def app(self) -> Quart:
        app = super().app()
        get_view = app.view_functions["callback"]

        async def callback(name: str) -> Any:
            if request.method != "POST":
                return await get_view(name)  # type: ignore[misc]
            doc = json.loads(await request.get_data())
            client = request.scope.get("client") or ("", 0)
            key = (request.path, int(doc["item"]))
            self.active[key] += 1
            self.max_active[key] = max(self.max_active[key], self.active[key])
            try:
                if self.delay:
                    await asyncio.sleep(self.delay)
                self.pings.append(Ping(request.path, int(doc["item"]), int(doc["event"]),
                                       int(doc["version"]), tuple(doc["fields"]),
                                       time.monotonic(), int(client[1])))
            finally:
                self.active[key] -= 1
            return "", 202

        app.view_functions["callback"] = callback
        return app


def path_of(callback: str) -> str:
    return "/" + callback.split("/", 3)[3].split("?")[0]


async def subscribe(http: httpx.AsyncClient, base: str, item: int, callback: str,
                    signer: Peer) -> None:
    """A signed subscribe through the host's real hub endpoint."""
    hub = f"{base}/federation/hub"
    body = urlencode({"hub.mode": "subscribe", "hub.topic": f"{base}/federation/items/{item}",
                      "hub.callback": callback}).encode()
    headers = signer.sign("POST", hub, {"Content-Type": FORM}, body)
    r = await http.post(hub, content=body, headers=headers)
    assert r.status_code == 202, r.text


async def wait_active(admin: httpx.AsyncClient, callbacks: set[str], within: float = 30.0
                      ) -> list[dict[str, Any]]:
    """Until every (topic, callback) of ``callbacks`` is verified; their subscriptions."""
    deadline = time.monotonic() + within
    while True:
        subs = (await admin.get("/api/federation/subscriptions")).json()["subscriptions"]
        mine = [s for s in subs if s["callback"] in callbacks]
        if mine and all(s["state"] == "active" for s in mine):
            return mine
        if time.monotonic() > deadline:
            states = Counter(s["state"] for s in mine)
            raise AssertionError(f"subscriptions not all active after {within} s: {states}")
        await asyncio.sleep(0.1)


async def change_log(admin: httpx.AsyncClient) -> list[dict[str, Any]]:
    """The host's whole change log, through ``GET /api/changes`` (bounded pages)."""
    out: list[dict[str, Any]] = []
    since = 0
    for _ in range(1000):
        page = (await admin.get("/api/changes", params={"since": since, "limit": 1000})).json()
        out += page["changes"]
        since = page["next"]
        if not page["more"]:
            return out
    raise AssertionError("the change log did not end within 1000 pages")


def newest(changes: list[dict[str, Any]]) -> dict[int, tuple[int, int]]:
    """item -> (newest event, newest item version) of its value changes."""
    out: dict[int, tuple[int, int]] = {}
    for c in changes:
        if c.get("field") is None or c["item"] is None:
            continue
        e, v = out.get(c["item"], (0, 0))
        out[c["item"]] = (max(e, c["event"]), max(v, c["item_version"]))
    return out


def last_pings(pings: list[Ping]) -> dict[tuple[str, int], Ping]:
    """(callback path, item) -> the ping that arrived last."""
    out: dict[tuple[str, int], Ping] = {}
    for p in sorted(pings, key=lambda p: p.at):
        out[(p.path, p.item)] = p
    return out


def socket_owners(pgid: int, ports: set[int]) -> dict[int, int]:
    """local TCP port -> pid, for the still-open sockets of process group ``pgid`` (the
    host and its Hypercorn workers) whose local port is in ``ports``; from /proc, Linux
    only. A delivery worker keeps its connections alive (30 s), so right after a run
    this tells which process sent a ping."""
    inodes: dict[str, int] = {}
    for pid in (int(d) for d in os.listdir("/proc") if d.isdigit()):
        try:
            with open(f"/proc/{pid}/stat") as f:
                if int(f.read().rsplit(")", 1)[1].split()[2]) != pgid:
                    continue
            for fd in os.listdir(f"/proc/{pid}/fd"):
                link = os.readlink(f"/proc/{pid}/fd/{fd}")
                if link.startswith("socket:["):
                    inodes[link[8:-1]] = pid
        except OSError:
            continue  # gone meanwhile
    out: dict[int, int] = {}
    with open("/proc/net/tcp") as f:
        for line in f.readlines()[1:]:
            cols = line.split()
            port = int(cols[1].split(":")[1], 16)
            if port in ports and cols[9] in inodes:
                out[port] = inodes[cols[9]]
    return out
