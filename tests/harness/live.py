"""A ``/live`` socket client (hub/LIVE.md) that keeps every frame it received, so a test
can both wait for an update and check afterwards what it was ever sent."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from typing import Any

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed


class LiveSocket:
    def __init__(self, ws: ClientConnection) -> None:
        self.ws = ws
        #: Every frame, as received (text), in order.
        self.raw: list[str] = []
        self.frames: list[dict[str, Any]] = []
        self._arrived = asyncio.Condition()
        self._reader = asyncio.create_task(self._read())

    @classmethod
    async def open(cls, base_url: str, session_cookie: str | None) -> LiveSocket:
        headers = {"Cookie": f"fieldcast_session={session_cookie}"} if session_cookie else {}
        ws = await connect(base_url.replace("http", "ws", 1) + "/live",
                           additional_headers=headers)
        socket = cls(ws)
        await socket.wait_frame(lambda f: f["type"] == "hello")
        return socket

    async def _read(self) -> None:
        with contextlib.suppress(ConnectionClosed):
            async for message in self.ws:
                text = message if isinstance(message, str) else message.decode()
                frame = json.loads(text)
                if frame.get("type") == "ping":
                    await self.ws.send(json.dumps({"type": "pong"}))
                async with self._arrived:
                    self.raw.append(text)
                    self.frames.append(frame)
                    self._arrived.notify_all()

    async def subscribe(self, items: list[int]) -> dict[str, Any]:
        seen = len(self.frames)
        await self.ws.send(json.dumps({"type": "subscribe", "items": items}))
        return await self.wait_frame(lambda f: f["type"] == "subscribed", after=seen)

    async def wait_frame(self, match: Any, within: float = 10.0, after: int = 0
                         ) -> dict[str, Any]:
        deadline = time.monotonic() + within
        async with self._arrived:
            while True:
                for frame in self.frames[after:]:
                    if match(frame):
                        return frame
                left = deadline - time.monotonic()
                if left <= 0 or self._reader.done():
                    raise AssertionError(f"no such frame within {within:g} s; got "
                                         f"{self.frames}")
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._arrived.wait(), left)

    def updates(self) -> list[dict[str, Any]]:
        return [u for f in self.frames if f["type"] == "updates" for u in f["updates"]]

    async def wait_update(self, item: int, field: str, value: Any, within: float = 10.0
                          ) -> dict[str, Any]:
        def match(frame: dict[str, Any]) -> bool:
            return frame["type"] == "updates" and any(
                (u["item"], u["field"], u.get("value")) == (item, field, value)
                for u in frame["updates"])
        return await self.wait_frame(match, within)

    async def close(self) -> None:
        await self.ws.close()
        self._reader.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._reader
