"""``GET {topic}``: an item's exported fields, as the requester may see them.

Unsigned requests see the public fields; a request signed by a partner instance also
the fields exported to that partner. An item that does not exist, exports nothing to
the requester, or was deleted without the requester ever seeing it, answers one and the
same 404, so the answers tell nobody which items exist.
"""

from __future__ import annotations

from typing import Any

from quart import Blueprint, Response, request
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from instance.accounts import as_utc
from instance.federation.exports import federation_version, item_exports
from instance.federation.requester import signer_origin
from instance.federation.service import federation
from instance.federation.urls import TOPIC_PATH, hub_url, topic_url
from instance.models import FieldValue
from protocol.documents import ExportedField, ExportedItem, dumps, etag, etag_matches
from protocol.errors import ProtocolError
from protocol.links import build_link_header

bp = Blueprint("federation_topics", __name__)

NOT_FOUND = {"error": "not_found",
             "detail": "this topic does not exist or exports nothing to the requester"}
GONE = {"error": "gone", "detail": "this item was deleted; unsubscribe from its topic"}


def _json(status: int, body: dict[str, Any], headers: dict[str, str] | None = None
          ) -> Response:
    return Response(dumps(body), status, headers, content_type="application/json")


@bp.get(f"{TOPIC_PATH}<int:item_id>")
async def topic(item_id: int) -> Response:
    service = federation()
    base = service.settings.base_url
    try:
        origin = await signer_origin(b"")
    except ProtocolError as exc:
        status = exc.status_hint or 401
        return _json(status, {"error": "bad_signature", "detail": str(exc)})
    async with service.db.read() as session:
        doc = await topic_document(session, base, item_id, origin)
    if doc == 410:
        return _json(410, GONE)
    if not isinstance(doc, ExportedItem):
        return _json(404, NOT_FOUND)
    tag = etag(doc)
    headers = {
        "ETag": tag,
        "Link": build_link_header(hub=hub_url(base), self_url=doc.topic),
        # The answer depends on who signed: no shared cache may hand it to another.
        "Cache-Control": "private, no-cache",
        "Vary": "Signature, Signature-Input",
    }
    if etag_matches(request.headers.get("If-None-Match"), tag):
        return Response(b"", 304, headers)
    return Response(dumps(doc), 200, headers, content_type="application/json")


async def topic_document(session: AsyncSession, base: str, item_id: int, origin: str | None
                         ) -> ExportedItem | int:
    """The item as ``origin`` (None: an unsigned requester) may see it, or the status
    (404, 410) to answer instead. The delivery worker's fat ping sends these same bytes."""
    exports = await item_exports(session, item_id, origin)
    if exports.gone:
        return 410
    if exports.item is None or exports.tracker is None or not exports.fields:
        return 404
    item, tracker = exports.item, exports.tracker
    values = {fv.field_id: fv for fv in (await session.execute(
        select(FieldValue).where(FieldValue.item_id == item.id,
                                 FieldValue.field_id.in_([f.id for f in exports.fields]))
    )).scalars()}
    # Only the exported fields' times: the item's other fields must not show through.
    version = await federation_version(session, item.id, tracker.id, exports.fields)
    times = [as_utc(values[f.id].updated_at) for f in exports.fields if f.id in values]
    return ExportedItem(
        topic=topic_url(base, item.id), item=item.id, tracker=tracker.slug,
        version=version, updated_at=max(times, default=as_utc(item.created_at)),
        fields={f.name: ExportedField(
            value=values[f.id].value if f.id in values else None,
            version=values[f.id].version if f.id in values else 0, type=f.type)
            for f in exports.fields},
    )
