"""Log in and out, who am I, API tokens."""

from __future__ import annotations

from quart import Blueprint, g, jsonify, make_response, request
from quart.typing import ResponseReturnValue

from instance import accounts
from instance.api import schemas
from instance.errors import ApiError
from instance.openapi import accepts, responds
from instance.security import SESSION_COOKIE
from instance.web import caller, change_log, db, require_login, state

bp = Blueprint("auth", __name__, url_prefix="/api")


@bp.post("/login")
@responds(200, schemas.User)
@accepts(schemas.Login)
async def login(data: schemas.Login) -> ResponseReturnValue:
    """Log in: answers the account and sets the session cookie."""
    settings = state().settings
    username, address = data.get("username"), request.remote_addr or ""
    throttle = state().login_throttle
    # Before the (costly) hash: a throttled guess costs the server nothing.
    if isinstance(username, str):
        throttle.check(username, address)
    async with change_log().write() as session:
        try:
            user = await accounts.authenticate(
                session, state().passwords, username, data.get("password"))
        except ApiError as exc:
            if exc.status == 401 and isinstance(username, str):
                throttle.failed(username, address)
            raise
        throttle.succeeded(user.username, address)
        token = await accounts.open_session(session, user, settings.session_ttl_seconds)
        body = await accounts.user_json(session, user)
    response = await make_response(jsonify(body))
    response.set_cookie(
        SESSION_COOKIE, token, max_age=settings.session_ttl_seconds, httponly=True,
        samesite="Lax", secure=settings.secure_cookies, path="/",
    )
    return response


@bp.post("/logout")
@responds(204)
async def logout() -> ResponseReturnValue:
    """Log out: ends the session of the cookie sent, if any."""
    await caller()  # checks Origin for cookie-authenticated requests
    token = request.cookies.get(SESSION_COOKIE)
    if token:
        async with change_log().write() as session:
            await accounts.close_session(session, token)
    response = await make_response("", 204)
    response.delete_cookie(SESSION_COOKIE, path="/")
    return response


@bp.get("/me")
@responds(200, schemas.User)
async def me() -> ResponseReturnValue:
    """The account of the caller."""
    user, _ = await require_login()
    async with db().read() as session:
        return await accounts.user_json(session, user)


@bp.post("/me/password")
@responds(204)
@accepts(schemas.NewPassword)
async def change_password(data: schemas.NewPassword) -> ResponseReturnValue:
    """Change your own password (the current one is needed); your other sessions end."""
    user, _ = await require_login()
    throttle, address = state().login_throttle, request.remote_addr or ""
    # Guessing the current password from a stolen session meets the login's limits.
    throttle.check(user.username, address)
    keep = request.cookies.get(SESSION_COOKIE) if g.fc_via == "session" else None
    async with change_log().write() as session:
        mine = await accounts.get_user(session, user.username)
        try:
            await accounts.change_password(session, state().passwords, mine, dict(data),
                                           keep_session=keep)
        except ApiError as exc:
            if exc.error == "wrong_password":
                throttle.failed(user.username, address)
            raise
        throttle.succeeded(user.username, address)
    return "", 204


@bp.get("/tokens")
@responds(200, schemas.TokenList)
async def list_tokens() -> ResponseReturnValue:
    """The caller's API tokens (without their secrets)."""
    user, _ = await require_login()
    async with db().read() as session:
        return {"tokens": [accounts.token_json(t)
                           for t in await accounts.user_tokens(session, user)]}


@bp.post("/tokens")
@responds(201, schemas.NewTokenSecret)
@accepts(schemas.NewToken)
async def create_token(data: schemas.NewToken) -> ResponseReturnValue:
    """A new API token of the caller; its secret is in this answer only."""
    user, _ = await require_login()
    async with change_log().write() as session:
        token, secret = await accounts.create_token(session, user, data["name"])
        body = accounts.token_json(token)
    # The secret is shown once; only its hash is kept.
    return {**body, "token": secret}, 201


@bp.delete("/tokens/<int:token_id>")
@responds(204)
async def revoke_token(token_id: int) -> ResponseReturnValue:
    """Revoke one of the caller's API tokens; live sockets opened with it close."""
    user, _ = await require_login()
    async with change_log().write() as session:
        await accounts.revoke_token(session, user, token_id)
    return "", 204
