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
from werkzeug.wrappers.response import Response

from instance import changelog, finding, items, trackers
from instance.errors import ApiError
from instance.federation.urls import feed_url, hub_url
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


@bp.get("/trackers/<slug>")
async def tracker(slug: str) -> str | Response:
    user, who = await caller()
    async with db().read() as session:
        found = await trackers.get_tracker(session, slug)
        fields = await trackers.tracker_fields(session, found)
        if not trackers.tracker_visible(fields, who):
            if user is None:
                return _to_login()
            raise ApiError(404, "not_found", f"tracker {slug!r} does not exist or you may "
                           "not see it")
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


@bp.get("/items/<int:item_id>")
async def item(item_id: int) -> str | Response:
    user, who = await caller()
    async with db().read() as session:
        # The position first: anything committed after it is replayed by the socket.
        epoch, offset = await changelog.epoch(session), await changelog.head(session)
        found, tracker_row = await items.get_item(session, item_id)
        fields = await trackers.tracker_fields(session, tracker_row)
        if not (who.is_admin or items.readable(fields, who)):
            if user is None:
                return _to_login()
            raise ApiError(404, "not_found", f"item {item_id} does not exist or you may "
                           "not see it")
        view = (await items.items_json(session, [found], tracker_row, fields, who))[0]
        for name, info in (await remote_state(session, found.id, fields)).items():
            if name in view["fields"]:
                view["fields"][name]["remote"] = info
    options = {f.name: f.options for f in fields if f.readable_by(who)}
    can_link = who.is_admin and any(f.type == "remote" for f in fields)
    return await _page("item.html", item=view, tracker=tracker_row, can_link=can_link,
                       page={"item": view, "options": options,
                             "position": {"epoch": epoch, "offset": offset}})
