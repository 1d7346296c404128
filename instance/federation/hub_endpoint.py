"""``POST {hub}``: WebSub subscribe and unsubscribe requests (REC §5.1).

A topic is an item's topic URL or a tracker's Atom feed URL (its public fields, the
same to every subscriber, signed or not).

The answer is 202 before any verification (REC §5.1.2), or a 4xx with a plain-text
reason for a request that is malformed or badly signed. Whether the topic exists or is
exported to the requester does not change the answer: a subscribe the hub will not
honour is answered 202 like any other and then refused with ``hub.mode=denied`` at the
callback, with one reason for every refusal, so neither tells which items exist.
"""

from __future__ import annotations

from quart import Blueprint, Response, request
from werkzeug.exceptions import RequestEntityTooLarge

from instance.accounts import now
from instance.federation import subscriptions
from instance.federation.exports import feed_exports, item_exports, normalize_origin
from instance.federation.requester import signer_origin
from instance.federation.service import federation
from instance.federation.subscriptions import Target
from instance.federation.urls import HUB_PATH, TOPIC_PATH, feed_of_topic, feed_url, item_of_topic
from protocol.errors import ProtocolError
from protocol.websub import (
    MAX_FORM_BYTES,
    PublishRequest,
    SubscribeRequest,
    decode_form,
    parse_hub_request,
)

bp = Blueprint("federation_hub", __name__)

FORM = "application/x-www-form-urlencoded"
#: Keeps (topic, callback) within what one index entry holds on every database.
MAX_CALLBACK_BYTES = 2000
DENIAL_REASON = ("the topic does not exist or exports nothing to the requesting instance "
                 "(an unsigned request may subscribe only to topics with public fields)")


def _text(status: int, message: str) -> Response:
    return Response(message + "\n", status, content_type="text/plain; charset=utf-8")


@bp.post(HUB_PATH)
async def hub() -> Response:
    service = federation()
    base = service.settings.base_url
    try:
        body = await request.get_data(cache=False, as_text=False)
        assert isinstance(body, bytes)
    except RequestEntityTooLarge:
        return _text(413, f"the request body is larger than the {MAX_FORM_BYTES} bytes a "
                     "hub request may have")
    if request.mimetype != FORM:
        return _text(400, f"send the request as {FORM} (WebSub REC §5.1), not "
                     f"{request.mimetype or 'a body without Content-Type'}")
    try:
        req = parse_hub_request(decode_form(body), lease=service.lease)
        item_id = item_of_topic(base, req.topic)
        slug = feed_of_topic(base, req.topic) if item_id is None else None
        if item_id is None and slug is None:
            return _text(400, f"hub.topic {req.topic!r} is not a topic of this hub; topics "
                         f"are {base}{TOPIC_PATH}ID, the rel=self link of the item, and "
                         f"{feed_url(base, 'SLUG')}, a tracker's Atom feed")
        if isinstance(req, PublishRequest):
            # This hub's own changes reach it through the change log, not through pings.
            return _text(202, "accepted; this hub publishes its topics itself")
        if len(req.callback.encode("utf-8")) > MAX_CALLBACK_BYTES:
            return _text(400, f"hub.callback is longer than {MAX_CALLBACK_BYTES} bytes")
        origin = await signer_origin(body)
    except ProtocolError as exc:
        return _text(exc.status_hint or 400, str(exc))
    if origin is not None and normalize_origin(req.callback) != origin:
        # Notifications name the changed fields of partner exports: they go only to the
        # instance the fields are exported to.
        return _text(400, f"hub.callback must be on the signing instance's origin {origin}, "
                     f"not {normalize_origin(req.callback)}")
    at = now()
    async with service.db.write() as session:
        if isinstance(req, SubscribeRequest):
            target: Target | None
            if item_id is not None:
                target = Target(item_id=item_id)
                honoured = bool((await item_exports(session, item_id, origin)).fields)
            else:
                assert slug is not None
                found = await feed_exports(session, slug)
                target = Target(tracker_id=found[0].id) if found is not None else None
                honoured = found is not None
            if honoured:
                assert target is not None
                await subscriptions.request_subscribe(session, req, target, origin, at)
            else:
                await subscriptions.request_denial(session, req.topic, req.callback, target,
                                                   DENIAL_REASON, at)
        else:
            await subscriptions.request_unsubscribe(session, req, at)
    service.wake()
    return _text(202, f"accepted; the hub will verify this {req.mode} at the callback")
