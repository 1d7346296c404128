"""``/account``: the logged-in user's own page: change the password, see, create and
revoke API tokens. Its forms are sent by static/admin.js to ``POST /api/me/password`` and
``/api/tokens``, the API's own code and messages."""

from __future__ import annotations

from quart import Blueprint, redirect, render_template, url_for
from werkzeug.wrappers.response import Response

from instance import accounts
from instance.web import caller, db, state

bp = Blueprint("pages_account", __name__)


@bp.get("/account")
async def account() -> str | Response:
    user, _ = await caller()
    if user is None:
        return redirect(url_for("pages.login", next="/account"))
    async with db().read() as session:
        me = await accounts.user_json(session, user)
        tokens = [accounts.token_json(t) for t in await accounts.user_tokens(session, user)]
    return await render_template("account.html", user=user, me=me, tokens=tokens,
                                 instance=state().settings.instance_name)
