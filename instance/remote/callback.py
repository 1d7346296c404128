"""``GET``/``POST {base_url}/federation/callback/{token}``: what a host's hub sends us.

* ``GET`` — verification of intent (REC §5.3): 200 with the challenge only for the mode
  this instance asked for and the topic of that subscription, else 404; a denial
  (§5.2) is recorded with its reason (subscribing again takes an admin: relink).
* ``POST`` — a notification: signed by the topic's instance (keys pinned, replays
  refused, digest checked), for the topic this callback subscribed to. Answered 202 at
  once; the fetch is a durable job for the worker (one per topic). A ping for a version
  we hold already queues nothing.
"""

from __future__ import annotations

from quart import Blueprint, Response, request
from werkzeug.exceptions import RequestEntityTooLarge

from instance.accounts import now
from instance.clock import as_utc, signing_time
from instance.federation.requester import public_url
from instance.federation.service import federation
from instance.remote import store
from instance.remote.faults import apply_callback_fault
from instance.remote.service import remote
from instance.remote.store import CALLBACK_PATH, Event, State
from keys.resolver import verify_signed
from protocol.documents import dumps, parse_notification
from protocol.errors import ProtocolError
from protocol.websub import Denial, parse_callback_request

bp = Blueprint("remote_callback", __name__)


def _text(status: int, message: str) -> Response:
    return Response(message + "\n", status, content_type="text/plain; charset=utf-8")


def _json(status: int, error: str, detail: str) -> Response:
    return Response(dumps({"error": error, "detail": detail}), status,
                    content_type="application/json")


@bp.get(f"{CALLBACK_PATH}<token>")
async def verify(token: str) -> Response:
    service = remote()
    if (faulty := await apply_callback_fault(service.settings)) is not None:
        return faulty
    try:
        req = parse_callback_request(list(request.args.items(multi=True)))
    except ProtocolError as exc:
        return _text(404, str(exc))
    at = now()
    async with service.db.write() as session:
        sub = await store.by_token(session, token, lock=True)
        if sub is None:
            return _text(404, "no subscription has this callback")
        if isinstance(req, Denial):
            if req.topic != sub.topic:
                return _text(404, "this callback did not subscribe to that topic")
            store.advance(sub, Event.DENIED)
            sub.awaiting = None
            sub.hub_request = sub.hub_request_due_at = sub.renew_at = None
            sub.denied_reason = req.reason or "the hub gave no reason"
            sub.updated_at = at
            # What we show may be stale now: look at the topic once more.
            if await store.has_links(session, sub.id):
                store.queue_fetch(sub, at)
            wake = True
        else:
            if sub.awaiting is None:
                return _text(404, f"this callback is not waiting for a {req.mode} verification")
            try:
                challenge = req.expect(mode=sub.awaiting, topic=sub.topic)
            except ProtocolError as exc:
                return _text(404, str(exc))
            if req.mode == "subscribe":
                assert req.lease_seconds is not None  # parse_callback_request checks it
                store.subscribe_verified(sub, req.lease_seconds, at)
            else:
                if not store.advance(sub, Event.UNSUBSCRIBE_VERIFIED):
                    sub.state = State.UNSUBSCRIBED.value
                sub.awaiting = None
                sub.renew_at = sub.lease_expires_at = None
                sub.updated_at = at
            wake = False
    if wake:
        service.wake()
        return _text(200, "denial recorded")
    return Response(challenge, 200, content_type="text/plain; charset=utf-8")


@bp.post(f"{CALLBACK_PATH}<token>")
async def notify(token: str) -> Response:
    service = remote()
    if (faulty := await apply_callback_fault(service.settings)) is not None:
        return faulty
    fed = federation()
    try:
        body = await request.get_data(cache=False, as_text=False)
        assert isinstance(body, bytes)
    except RequestEntityTooLarge:
        return _json(413, "too_large", "a notification is a small JSON document")
    async with service.db.read() as session:
        sub = await store.by_token(session, token)
    if sub is None:
        return _json(404, "not_found", "no subscription has this callback")
    try:
        # The topic's instance, and only it, may notify: its key, its pinned identity.
        await verify_signed(fed.resolver, "POST", public_url(), list(request.headers.items()),
                            body, now=signing_time(fed.settings), replay_cache=fed.replay,
                            expected_origin=sub.instance)
        # No hub.secret is sent (the HTTP signature authenticates the hub), so an
        # X-Hub-Signature header has nothing to be checked against and is ignored.
        ping = parse_notification(body)
    except ProtocolError as exc:
        status = exc.status_hint or 400
        return _json(status, "bad_signature" if status in (401, 403) else "bad_request",
                     str(exc))
    if ping.topic != sub.topic:
        return _json(404, "not_found", "this callback did not subscribe to that topic")
    if sub.state == State.UNSUBSCRIBED.value:
        # REC §7: 410 tells the hub the subscription is over.
        return _json(410, "gone", "this instance unsubscribed from the topic")
    at = now()
    queued = False
    async with service.db.write() as session:
        sub = await store.by_token(session, token, lock=True)
        if sub is None:
            return _json(404, "not_found", "no subscription has this callback")
        sub.last_ping_at = at
        sub.pinged_version = max(sub.pinged_version or 0, ping.version)
        held = sub.remote_version
        # An empty field list at the same version is a re-check (rights or exports
        # changed): fetch. A version we hold, with its changed fields named, is not news.
        already = held is not None and ping.version <= held and bool(ping.fields)
        if not already and await store.has_links(session, sub.id):
            store.queue_fetch(sub, at)
            if sub.fetch_due_at is not None and as_utc(sub.fetch_due_at) > at:
                # A fetch waiting out its backoff after failures: this verified ping
                # shows the host answers again, so fetch now (attempts keep counting).
                sub.fetch_due_at = at
            queued = True
        sub.updated_at = at
    if queued:
        service.wake()
    return _json(202, "accepted", "the topic will be fetched" if queued
                 else "this version is held already")
