"""The browser pages: server-rendered HTML plus one small script (static/fieldcast.js).

Pages embed data as JSON (only what the user may read, as the API would return it) and
the script renders it with textContent, never as HTML. The item page also embeds the
change-log position read *before* the values, so the live socket's catch-up covers
whatever changed between rendering and subscribing.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlencode

from quart import Blueprint, redirect, render_template, request, url_for
from sqlalchemy import select
from werkzeug.wrappers.response import Response

from instance import changelog, finding, items, trackers
from instance.errors import not_found
from instance.federation.urls import feed_url, hub_url
from instance.models import Item, Tracker, User
from instance.remote.links import remote_state
from instance.rights import FieldDef
from instance.web import caller, db, state

bp = Blueprint("pages", __name__, template_folder="templates", static_folder="static",
               static_url_path="/static")


async def _page(template: str, **context: Any) -> str:
    user, _ = await caller()
    return await render_template(template, user=user,
                                 instance=state().settings.instance_name, **context)


def _to_login() -> Response:
    # Come back here after logging in; login.html's script only follows same-site paths.
    here = request.path + (f"?{request.query_string.decode()}" if request.query_string else "")
    return redirect(url_for("pages.login", next=here))


@bp.get("/login")
async def login() -> str:
    return await _page("login.html")


@bp.get("/")
async def home() -> str | Response:
    user, who = await caller()
    async with db().read() as session:
        shown = [t for t, _ in await trackers.visible_trackers(session, who)]
    if not shown and user is None:
        return _to_login()
    return await _page("home.html", trackers=shown)


def _unseen(user: User | None, what: str) -> Response:
    """A page of something that does not exist or that the caller may see nothing of, the
    same for both: a visitor who is not logged in is sent to log in (the link may well
    be good for a user who is), a user who is gets the 404."""
    if user is None:
        return _to_login()
    raise not_found(what)


@bp.get("/trackers/<slug>")
async def tracker(slug: str) -> str | Response:
    user, who = await caller()
    async with db().read() as session:
        found = await session.scalar(select(Tracker).where(Tracker.slug == slug))
        if found is None:
            return _unseen(user, f"tracker {slug!r}")
        fields = await trackers.tracker_fields(session, found)
        if not trackers.tracker_visible(fields, who):
            return _unseen(user, f"tracker {slug!r}")
        # The same query parameters as GET /api/trackers/SLUG/items: links are shareable.
        query = finding.parse_query(request.args, slug, fields, who)
        # The position before the rows: the socket sends what changed after it.
        epoch, offset = await changelog.epoch(session), await changelog.head(session)
        found_page = await finding.find_items(session, found.id, query)
        listed = await items.items_json(session, found_page.items, found, fields, who)
    columns = [f for f in fields if f.readable_by(who)]
    can_create = who.is_admin or any(f.editable_by(who) for f in fields)
    here = url_for("pages.tracker", slug=slug)

    def link(*, sort: str | None = None, cursor: str | None = None) -> str:
        params = query.params(sort=sort) + ([("cursor", cursor)] if cursor else [])
        return here + ("?" + urlencode(params) if params else "")

    sorts = {f.name: link(sort=f.name if query.sort != f.name else "-" + f.name)
             for f in columns}
    sorts["id"] = link(sort="-id" if query.sort == "id" else "id")
    paging = {"next": link(cursor=found_page.next) if found_page.next else None,
              "prev": link(cursor=found_page.prev) if found_page.prev else None}
    filters = {f.field.name: f for f in query.filters}
    data = {"tracker": {"id": found.id, "slug": found.slug},
            "columns": [{"name": f.name, "label": f.label, "type": f.type} for f in columns],
            "query": query.describe(), "position": {"epoch": epoch, "offset": offset}}
    return await _page("tracker.html", tracker=found, items=listed, columns=columns,
                       can_create=can_create, feed=_feed_links(found.slug, fields),
                       query=query, filters=filters, sorts=sorts, paging=paging,
                       clear=here, data=data, searchable=bool(query.q_fields),
                       filterable=[f for f in columns
                                   if f.type in finding.BY_VALUE + finding.BY_RANGE])


def _feed_links(slug: str, fields: list[FieldDef]) -> dict[str, str] | None:
    """The tracker's Atom feed and hub, for its page's head, when it has public fields."""
    if not any(f.export_mode == "public" for f in fields):
        return None
    base = state().settings.base_url
    return {"self": feed_url(base, slug), "hub": hub_url(base)}


def item_heading(view: dict[str, Any]) -> str:
    """An item's title as its page shows it: the value of its readable field named
    "title", else of its first readable one-line text field, else "#ID".

    Only readable fields are in ``view``; static/fieldcast.js applies the same rule when
    values or rights change while the page is open.
    """
    shown: dict[str, Any] = view["fields"]
    name = "title" if "title" in shown else next(
        (n for n, f in shown.items() if f["type"] == "text"), None)
    value = shown[name]["value"] if name is not None else None
    return value.strip() if isinstance(value, str) and value.strip() else f"#{view['id']}"


@bp.get("/items/<int:item_id>")
async def item(item_id: int) -> str | Response:
    user, who = await caller()
    async with db().read() as session:
        # The position first: anything committed after it is replayed by the socket.
        epoch, offset = await changelog.epoch(session), await changelog.head(session)
        row = (await session.execute(
            select(Item, Tracker).join(Tracker, Tracker.id == Item.tracker_id)
            .where(Item.id == item_id))).first()
        if row is None:
            return _unseen(user, f"item {item_id}")
        found, tracker_row = row
        fields = await trackers.tracker_fields(session, tracker_row)
        if not (who.is_admin or items.readable(fields, who)):
            return _unseen(user, f"item {item_id}")
        view = (await items.items_json(session, [found], tracker_row, fields, who))[0]
        for name, info in (await remote_state(session, found.id, fields)).items():
            if name in view["fields"]:
                view["fields"][name]["remote"] = info
    options = {f.name: f.options for f in fields if f.readable_by(who)}
    can_link = who.is_admin and any(f.type == "remote" for f in fields)
    return await _page("item.html", item=view, tracker=tracker_row, can_link=can_link,
                       heading=item_heading(view),
                       page={"item": view, "options": options, "tracker": tracker_row.name,
                             "user": user.username if user else None,
                             "position": {"epoch": epoch, "offset": offset}})
