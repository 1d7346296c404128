"""Admin pages under ``/admin``: trackers and their fields, users, groups, federation.

The pages are server-rendered from the same functions and JSON shapes the API answers
with; every form is sent by static/admin.js to the API itself (``POST /api/trackers``,
``PATCH /api/trackers/SLUG/fields/NAME``, ``PATCH /api/users/NAME``, …), so validation and
its messages are the API's, shown next to the form, with what was typed left in place.
Anyone but an admin is sent to log in (when logged out) or gets a 404, as for a tracker
they may not see.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from functools import wraps
from typing import Any

from quart import Blueprint, redirect, render_template, request, url_for
from werkzeug.wrappers.response import Response

from instance import accounts, trackers
from instance.errors import ApiError
from instance.federation.overview import delivery_views, subscription_views
from instance.fieldtypes import FIELD_TYPES
from instance.models import User
from instance.remote.store import outgoing_subscriptions
from instance.rights import Principal
from instance.web import caller, db, state

bp = Blueprint("pages_admin", __name__, url_prefix="/admin")

#: The export modes an admin chooses from, with what each means for people.
EXPORT_MODES = (("none", "not exported"), ("partners", "partner instances"),
                ("public", "public (anyone)"))

#: What each field type is, for the type menu.
TYPE_LABELS = {"text": "text (one line)", "textarea": "text area (many lines)",
               "number": "number", "dropdown": "dropdown (a choice)", "date": "date",
               "user": "user (a username)", "remote": "remote (mirrors another instance)"}
assert set(TYPE_LABELS) == set(FIELD_TYPES)


Page = Callable[..., Awaitable[str | Response]]


def admin_page(view: Page) -> Page:
    """``view(user, who, **route_args)`` for the admin asking; anyone else goes to the
    login page (logged out) or gets a 404."""
    @wraps(view)
    async def page(**route_args: Any) -> str | Response:
        user, who = await caller()
        if user is None:
            return redirect(url_for("pages.login", next=request.path))
        if not who.is_admin:
            raise ApiError(404, "not_found", "this page does not exist")
        return await view(user, who, **route_args)
    return page


async def _render(template: str, user: User, **context: Any) -> str:
    return await render_template(template, user=user,
                                 instance=state().settings.instance_name, **context)


@bp.get("")
@admin_page
async def index(user: User, who: Principal) -> str | Response:
    async with db().read() as session:
        shown = await trackers.visible_trackers(session, who)
        users = await accounts.users_json(session)
        groups = await accounts.groups_json(session)
    return await _render("admin_index.html", user, trackers=shown, users=users,
                         groups=groups)


@bp.get("/trackers/<slug>")
@admin_page
async def tracker(user: User, who: Principal, slug: str) -> str | Response:
    async with db().read() as session:
        found = await trackers.get_tracker(session, slug)
        names = await trackers.group_names(session)
        fields = [trackers.field_json(f, who, names)
                  for f in await trackers.tracker_fields(session, found)]
        groups = await accounts.groups_json(session)
    return await _render("admin_tracker.html", user, tracker=found, fields=fields,
                         groups=groups, types=TYPE_LABELS, modes=EXPORT_MODES)


@bp.get("/users")
@admin_page
async def users(user: User, _who: Principal) -> str | Response:
    async with db().read() as session:
        listed = await accounts.users_json(session)
        groups = [g for g in await accounts.groups_json(session) if not g["builtin"]]
    return await _render("admin_users.html", user, users=listed, groups=groups)


@bp.get("/groups")
@admin_page
async def groups(user: User, _who: Principal) -> str | Response:
    async with db().read() as session:
        listed = await accounts.groups_json(session)
        usernames = [u["username"] for u in await accounts.users_json(session)]
    return await _render("admin_groups.html", user, groups=listed, usernames=usernames)


@bp.get("/federation")
@admin_page
async def federation(user: User, who: Principal) -> str | Response:
    async with db().read() as session:
        subs = await subscription_views(session)
        deliveries = await delivery_views(session)
        following = await outgoing_subscriptions(session)
        shown = await trackers.visible_trackers(session, who)
    return await _render(
        "admin_federation.html", user, subscriptions=subs, deliveries=deliveries,
        following=following, trackers=shown, modes=EXPORT_MODES)
