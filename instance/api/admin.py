"""Users and groups (admins only, except reading your own account)."""

from __future__ import annotations

from quart import Blueprint
from quart.typing import ResponseReturnValue

from instance import accounts
from instance.api import schemas
from instance.errors import forbidden
from instance.openapi import accepts, responds
from instance.web import change_log, db, require_admin, require_login, state

bp = Blueprint("admin", __name__, url_prefix="/api")


@bp.get("/users")
@responds(200, schemas.UserList)
async def list_users() -> ResponseReturnValue:
    """Every account, by username (admins)."""
    await require_admin()
    async with db().read() as session:
        return {"users": await accounts.users_json(session)}


@bp.post("/users")
@responds(201, schemas.User)
@accepts(schemas.NewUser)
async def create_user(data: schemas.NewUser) -> ResponseReturnValue:
    """Create an account (admins)."""
    await require_admin()
    async with change_log().write() as session:
        user = await accounts.create_user_from(session, state().passwords, dict(data))
        return await accounts.user_json(session, user), 201


@bp.get("/users/<username>")
@responds(200, schemas.User)
async def get_user(username: str) -> ResponseReturnValue:
    """One account: your own, or any for an admin."""
    me, who = await require_login()
    if not who.is_admin and me.username != username:
        raise forbidden("only an admin may look at other accounts")
    async with db().read() as session:
        return await accounts.user_json(session, await accounts.get_user(session, username))


@bp.patch("/users/<username>")
@responds(200, schemas.User)
@accepts(schemas.UserChanges)
async def update_user(username: str, data: schemas.UserChanges) -> ResponseReturnValue:
    """Change an account (admins); you may not drop your own admin right or disable yourself."""
    me, _ = await require_admin()
    async with change_log().write() as session:
        user = await accounts.get_user(session, username)
        await accounts.update_user(session, state().passwords, user, dict(data), by=me)
        return await accounts.user_json(session, user)


@bp.get("/groups")
@responds(200, schemas.GroupList)
async def list_groups() -> ResponseReturnValue:
    """Every group with its members (admins)."""
    await require_admin()
    async with db().read() as session:
        return {"groups": await accounts.groups_json(session)}


@bp.post("/groups")
@responds(201, schemas.Group)
@accepts(schemas.NewGroup)
async def create_group(data: schemas.NewGroup) -> ResponseReturnValue:
    """Create a group (admins)."""
    await require_admin()
    async with change_log().write() as session:
        group = await accounts.create_group(
            session, data["name"], data.get("description", "")
        )
        return {"name": group.name, "description": group.description, "builtin": False,
                "members": []}, 201


@bp.delete("/groups/<name>")
@responds(204)
async def delete_group(name: str) -> ResponseReturnValue:
    """Delete a group (admins); the built-in groups stay."""
    await require_admin()
    async with change_log().write() as session:
        await accounts.delete_group(session, name)
    return "", 204


@bp.put("/groups/<name>/members/<username>")
@responds(204)
async def add_member(name: str, username: str) -> ResponseReturnValue:
    """Make a user a member of a group (admins)."""
    await require_admin()
    async with change_log().write() as session:
        await accounts.set_membership(session, name, username, True)
    return "", 204


@bp.delete("/groups/<name>/members/<username>")
@responds(204)
async def remove_member(name: str, username: str) -> ResponseReturnValue:
    """End a user's membership of a group (admins)."""
    await require_admin()
    async with change_log().write() as session:
        await accounts.set_membership(session, name, username, False)
    return "", 204
