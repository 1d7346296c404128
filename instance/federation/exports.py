"""Which fields of an item (or of a tracker's feed) are exported to whom.

A field is exported to everyone when its ``export_mode`` is "public", and to the
instances listed in ``export_partners`` when it is "partners". An unsigned request is
"everyone"; a signed one is the origin of the key that signed it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from urllib.parse import urlsplit

from sqlalchemy import func, or_, select, text
from sqlalchemy.ext.asyncio import AsyncSession

from hub.changes import ChangeKind
from instance.federation.urls import topic_url
from instance.models import EXPORT_KINDS, ChangeLog, Item, Tracker
from instance.rights import FieldDef, load_fields

_DEFAULT_PORTS = {"http": 80, "https": 443}


def normalize_origin(url: str) -> str:
    """``scheme://host[:port]``, lower-cased, default port dropped: one spelling per
    origin, so a partner listed as ``https://B.example:443`` is the signer
    ``https://b.example``."""
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    host = (parts.hostname or "").lower()
    if ":" in host:
        host = f"[{host}]"
    port = parts.port
    if port is None or port == _DEFAULT_PORTS.get(scheme):
        return f"{scheme}://{host}"
    return f"{scheme}://{host}:{port}"


def exported_to(fields: list[FieldDef], origin: str | None) -> list[FieldDef]:
    """The fields exported to ``origin`` (None: to an unsigned requester), in order."""
    out = []
    for f in fields:
        if f.export_mode == "public":
            out.append(f)
        elif (f.export_mode == "partners" and origin is not None
              and origin in {normalize_origin(p) for p in f.export_partners}):
            out.append(f)
    return out


def public_fields(fields: list[FieldDef]) -> list[FieldDef]:
    """What a tracker's Atom feed holds: the public fields, whoever asks (signed or not)."""
    return [f for f in fields if f.export_mode == "public"]


def topic_of(base_url: str, item_id: int, fields: list[FieldDef]) -> str | None:
    """The item's topic URL when any of its fields is exported to anyone, else None."""
    if any(f.export_mode in ("public", "partners") for f in fields):
        return topic_url(base_url, item_id)
    return None


@dataclass(frozen=True)
class ItemExports:
    """An item as one requester may see it through federation.

    ``fields`` is empty when nothing is exported to the requester, the item does not
    exist, or it was deleted; ``gone`` says it was deleted *and* its tracker exports
    something to the requester (anyone else learns nothing, not even that it existed).
    """

    item: Item | None = None
    tracker: Tracker | None = None
    fields: list[FieldDef] = field(default_factory=list)
    gone: bool = False


async def federation_version(session: AsyncSession, item_id: int, tracker_id: int,
                             fields: list[FieldDef]) -> int:
    """The item's ``version`` for a requester who gets ``fields``: the newest change-log
    event among the item's creation, the values of those fields, and the tracker's
    export settings and field deletions.

    Not the item's own version, which counts changes of every field: a partner would
    see it move on edits of fields it does not get. Not a sum of the exported fields'
    versions either, which goes down when an export is withdrawn, and a subscriber
    rightly refuses a document older than the one it holds. This one only grows (a
    withdrawn export is an event newer than every value it hides), moves on no hidden
    edit, and a ping for a change carries that change's event id as the version the
    topic answers right after it. A change of any export setting of the tracker moves
    it for every requester: that shows that some setting changed, never a value.
    """
    ids = [f.id for f in fields]
    newest = await session.scalar(select(func.max(ChangeLog.id)).where(
        ChangeLog.item_id == item_id,
        or_(ChangeLog.kind == ChangeKind.CREATED.value,
            (ChangeLog.kind == ChangeKind.VALUE.value) & ChangeLog.field_id.in_(ids))))
    # The literal condition of the partial index ix_change_log_tracker_exports, so both
    # databases use it (a bound parameter would not prove the row is in the index).
    export = await session.scalar(select(func.max(ChangeLog.id)).where(
        ChangeLog.tracker_id == tracker_id, text(EXPORT_KINDS)))
    return max(int(newest or 0), int(export or 0))


async def item_exports(session: AsyncSession, item_id: int, origin: str | None
                       ) -> ItemExports:
    row = (await session.execute(
        select(Item, Tracker).join(Tracker, Tracker.id == Item.tracker_id)
        .where(Item.id == item_id)
    )).first()
    if row is None:
        tracker_id = await session.scalar(
            select(ChangeLog.tracker_id)
            .where(ChangeLog.item_id == item_id,
                   ChangeLog.kind == ChangeKind.ITEM_DELETED.value).limit(1)
        )
        if tracker_id is None:
            return ItemExports()
        fields = (await load_fields(session, [tracker_id]))[tracker_id]
        return ItemExports(gone=bool(exported_to(fields, origin)))
    item, tracker = row
    fields = (await load_fields(session, [tracker.id]))[tracker.id]
    return ItemExports(item, tracker, exported_to(fields, origin))


async def feed_exports(session: AsyncSession, slug: str
                       ) -> tuple[Tracker, list[FieldDef]] | None:
    """The tracker of a feed and its public fields, or None when the tracker does not
    exist or has no public field (then there is no feed, and no feed topic)."""
    tracker = await session.scalar(select(Tracker).where(Tracker.slug == slug))
    if tracker is None:
        return None
    fields = public_fields((await load_fields(session, [tracker.id]))[tracker.id])
    return (tracker, fields) if fields else None
