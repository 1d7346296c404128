"""Users and groups (admins only, except reading your own account)."""

from __future__ import annotations

from quart import Blueprint
from quart.typing import ResponseReturnValue

from instance import accounts
from instance.errors import forbidden
from instance.web import change_log, db, json_body, require_admin, require_login, state

bp = Blueprint("admin", __name__, url_prefix="/api")


@bp.get("/users")
async def list_users() -> ResponseReturnValue:
    await require_admin()
    async with db().read() as session:
        return {"users": await accounts.users_json(session)}


@bp.post("/users")
async def create_user() -> ResponseReturnValue:
    await require_admin()
    data = await json_body()
    async with change_log().write() as session:
        user = await accounts.create_user_from(session, state().passwords, data)
        return await accounts.user_json(session, user), 201


@bp.get("/users/<username>")
async def get_user(username: str) -> ResponseReturnValue:
    me, who = await require_login()
    if not who.is_admin and me.username != username:
        raise forbidden("only an admin may look at other accounts")
    async with db().read() as session:
        return await accounts.user_json(session, await accounts.get_user(session, username))


@bp.patch("/users/<username>")
async def update_user(username: str) -> ResponseReturnValue:
    me, _ = await require_admin()
    data = await json_body()
    async with change_log().write() as session:
        user = await accounts.get_user(session, username)
        await accounts.update_user(session, state().passwords, user, data, by=me)
        return await accounts.user_json(session, user)


@bp.get("/groups")
async def list_groups() -> ResponseReturnValue:
    await require_admin()
    async with db().read() as session:
        return {"groups": await accounts.groups_json(session)}


@bp.post("/groups")
async def create_group() -> ResponseReturnValue:
    await require_admin()
    data = await json_body()
    async with change_log().write() as session:
        group = await accounts.create_group(
            session, data.get("name"), data.get("description", "")
        )
        return {"name": group.name, "description": group.description, "builtin": False,
                "members": []}, 201


@bp.delete("/groups/<name>")
async def delete_group(name: str) -> ResponseReturnValue:
    await require_admin()
    async with change_log().write() as session:
        await accounts.delete_group(session, name)
    return "", 204


@bp.put("/groups/<name>/members/<username>")
async def add_member(name: str, username: str) -> ResponseReturnValue:
    await require_admin()
    async with change_log().write() as session:
        await accounts.set_membership(session, name, username, True)
    return "", 204


@bp.delete("/groups/<name>/members/<username>")
async def remove_member(name: str, username: str) -> ResponseReturnValue:
    await require_admin()
    async with change_log().write() as session:
        await accounts.set_membership(session, name, username, False)
    return "", 204
