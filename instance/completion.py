"""HTTP requests run to their end when the client hangs up.

Quart cancels a request's handler when its client disconnects, and Hypercorn may then
cancel the task that waits for that cancellation, which cancels the handler a second
time. A cancel that lands inside a database transaction - worse, inside its cleanup -
leaves SQLAlchemy's aiosqlite connection half torn down: a later request waited forever
on a connection whose thread had stopped, or SQLite's write lock stayed with a
connection only the garbage collector reclaimed, and every save after it failed
(bench/double_cancel.py shows the driver side in isolation). A save the client sent
must also either happen or not, whoever hangs up when. So a request, once its body is
in, runs to its end: the answer goes nowhere if nobody listens.
"""

from __future__ import annotations

import asyncio
import logging

from hypercorn.typing import ASGIReceiveCallable, ASGISendCallable
from quart import Quart
from quart.asgi import ASGIHTTPConnection
from quart.wrappers import Request
from werkzeug.exceptions import ClientDisconnected

log = logging.getLogger(__name__)

_RUNNING = "fieldcast.requests"


class CompletingHTTPConnection(ASGIHTTPConnection):
    """Quart's HTTP handling, except that a disconnect or an outer cancel does not
    cancel the handler (see the module's docstring)."""

    async def __call__(self, receive: ASGIReceiveCallable, send: ASGISendCallable) -> None:
        request = self._create_request_from_scope(send)
        handler = asyncio.ensure_future(self.handle_request(request, send))
        running: set[asyncio.Task[None]] = self.app.extensions.setdefault(_RUNNING, set())
        running.add(handler)
        handler.add_done_callback(_finished)
        handler.add_done_callback(running.discard)
        receiver = asyncio.ensure_future(self._receive(request, receive))
        try:
            # Shielded: a cancel of this task (Hypercorn closing the connection) leaves
            # the handler running; it is awaited at shutdown (``drain``).
            await asyncio.shield(handler)
        finally:
            receiver.cancel()

    async def _receive(self, request: Request, receive: ASGIReceiveCallable) -> None:
        complete = False
        while True:
            message = await receive()
            if message["type"] == "http.request":
                request.body.append(message.get("body", b""))
                if not message.get("more_body", False):
                    complete = True
                    request.body.set_complete()
            elif message["type"] == "http.disconnect":
                if not complete:
                    # The body will never be whole: reading it raises (a 400 nobody
                    # reads) instead of waiting for BODY_TIMEOUT. Quart's Body has no
                    # public way to fail; _must_raise is what it uses itself.
                    request.body._must_raise = ClientDisconnected()
                    request.body.set_complete()
                return


def _finished(task: asyncio.Task[None]) -> None:
    # Nobody awaits a handler whose connection went away: its error is logged here.
    if not task.cancelled() and (error := task.exception()) is not None:
        log.error("a request failed after its client went away", exc_info=error)


async def drain(app: Quart, seconds: float) -> None:
    """Wait, at most ``seconds``, for requests still running (at shutdown, before the
    database goes away)."""
    running: set[asyncio.Task[None]] = app.extensions.get(_RUNNING, set())
    if running:
        await asyncio.wait(list(running), timeout=seconds)
