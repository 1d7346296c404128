"""Admin pages: ``/admin/federation``, the hub's subscriptions and deliveries, what this
instance follows on others, and every tracker's export settings, editable in place.

The tables come from instance.federation.overview, as the API and CLI show them; an
export setting is saved by the page script through ``PATCH
/api/trackers/SLUG/fields/NAME``, so its validation is the API's, shown next to the
field. Anyone but an admin is sent to log in (when logged out) or gets a 404, as for a
tracker they may not see.
"""

from __future__ import annotations

from quart import Blueprint, redirect, render_template, request, url_for
from werkzeug.wrappers.response import Response

from instance import trackers
from instance.errors import ApiError
from instance.federation.overview import delivery_views, subscription_views
from instance.remote.store import outgoing_subscriptions
from instance.web import caller, db, state

bp = Blueprint("pages_admin", __name__, url_prefix="/admin")

#: The export modes an admin chooses from, with what each means for people.
EXPORT_MODES = (("none", "not exported"), ("partners", "partner instances"),
                ("public", "public (anyone)"))


@bp.get("/federation")
async def federation() -> str | Response:
    user, who = await caller()
    if user is None:
        return redirect(url_for("pages.login", next=request.path))
    if not who.is_admin:
        raise ApiError(404, "not_found", "this page does not exist")
    async with db().read() as session:
        subs = await subscription_views(session)
        deliveries = await delivery_views(session)
        following = await outgoing_subscriptions(session)
        shown = await trackers.visible_trackers(session, who)
    return await render_template(
        "admin_federation.html", user=user, instance=state().settings.instance_name,
        subscriptions=subs, deliveries=deliveries, following=following, trackers=shown,
        modes=EXPORT_MODES)
