"""``/live``: the WebSocket endpoint browsers (and scripts) open. Protocol: hub/LIVE.md."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import socket
import struct
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


def transport_of(send: Any) -> asyncio.Transport | None:
    """The TCP transport under a Hypercorn HTTP/1.1 websocket, from its ASGI ``send``.

    ASGI has no way to drop a connection: a close frame is queued behind every unsent
    byte, and Hypercorn's ``transport.close()`` waits for them to be flushed. A client
    that never reads therefore kept its socket, and the frames on it, for good. Hypercorn
    (0.17, 0.18) hands the app ``WSStream.app_send``; the stream sends through its
    ``H11Protocol``, which sends through the ``TCPServer`` that owns the writer. Only for
    HTTP/1.1: over HTTP/2 the TCP connection carries other streams too. Anything else
    (another server, the test client) answers None, and closing stays the ASGI close.
    tests/hub/test_slow_client.py proves this against a real server.
    """
    from hypercorn.protocol.h11 import H11Protocol
    from hypercorn.protocol.ws_stream import WSStream

    stream = getattr(send, "__self__", None)
    if not isinstance(stream, WSStream):
        return None
    protocol = getattr(stream.send, "__self__", None)
    if not isinstance(protocol, H11Protocol):
        return None
    server = getattr(protocol.send, "__self__", None)
    transport = getattr(getattr(server, "writer", None), "transport", None)
    return transport if isinstance(transport, asyncio.Transport) else None


async def _close(ws: Any, code: int, reason: str, transport: asyncio.Transport | None,
                 grace: float) -> None:
    """Send the close frame; drop the TCP connection when that cannot be done in time.

    A client too slow to read will not read the close frame either. With no write-buffer
    high-water mark, Hypercorn's send of the close frame returns only once every byte has
    left the process; if that takes longer than ``grace``, the transport is aborted, so
    that the socket, its buffers and the task serving it go at once.
    """
    if transport is not None:
        transport.set_write_buffer_limits(high=0)
    try:
        await asyncio.wait_for(ws.close(code, reason), grace)
        return
    except Exception as exc:  # a time-out, or a connection already gone
        failure = exc
    if transport is not None:
        log.info("a /live socket closed with %d did not take its close frame within %ss "
                 "(%r): dropping the connection", code, grace, failure)
        sock = transport.get_extra_info("socket")
        if sock is not None:
            # Linger 0: the kernel resets the connection and discards what is unsent,
            # instead of holding it (orphaned, still established for the peer) for
            # minutes of retransmissions.
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        transport.abort()


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


# Ids and offsets are the database's signed 64-bit integers: a larger one overflowed in
# the driver, which read as the server's failure (a retryable error and a traceback).
MAX_ID = 2**63 - 1


def _is_id(value: Any, minimum: int) -> bool:
    return (isinstance(value, int) and not isinstance(value, bool)
            and minimum <= value <= MAX_ID)


def _item_ids(value: Any, *, empty_ok: bool) -> list[int]:
    if (not isinstance(value, list) or (not value and not empty_ok)
            or not all(_is_id(i, 1) for i in value)):
        raise ValueError(f"items must be a {'' if empty_ok else 'non-empty '}list of item "
                         f"ids (whole numbers from 1 to {MAX_ID})")
    return value


def _parse_message(data: str | bytes) -> dict[str, Any]:
    """A client's message, or ValueError saying what is wrong with it (the client's)."""
    try:
        msg = json.loads(data)
    except RecursionError:
        raise ValueError("the message is nested too deeply") from None
    except ValueError as exc:
        raise ValueError(f"a message is a JSON object with a type ({exc})") from None
    if not isinstance(msg, dict):
        raise ValueError("a message is a JSON object with a type")
    return msg


def _parse_subscribe(msg: dict[str, Any]
                     ) -> tuple[list[int], tuple[str, int] | None, list[int]]:
    """Items, their position, and trackers: a subscribe names items, trackers or both."""
    trackers = _tracker_ids(msg.get("trackers", []))
    items = _item_ids(msg.get("items", []), empty_ok=True)
    if not items and not trackers:
        raise ValueError("a subscribe names items (a non-empty list of item ids), trackers "
                         "(a non-empty list of tracker ids), or both")
    position = msg.get("position")
    if position is None:
        return items, None, trackers
    if (not isinstance(position, dict) or not isinstance(position.get("epoch"), str)
            or not _is_id(position.get("offset"), 0)):
        raise ValueError('position must be {"epoch": string, "offset": integer from 0 to '
                         f'{MAX_ID}}}')
    return items, (position["epoch"], position["offset"]), trackers


def _tracker_ids(value: Any) -> list[int]:
    if not isinstance(value, list) or not all(_is_id(i, 1) for i in value):
        raise ValueError(f"trackers must be a list of tracker ids (whole numbers from 1 to "
                         f"{MAX_ID})")
    return value


async def _subscribe(hub: Hub, conn: Connection, msg: dict[str, Any]) -> dict[str, Any]:
    items, position, trackers = _parse_subscribe(msg)
    if items:
        answer = await hub.subscribe(conn, items, position)
    else:
        answer = {"type": "subscribed", "items": [], "recovered": None,
                  "epoch": hub.backend.epoch, "offset": hub.cursor, "fields": []}
    if trackers:
        answer["trackers"] = trackers
        answer["trackers_fields"] = await hub.subscribe_trackers(conn, trackers)
    return answer


async def _read_messages(hub: Hub, conn: Connection) -> None:
    bad = 0
    while True:
        data = await websocket.receive()
        conn.last_received = time.monotonic()
        try:
            msg = _parse_message(data)
            kind = msg.get("type")
            if kind == "subscribe":
                conn.push_control(await _subscribe(hub, conn, msg))
            elif kind == "unsubscribe":
                hub.unsubscribe(conn, _item_ids(msg.get("items", []), empty_ok=True))
                hub.unsubscribe_trackers(conn, _tracker_ids(msg.get("trackers", [])))
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
            await _close(ws, code, reason, None if raw is None else transport_of(raw),
                         hub.config.close_grace)
    finally:
        hub.disconnect(conn)

