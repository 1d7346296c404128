"""The app factory: one Quart app per instance, no import-time globals."""

from __future__ import annotations

import gc
import logging
import re
from http import HTTPStatus
from typing import Any

from quart import Quart, g, jsonify, render_template, request
from werkzeug.exceptions import HTTPException

from hub.fetcher import FetcherConfig
from hub.hub import HubConfig
from hub.verifier import VerifierConfig
from instance import completion, openapi, pages, pages_account, pages_admin, routing, wellknown
from instance.api import admin, auth, items, trackers
from instance.changelog import ChangeLog
from instance.config import Settings
from instance.db import Database, current_revision, head_revision
from instance.errors import ApiError
from instance.federation import admin as federation_admin
from instance.federation import feed, hub_endpoint, topics
from instance.federation.service import FEDERATION_KEY, FederationService
from instance.live import endpoint as live
from instance.live.service import LIVE_KEY, LiveService
from instance.remote import api as remote_api
from instance.remote import callback as remote_callback
from instance.remote.service import REMOTE_KEY, RemoteService
from instance.security import Passwords
from instance.throttle import LoginThrottle, ThrottleConfig
from instance.web import STATE_KEY, AppState
from keys.store import KeyStore
from protocol.errors import ProtocolError

log = logging.getLogger("fieldcast")
PAGE_CSP = ("default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
            "connect-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self'; "
            "frame-ancestors 'none'")
_ERROR_STATUSES = frozenset(s.value for s in HTTPStatus if 400 <= s.value < 600)


def _snake(name: str) -> str:
    return re.sub(r"[^a-z0-9]+", "_", name.lower()).strip("_")


def prepare_serving_process(settings: Settings) -> None:
    """For a serving process only (not tests, which build many apps in one process).

    Each save wakes one writer per watching socket: ~1000 short-lived handles in a burst
    over a heap holding every connection. Freezing what startup built and collecting
    generation 0 less often keeps cyclic GC from rescanning it all (bench/fanout.py:
    server CPU per delivered update 87 -> 71 us at 1000 sockets).
    """
    set_websocket_compression(settings.live_deflate)
    gc.freeze()
    gc.set_threshold(50_000, 50, 100)


def set_websocket_compression(enabled: bool) -> None:
    """Whether this process's Hypercorn accepts permessage-deflate when a client offers it.

    Hypercorn (0.17, 0.18) accepts it whenever offered, with no option
    (pgjones/hypercorn#307), and every browser offers it. Its handshake is built from
    ``hypercorn.protocol.ws_stream.Handshake``; a subclass that forgets the offered
    extensions makes the server answer without any. tests/hub/test_deflate.py proves both
    settings against a real server, so a Hypercorn that moves this fails there.
    """
    from hypercorn.protocol import ws_stream

    original = getattr(ws_stream, "_fieldcast_original", ws_stream.Handshake)
    if enabled:
        ws_stream.Handshake = original  # type: ignore[misc]
        return

    class DeclineExtensions(original):  # type: ignore[misc, valid-type]
        def __init__(self, headers: list[tuple[bytes, bytes]], http_version: str) -> None:
            super().__init__(headers, http_version)
            self.extensions = None

    ws_stream._fieldcast_original = original  # type: ignore[attr-defined]
    ws_stream.Handshake = DeclineExtensions  # type: ignore[misc]


async def going_away(app: Quart) -> None:
    """The server has begun to stop: end what would hold up its graceful shutdown, which
    waits for open connections before the app's own shutdown (``after_serving``) runs.
    Every /live socket is closed with 1001 (going away), and new ones are refused."""
    await app.extensions[LIVE_KEY].drain()


