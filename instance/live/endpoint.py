"""``/live``: the WebSocket endpoint browsers (and scripts) open. Protocol: hub/LIVE.md."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from typing import Any

from quart import Blueprint, current_app, websocket

from hub.backend import Viewer
from hub.connection import CLOSE_BAD_MESSAGES, CLOSE_FORBIDDEN_ORIGIN, Connection
from hub.hub import Hub
from instance.errors import ApiError
from instance.live.service import LIVE_KEY, LiveService
from instance.security import SESSION_COOKIE
from instance.web import db, identify, same_origin

bp = Blueprint("live", __name__)

MAX_BAD_MESSAGES = 10
log = logging.getLogger("fieldcast.live")
ASGI_SEND_KEY = "fieldcast.asgi_send"


class KeepAsgiSend:
    """ASGI middleware: keeps the server's own ``send`` in a websocket's scope.

    Live frames go straight to it. Quart's ``websocket.send`` adds, per frame, an accept
    check, a wrapper and a ``websocket_sent`` signal that nothing here listens to; at a
    thousand sockets that is a sixth of the server's time (bench/fanout.py's profile of
    the bare Quart baseline).
    """

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "websocket":
            scope = {**scope, ASGI_SEND_KEY: send}
        await self.app(scope, receive, send)


def _raw_sender(send: Any) -> Any:
    async def send_text(frame: str) -> None:
        await send({"type": "websocket.send", "bytes": None, "text": frame})

    return send_text


async def _viewer() -> Viewer | None:
    """Who opens this socket; None when the credential offered is no good."""
    async with db().read() as session:
        try:
            who = await identify(session, websocket.headers.get("Authorization", ""),
                                 websocket.cookies.get(SESSION_COOKIE))
        except ApiError:
            return None
    if who.user is None:
        return Viewer(None, None, None, None)
    return Viewer(who.user.id, who.user.username, who.credential, who.expires_at)


def _parse_subscribe(msg: dict[str, Any]) -> tuple[list[int], tuple[str, int] | None]:
    items = msg.get("items")
    if (not isinstance(items, list) or not items
            or not all(isinstance(i, int) and not isinstance(i, bool) and i > 0 for i in items)):
        raise ValueError("items must be a non-empty list of item ids")
    position = msg.get("position")
    if position is None:
        return items, None
    if (not isinstance(position, dict) or not isinstance(position.get("epoch"), str)
            or not isinstance(position.get("offset"), int)
            or isinstance(position.get("offset"), bool)):
        raise ValueError('position must be {"epoch": string, "offset": integer}')
    return items, (position["epoch"], position["offset"])


async def _read_messages(hub: Hub, conn: Connection) -> None:
    bad = 0
    while True:
        data = await websocket.receive()
        conn.last_received = time.monotonic()
        try:
            msg = json.loads(data)
            if not isinstance(msg, dict):
                raise ValueError("a message is a JSON object with a type")
            kind = msg.get("type")
            if kind == "subscribe":
                items, position = _parse_subscribe(msg)
                conn.push_control(await hub.subscribe(conn, items, position))
            elif kind == "unsubscribe":
                leaving = msg.get("items")
                if not isinstance(leaving, list) or not all(isinstance(i, int) for i in leaving):
                    raise ValueError("items must be a list of item ids")
                hub.unsubscribe(conn, leaving)
            elif kind != "pong":
                raise ValueError(f"unknown message type {kind!r}; expected subscribe, "
                                 "unsubscribe or pong")
        except (ValueError, TypeError) as exc:
            bad += 1
            if bad > MAX_BAD_MESSAGES:
                conn.close(CLOSE_BAD_MESSAGES, "too many malformed messages")
                return
            conn.push_control({"type": "error", "detail": str(exc)})
        except asyncio.CancelledError:
            raise
        except Exception:
            # The database may be restarting: the socket stays, the client may retry.
            log.exception("handling a /live message failed")
            conn.push_control({"type": "error", "retry": True,
                               "detail": "the server could not do that just now; try again"})


@bp.websocket("/live")
async def live() -> None:
    service: LiveService = current_app.extensions[LIVE_KEY]
    hub = service.hub
    assert hub is not None, "the hub starts before the app serves"
    viewer = await _viewer()
    await websocket.accept()
    ws = websocket._get_current_object()  # type: ignore[attr-defined]
    if viewer is None:
        await ws.close(4401, "unknown, revoked or expired credential")
        return
    if (viewer.credential and viewer.credential[0] == "session"
            and not same_origin(websocket.headers.get("Origin"),
                                websocket.headers.get("Host", ""))):
        await ws.close(CLOSE_FORBIDDEN_ORIGIN, "cross-site connections may not use the cookie")
        return
    raw = websocket.scope.get(ASGI_SEND_KEY)
    conn = hub.connect(viewer, ws.send if raw is None else _raw_sender(raw))
    try:
        conn.push_control({"type": "hello", "user": viewer.username,
                           "epoch": hub.backend.epoch, "offset": hub.cursor,
                           "heartbeat": hub.config.heartbeat})
        reader = asyncio.create_task(_read_messages(hub, conn))
        try:
            waiting: set[asyncio.Future[Any]] = {reader, conn.closed}
            await asyncio.wait(waiting, return_when=asyncio.FIRST_COMPLETED)
        finally:
            # Also when the client went away and Quart cancelled this handler.
            reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await reader
        if conn.closed.done():
            code, reason = conn.closed.result()
            # A client too slow to read will not read the close frame quickly either.
            with contextlib.suppress(TimeoutError, Exception):
                await asyncio.wait_for(ws.close(code, reason), 2)
    finally:
        hub.disconnect(conn)

