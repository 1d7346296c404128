"""A typed client of one running instance: the calls the scenarios make, each checking
its status, each returning plain JSON values."""

from __future__ import annotations

import json
from typing import Any

import httpx

from tests.harness.live import LiveSocket
from tests.harness.process import ADMIN_PASSWORD, RunningInstance

Json = dict[str, Any]


def _ok(r: httpx.Response, *statuses: int) -> httpx.Response:
    if r.status_code not in (statuses or (200,)):
        raise AssertionError(f"{r.request.method} {r.request.url} answered {r.status_code}: "
                             f"{r.text}")
    return r


class Client:
    def __init__(self, instance: RunningInstance, http: httpx.AsyncClient) -> None:
        self.instance = instance
        self.http = http

    @classmethod
    async def login(cls, instance: RunningInstance, username: str = "admin",
                    password: str = ADMIN_PASSWORD) -> Client:
        http = httpx.AsyncClient(base_url=instance.base_url, timeout=30)
        _ok(await http.post("/api/login", json={"username": username, "password": password}))
        return cls(instance, http)

    async def aclose(self) -> None:
        await self.http.aclose()

    @property
    def base(self) -> str:
        return self.instance.base_url

    # ---- trackers, fields, items ---------------------------------------------------------

    async def create_tracker(self, slug: str) -> Json:
        return dict(_ok(await self.http.post("/api/trackers", json={"slug": slug}), 201).json())

    async def add_field(self, tracker: str, name: str, *, type: str = "text",
                        **extra: Any) -> Json:
        body = {"name": name, "label": name, "type": type, **extra}
        r = await self.http.post(f"/api/trackers/{tracker}/fields", json=body)
        return dict(_ok(r, 201).json())

    async def add_remote_field(self, tracker: str, name: str, source: RunningInstance,
                               source_tracker: str, source_field: str) -> Json:
        return await self.add_field(tracker, name, type="remote", options={"source": {
            "instance": source.base_url, "tracker": source_tracker, "field": source_field}})

    async def export(self, tracker: str, field_name: str, mode: str,
                     partners: list[str] | None = None) -> Json:
        r = await self.http.patch(f"/api/trackers/{tracker}/fields/{field_name}",
                                  json={"export": {"mode": mode, "partners": partners or []}})
        return dict(_ok(r).json())

    async def create_item(self, tracker: str, **values: Any) -> int:
        r = await self.http.post(f"/api/trackers/{tracker}/items", json={"fields": values})
        return int(_ok(r, 201).json()["id"])

    async def edit(self, item: int, field_name: str, value: Any) -> Json:
        r = await self.http.patch(f"/api/items/{item}/fields/{field_name}", json={"value": value})
        return dict(_ok(r).json())

    async def item(self, item: int) -> Json:
        return dict(_ok(await self.http.get(f"/api/items/{item}")).json())

    async def fields(self, item: int) -> dict[str, Json]:
        return dict((await self.item(item))["fields"])

    async def value(self, item: int, field_name: str) -> Any:
        return (await self.fields(item))[field_name].get("value")

    async def changes(self, since: int = 0, *, item: int | None = None) -> list[Json]:
        params: dict[str, Any] = {"since": since, "limit": 1000}
        if item is not None:
            params["item"] = item
        return list(_ok(await self.http.get("/api/changes", params=params)).json()["changes"])

    # ---- federation ----------------------------------------------------------------------

    def topic(self, item: int) -> str:
        return f"{self.base}/federation/items/{item}"

    async def link(self, item: int, url: str) -> Json:
        return dict(_ok(await self.http.put(f"/api/items/{item}/link", json={"url": url})).json())

    async def unlink(self, item: int) -> None:
        _ok(await self.http.delete(f"/api/items/{item}/link"), 204)

    async def outgoing(self, topic: str | None = None) -> list[Json]:
        """What this instance follows (the subscriber side's subscriptions)."""
        subs = _ok(await self.http.get("/api/federation/outgoing")).json()["subscriptions"]
        return [s for s in subs if topic is None or s["topic"] == topic]

    async def subscriptions(self, topic: str | None = None) -> list[Json]:
        """The hub side: subscriptions to this instance's topics."""
        subs = _ok(await self.http.get("/api/federation/subscriptions")).json()["subscriptions"]
        return [s for s in subs if topic is None or s["topic"] == topic]

    async def deliveries(self) -> list[Json]:
        """The hub's delivery rows (``fieldcast federation deliveries --json``)."""
        out = self.instance.cli("federation", "deliveries", "--json", "--limit", "1000")
        assert out.returncode == 0, out.stderr
        return list(json.loads(out.stdout)["deliveries"])

    async def well_known(self) -> Json:
        return dict(_ok(await self.http.get("/.well-known/fieldcast")).json())

    # ---- live ------------------------------------------------------------------------------

    async def live(self, items: list[int]) -> LiveSocket:
        """A ``/live`` socket with this client's session, subscribed to ``items``."""
        cookie = self.http.cookies.get("fieldcast_session")
        socket = await LiveSocket.open(self.base, cookie)
        await socket.subscribe(items)
        return socket