def create_app(settings: Settings, *, database: Database | None = None,
               hub_config: HubConfig | None = None,
               verifier_config: VerifierConfig | None = None,
               fetcher_config: FetcherConfig | None = None,
               throttle_config: ThrottleConfig | None = None) -> Quart:
    # No app-level static folder: the pages blueprint serves /static from the package.
    app = Quart("fieldcast", static_folder=None)
    app.asgi_http_class = completion.CompletingHTTPConnection
    # Quart refuses larger bodies with 413 while reading them, before any parsing.
    app.config["MAX_CONTENT_LENGTH"] = settings.max_body_bytes
    # Item fields are sent in the tracker's display order; sorting would lose it. Jinja's
    # tojson filter asks for sorted keys on its own, through its policies.
    app.json.sort_keys = False  # type: ignore[attr-defined]
    app.jinja_env.policies["json.dumps_kwargs"] = {}
    db = database or Database(settings.effective_database_url)
    change_log = ChangeLog(db, group_commit=settings.group_commit)
    app.extensions[STATE_KEY] = AppState(settings=settings, db=db, change_log=change_log,
                                         passwords=Passwords(settings),
                                         login_throttle=LoginThrottle(throttle_config))

    service = LiveService(settings, change_log, hub_config)
    app.extensions[LIVE_KEY] = service
    federation = FederationService(
        settings, db, verifier_config, change_log=change_log,
        keys=lambda: app.extensions[STATE_KEY].current_keys())
    app.extensions[FEDERATION_KEY] = federation
    subscriber = RemoteService(settings, db, change_log, federation,
                               lambda: app.extensions[STATE_KEY].current_keys(), fetcher_config)
    app.extensions[REMOTE_KEY] = subscriber

    # Before any route is added: every <int:…> of every blueprint is bounded.
    app.url_map.converters["int"] = routing.BoundedInt
    app.before_request(routing.check_request_text)
    for blueprint in (auth.bp, admin.bp, trackers.bp, items.bp, live.bp, pages.bp,
                      wellknown.bp, topics.bp, hub_endpoint.bp, federation_admin.bp, feed.bp,
                      pages_admin.bp, pages_account.bp, remote_api.bp, remote_callback.bp):
        app.register_blueprint(blueprint)
    openapi.init_app(app, settings)

    @app.get("/healthz")
    async def healthz() -> dict[str, Any]:
        return {"status": "ok", "instance": settings.instance_name}

    async def error(status: int, body: dict[str, Any],
                    headers: dict[str, str] | None = None) -> Any:
        # Pages get a page; everything else (the API) gets JSON.
        if not request.path.startswith("/api/") and request.accept_mimetypes.accept_html:
            user = g.get("fc_user")
            html = await render_template("error.html", status=status, detail=body["detail"],
                                         user=user, instance=settings.instance_name)
            return html, status, headers or {}
        return jsonify(body), status, headers or {}

    @app.after_request
    async def bodiless(response: Any) -> Any:
        # 204 and 304 have no body, so nothing has a type: Quart labels the empty
        # string text/html like any other.
        if response.status_code in (204, 304):
            response.headers.pop("Content-Type", None)
        elif response.mimetype == "text/html":
            # Pages run only our own script (static/fieldcast.js; templates hold no inline
            # script or on* handler), and no other site may frame them (clickjacking).
            response.headers.setdefault("Content-Security-Policy", PAGE_CSP)
            response.headers.setdefault("X-Frame-Options", "DENY")
        return response

    @app.errorhandler(ApiError)
    async def api_error(exc: ApiError) -> Any:
        return await error(exc.status, exc.body(), exc.headers)

    @app.errorhandler(ProtocolError)
    async def protocol_error(exc: ProtocolError) -> Any:
        # A peer's bad message (RemoteProtocolError) or one of ours refused by the
        # protocol library: either way the hint says what to answer.
        status = exc.status_hint if exc.status_hint in _ERROR_STATUSES else 400
        return await error(status, {"error": _snake(HTTPStatus(status).phrase),
                                    "detail": str(exc)})

    @app.errorhandler(HTTPException)
    async def http_error(exc: HTTPException) -> Any:
        status = exc.code or 500
        detail = exc.description or exc.name
        if status == 413:
            detail = f"the request body is larger than the {settings.max_body_bytes} bytes allowed"
        return await error(status, {"error": _snake(exc.name), "detail": detail})

    @app.errorhandler(Exception)
    async def unexpected(exc: Exception) -> Any:
        log.exception("unhandled error")
        return jsonify({"error": "internal_error",
                        "detail": "the server failed; the error is in its log"}), 500

    @app.before_serving
    async def check_schema() -> None:
        current, head = await current_revision(db.engine), head_revision()
        if current != head:
            raise RuntimeError(
                f"the database is at migration {current or 'none'}, this code needs {head}: "
                "run `fieldcast migrate` (fieldcast serve does it on start)"
            )
        keys = KeyStore(settings.data_dir / "keys")
        if keys.exists():
            # Refuses private keys that others may read (KeyStoreError says how to fix).
            app.extensions[STATE_KEY].keys = keys.load()
        await service.start()
        await federation.start()
        await subscriber.start()

    @app.after_serving
    async def close() -> None:
        # Requests whose clients left still run to their end (instance/completion.py).
        await completion.drain(app, seconds=10.0)
        await subscriber.stop()
        await federation.stop()
        await service.stop()
        await change_log.settle()  # saves queued by the last requests have their answer
        await db.dispose()

    app.asgi_app = live.KeepAsgiSend(app.asgi_app)  # type: ignore[method-assign]
    return app
