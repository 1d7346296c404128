"""Fetched values into this instance's ``remote`` fields, through its change log.

Every stored value is a change-log row (``items.save_mirrored``: source "federation",
no actor), so this instance's live hub shows it to its browsers with this instance's
read rights, exactly as a local save. A field the host no longer exports to us is
cleared the same way and remembered in the link's ``unshared`` with the reason.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import select

from instance import items
from instance.changelog import LogSession
from instance.federation.exports import normalize_origin
from instance.models import Item, RemoteLink, RemoteSubscription
from instance.rights import FieldDef, load_fields
from protocol.documents import ExportedItem


def source_of(f: FieldDef) -> dict[str, Any]:
    source = f.options.get("source")
    return source if isinstance(source, dict) else {}


def mirrored_fields(fields: list[FieldDef], instance: str, tracker: str | None
                    ) -> list[FieldDef]:
    """The remote fields that mirror a field of ``tracker`` on ``instance`` (an origin);
    any tracker there when ``tracker`` is None."""
    out = []
    for f in fields:
        source = source_of(f)
        if f.type != "remote" or not isinstance(source.get("instance"), str):
            continue
        if normalize_origin(source["instance"]) != instance:
            continue
        if tracker is not None and source.get("tracker") != tracker:
            continue
        out.append(f)
    return out


def unshared_reason(instance: str, tracker: str, name: str) -> str:
    return (f"{instance} no longer exports field {name!r} of tracker {tracker!r} to this "
            "instance")


async def _links(session: LogSession, sub: RemoteSubscription, only: int | None
                 ) -> list[tuple[RemoteLink, int]]:
    query = (select(RemoteLink, Item.tracker_id).join(Item, Item.id == RemoteLink.item_id)
             .where(RemoteLink.subscription_id == sub.id).order_by(RemoteLink.item_id))
    if only is not None:
        query = query.where(RemoteLink.item_id == only)
    return [(link, tracker) for link, tracker in (await session.execute(query)).all()]


async def mirror(session: LogSession, sub: RemoteSubscription, doc: ExportedItem,
                 at: datetime, *, only: int | None = None) -> int:
    """Store ``doc`` in the remote fields of every item linked to ``sub`` (or ``only``
    that one); how many values changed."""
    links = await _links(session, sub, only)
    fields = await load_fields(session, {tracker for _, tracker in links})
    plan = []
    for link, tracker_id in links:
        unshared = dict(link.unshared or {})
        for f in mirrored_fields(fields.get(tracker_id, []), sub.instance, doc.tracker):
            name = source_of(f)["field"]
            exported = doc.fields.get(name)
            if exported is None:
                unshared[f.name] = unshared_reason(sub.instance, doc.tracker, name)
                plan.append((link.item_id, tracker_id, f, None))
            else:
                unshared.pop(f.name, None)
                plan.append((link.item_id, tracker_id, f, exported.value))
        link.unshared = unshared
    await session.flush()
    # The change-log appends last: the counter's lock is held only until the commit.
    changed = 0
    for item_id, tracker_id, f, value in plan:
        if await items.save_mirrored(session, item_id, tracker_id, f, value, at) is not None:
            changed += 1
    return changed


async def clear(session: LogSession, sub: RemoteSubscription, reason: str, at: datetime,
                *, only: int | None = None) -> int:
    """Clear the remote fields ``sub`` fills (the host stopped sharing, or an unlink)."""
    links = await _links(session, sub, only)
    fields = await load_fields(session, {tracker for _, tracker in links})
    plan = []
    for link, tracker_id in links:
        mirrored = mirrored_fields(fields.get(tracker_id, []), sub.instance, sub.tracker)
        link.unshared = {f.name: reason for f in mirrored}
        plan += [(link.item_id, tracker_id, f) for f in mirrored]
    await session.flush()
    changed = 0
    for item_id, tracker_id, f in plan:
        if await items.save_mirrored(session, item_id, tracker_id, f, None, at) is not None:
            changed += 1
    return changed
