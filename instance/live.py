"""The live side of the instance: the hub's view of the database, and `/live`.

The hub (hub/) knows nothing of the database; ``DatabaseBackend`` answers its questions
from the change log and the rights tables. See hub/LIVE.md for the wire protocol.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import Iterable
from typing import Any
from urllib.parse import urlsplit

from quart import Blueprint, current_app, websocket
from sqlalchemy import bindparam, select

from hub.backend import FieldRights, LogRecord, Viewer
from hub.broker import InProcessBroker, PostgresBroker, RedisBroker
from hub.connection import CLOSE_BAD_MESSAGES, CLOSE_FORBIDDEN_ORIGIN, Connection
from hub.hub import Broker, Hub, HubConfig
from instance import accounts
from instance.accounts import as_utc, iso, now
from instance.config import Settings
from instance.db import Database, run
from instance.items import log_epoch, log_head
from instance.models import ApiToken, ChangeLog, Item, Session, User
from instance.rights import load_fields, principal_for
from instance.security import SESSION_COOKIE, TOKEN_PREFIX, digest

bp = Blueprint("live", __name__)

MAX_BAD_MESSAGES = 10
log = logging.getLogger("fieldcast.live")
LIVE_KEY = "fieldcast.live"
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


_log, _users = ChangeLog.__table__, User.__table__
# The hub's reads of the log, prebuilt and as columns (no ORM objects): the first runs
# after every commit.
_LOG_ROWS = (
    select(_log.c.id, _log.c.kind, _log.c.item_id, _log.c.tracker_id, _log.c.field_name,
           _log.c.new_value, _log.c.new_version, _log.c.at, _log.c.subject_id,
           _users.c.username)
    .outerjoin(_users, _users.c.id == _log.c.actor_id)
    .where(_log.c.id > bindparam("after")).order_by(_log.c.id).limit(bindparam("limit"))
)
_REPLAY_ROWS = _LOG_ROWS.where(
    _log.c.id <= bindparam("upto"), _log.c.kind == "value",
    _log.c.item_id.in_(bindparam("items", expanding=True)),
)


def _record(r: Any) -> LogRecord:
    return LogRecord(event=r.id, kind=r.kind, item=r.item_id, tracker=r.tracker_id,
                     field=r.field_name, value=r.new_value, version=r.new_version,
                     by=r.username, at=iso(r.at), subject=r.subject_id)


class DatabaseBackend:
    def __init__(self, db: Database, epoch: str) -> None:
        self.db = db
        self.epoch = epoch

    async def head(self) -> int:
        async with self.db.read() as session:
            return await log_head(session)

    async def read(self, after: int, limit: int) -> list[LogRecord]:
        async with self.db.read() as session:
            rows = (await run(session, _LOG_ROWS, {"after": after, "limit": limit})).all()
        return [_record(r) for r in rows]

    async def replay(self, after: int, upto: int, items: Iterable[int], limit: int
                     ) -> list[LogRecord] | None:
        ids = list(items)
        if not ids:
            return []
        async with self.db.read() as session:
            rows = (await run(session, _REPLAY_ROWS, {"after": after, "upto": upto,
                                                      "items": ids, "limit": limit + 1})).all()
        if len(rows) > limit:
            return None
        return [_record(r) for r in rows]

    async def trackers_of(self, items: Iterable[int]) -> dict[int, int]:
        ids = list(items)
        if not ids:
            return {}
        async with self.db.read() as session:
            rows = await session.execute(
                select(Item.id, Item.tracker_id).where(Item.id.in_(ids))
            )
            return dict(rows.all())  # type: ignore[arg-type]

    async def field_rights(self, user_id: int | None, trackers: Iterable[int]
                           ) -> dict[int, FieldRights]:
        async with self.db.read() as session:
            user = None
            if user_id is not None:
                user = await session.get(User, user_id)
                if user is None or user.disabled:
                    return {}
            who = await principal_for(session, user)
            fields = await load_fields(session, trackers)
        return {t: FieldRights(frozenset(f.name for f in defs if f.readable_by(who)),
                               frozenset(f.name for f in defs if f.editable_by(who)))
                for t, defs in fields.items()}

    async def still_valid(self, viewer: Viewer) -> bool:
        if viewer.credential is None:
            return True
        kind, hashed = viewer.credential
        async with self.db.read() as session:
            if kind == "session":
                row = (await session.execute(
                    select(Session.expires_at, User.disabled)
                    .join(User, User.id == Session.user_id)
                    .where(Session.token_hash == hashed)
                )).first()
                return row is not None and as_utc(row[0]) > now() and not row[1]
            row = (await session.execute(
                select(User.disabled).join(ApiToken, ApiToken.user_id == User.id)
                .where(ApiToken.token_hash == hashed)
            )).first()
            return row is not None and not row[0]


class LiveService:
    """Owns the hub for one process; started and stopped with the app."""

    def __init__(self, settings: Settings, db: Database, config: HubConfig | None = None
                 ) -> None:
        self.settings = settings
        self.db = db
        self.config = config or HubConfig(poll_interval=settings.live_poll_ms / 1000,
                                          frame_duty=settings.live_frame_percent / 100)
        self.hub: Hub | None = None

    async def start(self) -> None:
        async with self.db.read() as session:
            epoch = await log_epoch(session)
        url = self.settings.broker_url
        broker: Broker
        if url.startswith(("redis://", "rediss://")):
            broker = RedisBroker(url, f"fieldcast:{epoch}")
        elif url == "postgresql":
            dsn = self.settings.effective_database_url.replace("+asyncpg", "", 1)
            broker = PostgresBroker(dsn, f"fieldcast_{epoch}")
        else:
            broker = InProcessBroker()
        self.hub = Hub(DatabaseBackend(self.db, epoch), broker, self.config)
        await self.hub.start()
        self.db.after_commit = self.hub.committed

    async def stop(self) -> None:
        self.db.after_commit = None
        if self.hub is not None:
            await self.hub.stop()


async def _viewer() -> Viewer | None:
    """Who opens this socket; None when the credential offered is no good."""
    auth = websocket.headers.get("Authorization", "")
    async with current_app.extensions["fieldcast"].db.read() as session:
        if auth:
            scheme, _, secret = auth.partition(" ")
            secret = secret.strip()
            if scheme.lower() != "bearer" or not secret.startswith(TOKEN_PREFIX):
                return None
            found = await accounts.user_for_token(session, secret)
            if found is None:
                return None
            user = found[0]
            return Viewer(user.id, user.username, ("token", digest(secret)), None)
        cookie = websocket.cookies.get(SESSION_COOKIE)
        if cookie:
            logged_in = await accounts.user_for_session(session, cookie)
            if logged_in is not None:
                user, _, expires_at = logged_in
                return Viewer(user.id, user.username, ("session", digest(cookie)), expires_at)
    return Viewer(None, None, None, None)


def _same_origin(settings: Settings) -> bool:
    origin = websocket.headers.get("Origin")
    if origin is None:
        return True
    own, theirs = urlsplit(settings.base_url), urlsplit(origin)
    return ((theirs.scheme, theirs.netloc) == (own.scheme, own.netloc)
            or theirs.netloc == websocket.headers.get("Host", ""))


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
                items = msg.get("items")
                if not isinstance(items, list) or not all(isinstance(i, int) for i in items):
                    raise ValueError("items must be a list of item ids")
                hub.unsubscribe(conn, items)
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
    state = current_app.extensions["fieldcast"]
    service: LiveService = current_app.extensions[LIVE_KEY]
    hub = service.hub
    assert hub is not None, "the hub starts before the app serves"
    viewer = await _viewer()
    await websocket.accept()
    ws = websocket._get_current_object()  # type: ignore[attr-defined]
    if viewer is None:
        await ws.close(4401, "unknown, revoked or expired credential")
        return
    if viewer.credential and viewer.credential[0] == "session" and not _same_origin(
        state.settings
    ):
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
            await asyncio.wait({reader, conn.closed}, return_when=asyncio.FIRST_COMPLETED)
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

