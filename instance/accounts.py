"""Users, groups, browser sessions and API tokens. Used by the HTTP API and the CLI."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import bindparam, delete, exists, insert, select, update
from sqlalchemy.engine import Connection
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from instance import changelog
from instance.changelog import LogSession
from instance.clock import as_utc, now
from instance.db import execute
from instance.errors import ApiError, conflict, forbidden, invalid, not_found
from instance.models import ApiToken, Group, Session, User, user_groups
from instance.security import Passwords, check_password_strength, digest, new_api_token, new_secret
from protocol.timestamps import format_timestamp

_USERNAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
_GROUP_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9 _.-]{0,63}$")


def iso(dt: datetime | None) -> str | None:
    return None if dt is None else format_timestamp(as_utc(dt))


def check_username(username: Any) -> str:
    if not isinstance(username, str) or not _USERNAME_RE.match(username):
        raise invalid(
            "a username is 1 to 64 letters, digits, '.', '_' or '-', starting with a letter "
            f"or digit; got {username!r}"
        )
    return username


def check_password(password: Any) -> str:
    if not isinstance(password, str):
        raise invalid("password must be a string")
    reason = check_password_strength(password)
    if reason:
        raise invalid(reason)
    return password


# ---- users -----------------------------------------------------------------------------


async def get_user(session: AsyncSession, username: str) -> User:
    user = await session.scalar(select(User).where(User.username == username))
    if user is None:
        raise not_found(f"user {username!r}")
    return user


async def user_group_names(session: AsyncSession, user_id: int) -> list[str]:
    rows = await session.execute(
        select(Group.name)
        .join(user_groups, user_groups.c.group_id == Group.id)
        .where(user_groups.c.user_id == user_id)
        .order_by(Group.name)
    )
    return list(rows.scalars())


async def user_json(session: AsyncSession, user: User) -> dict[str, Any]:
    return {
        "id": user.id,
        "username": user.username,
        "display_name": user.display_name,
        "is_admin": user.is_admin,
        "disabled": user.disabled,
        "groups": await user_group_names(session, user.id),
        "created_at": iso(user.created_at),
    }


async def users_json(session: AsyncSession) -> list[dict[str, Any]]:
    """Every user as `user_json`, by username: the admin listing of the API and CLI."""
    users = (await session.execute(select(User).order_by(User.username))).scalars().all()
    return [await user_json(session, u) for u in users]


async def create_user(
    session: LogSession,
    passwords: Passwords,
    *,
    username: Any,
    password: Any,
    display_name: Any = "",
    is_admin: Any = False,
    groups: Any = (),
) -> User:
    username = check_username(username)
    password = check_password(password)
    if not isinstance(display_name, str) or len(display_name) > 200:
        raise invalid("display_name must be a string of at most 200 characters")
    if not isinstance(is_admin, bool):
        raise invalid("is_admin must be true or false")
    if await session.scalar(select(User.id).where(User.username == username)) is not None:
        raise conflict(f"a user named {username!r} already exists")
    user = User(
        username=username,
        display_name=display_name or username,
        password_hash=await passwords.hash(password),
        is_admin=is_admin,
        disabled=False,
        created_at=now(),
    )
    session.add(user)
    try:
        await session.flush()
    except IntegrityError:
        raise conflict(f"a user named {username!r} already exists") from None
    await set_user_groups(session, user, groups)
    return user


async def create_user_from(session: LogSession, passwords: Passwords, data: dict[str, Any]
                           ) -> User:
    """`create_user` from an API body: {username, password, display_name, is_admin, groups}."""
    allowed = {"username", "password", "display_name", "is_admin", "groups"}
    if set(data) - allowed:
        raise invalid(f"unknown member(s) {', '.join(sorted(set(data) - allowed))}")
    return await create_user(
        session, passwords, username=data.get("username"), password=data.get("password"),
        display_name=data.get("display_name", ""), is_admin=data.get("is_admin", False),
        groups=data.get("groups", []))


async def update_user(
    session: LogSession, passwords: Passwords, user: User, changes: dict[str, Any],
    *, by: User | None = None,
) -> User:
    """Apply an admin's ``changes`` to ``user``; ``by`` is that admin (None from the CLI,
    whose operator holds the database and may do anything)."""
    allowed = {"display_name", "password", "is_admin", "disabled", "groups"}
    unknown = set(changes) - allowed
    if unknown:
        raise invalid(
            f"unknown member(s) {', '.join(sorted(unknown))}; "
            f"a user has {', '.join(sorted(allowed))}"
        )
    if (by is not None and user.id == by.id
            and (changes.get("is_admin") is False or changes.get("disabled"))):
        # Else an instance can be left without anyone able to run it from the browser.
        raise forbidden("you may not remove your own admin right or disable yourself; "
                        "ask another admin")
    if "display_name" in changes:
        name = changes["display_name"]
        if not isinstance(name, str) or not name or len(name) > 200:
            raise invalid("display_name must be a string of 1 to 200 characters")
        user.display_name = name
    for flag in ("is_admin", "disabled"):
        if flag in changes:
            if not isinstance(changes[flag], bool):
                raise invalid(f"{flag} must be true or false")
            setattr(user, flag, changes[flag])
    if "password" in changes:
        user.password_hash = await passwords.hash(check_password(changes["password"]))
    if "password" in changes or changes.get("disabled"):
        # A new password or a disabled account ends every open session of that user,
        # live connections included.
        await session.execute(delete(Session).where(Session.user_id == user.id))
        await changelog.sessions_changed(session, now(), user.id)
    if "groups" in changes:
        await set_user_groups(session, user, changes["groups"])
    elif "is_admin" in changes:
        await changelog.rights_changed(session, now(), subject_id=user.id)
    await session.flush()
    return user


async def set_user_groups(session: LogSession, user: User, names: Any) -> None:
    if not isinstance(names, list | tuple) or not all(isinstance(n, str) for n in names):
        raise invalid("groups must be a list of group names")
    groups = await groups_by_name(session, names)
    builtin = [g.name for g in groups if g.builtin]
    if builtin:
        raise invalid(
            f"membership of {', '.join(builtin)} is implicit (Anonymous is everyone, "
            "Registered every logged-in user) and cannot be granted"
        )
    await session.execute(delete(user_groups).where(user_groups.c.user_id == user.id))
    if groups:
        await session.execute(
            insert(user_groups), [{"user_id": user.id, "group_id": g.id} for g in groups]
        )
    await changelog.rights_changed(session, now(), subject_id=user.id)


async def change_password(
    session: LogSession, passwords: Passwords, user: User, data: dict[str, Any],
    *, keep_session: str | None = None,
) -> None:
    """A user changes their own password, proving the current one. Every other browser
    session of theirs ends (live sockets included); ``keep_session``, the secret of the
    session that asked, stays open. API tokens stay: scripts hold them, not a browser
    someone may have left logged in."""
    allowed = {"old_password", "new_password"}
    unknown = set(data) - allowed
    if unknown:
        raise invalid(f"unknown member(s) {', '.join(sorted(unknown))}; "
                      "send old_password and new_password")
    old, new = data.get("old_password"), data.get("new_password")
    if not isinstance(old, str) or not old:
        raise invalid("old_password must be your current password")
    new = check_password(new)
    if not await passwords.verify(user.password_hash, old):
        raise ApiError(403, "wrong_password", "the current password is wrong")
    user.password_hash = await passwords.hash(new)
    ended = delete(Session).where(Session.user_id == user.id)
    if keep_session is not None:
        ended = ended.where(Session.token_hash != digest(keep_session))
    await session.execute(ended)
    await session.flush()
    await changelog.sessions_changed(session, now(), user.id, actor_id=user.id)


async def authenticate(
    session: AsyncSession, passwords: Passwords, username: Any, password: Any
) -> User:
    if not isinstance(username, str) or not isinstance(password, str):
        raise invalid("username and password must be strings")
    user = await session.scalar(select(User).where(User.username == username))
    ok = await passwords.verify(user.password_hash if user else None, password)
    if user is None or not ok:
        raise ApiError(401, "bad_credentials", "unknown username or wrong password")
    if user.disabled:
        raise ApiError(403, "account_disabled", "this account is disabled; ask an admin")
    return user


# ---- groups ----------------------------------------------------------------------------


async def groups_by_name(session: AsyncSession, names: Any) -> list[Group]:
    if not isinstance(names, list | tuple) or not all(isinstance(n, str) for n in names):
        raise invalid("groups must be a list of group names")
    wanted = list(dict.fromkeys(names))
    if not wanted:
        return []
    found = (await session.execute(select(Group).where(Group.name.in_(wanted)))).scalars().all()
    missing = set(wanted) - {g.name for g in found}
    if missing:
        raise invalid(f"no such group(s): {', '.join(sorted(missing))}")
    return list(found)


async def create_group(session: AsyncSession, name: Any, description: Any = "") -> Group:
    if not isinstance(name, str) or not _GROUP_RE.match(name):
        raise invalid(
            "a group name is 1 to 64 letters, digits, spaces, '.', '_' or '-', "
            f"starting with a letter or digit; got {name!r}"
        )
    if not isinstance(description, str) or len(description) > 500:
        raise invalid("description must be a string of at most 500 characters")
    if await session.scalar(select(Group.id).where(Group.name == name)) is not None:
        raise conflict(f"a group named {name!r} already exists")
    group = Group(name=name, description=description, builtin=False)
    session.add(group)
    await session.flush()
    return group


async def delete_group(session: LogSession, name: str) -> None:
    group = await session.scalar(select(Group).where(Group.name == name))
    if group is None:
        raise not_found(f"group {name!r}")
    if group.builtin:
        raise conflict(f"{name} is a built-in group and cannot be deleted")
    await session.delete(group)
    await changelog.rights_changed(session, now())


async def group_members(session: AsyncSession, group: Group) -> list[str]:
    rows = await session.execute(
        select(User.username)
        .join(user_groups, user_groups.c.user_id == User.id)
        .where(user_groups.c.group_id == group.id)
        .order_by(User.username)
    )
    return list(rows.scalars())


async def groups_json(session: AsyncSession) -> list[dict[str, Any]]:
    """Every group by name, with its members (None for the built-in groups, whose
    membership is implicit): the admin listing of the API and CLI."""
    groups = (await session.execute(select(Group).order_by(Group.name))).scalars().all()
    return [
        {"name": g.name, "description": g.description, "builtin": g.builtin,
         "members": None if g.builtin else await group_members(session, g)}
        for g in groups
    ]


async def set_membership(
    session: LogSession, group_name: str, username: str, member: bool
) -> bool:
    """Make ``username`` a member of the group or not; whether that changed anything."""
    group = await session.scalar(select(Group).where(Group.name == group_name))
    if group is None:
        raise not_found(f"group {group_name!r}")
    if group.builtin:
        raise conflict(f"membership of {group_name} is implicit and cannot be changed")
    user = await get_user(session, username)
    this = (user_groups.c.user_id == user.id) & (user_groups.c.group_id == group.id)
    was = await session.scalar(select(exists().where(this)))
    if bool(was) == member:
        return False
    if member:
        await session.execute(insert(user_groups).values(user_id=user.id, group_id=group.id))
    else:
        await session.execute(delete(user_groups).where(this))
    await changelog.rights_changed(session, now(), subject_id=user.id)
    return True


# ---- sessions and tokens ---------------------------------------------------------------


async def open_session(session: AsyncSession, user: User, ttl_seconds: int) -> str:
    token = new_secret()
    at = now()
    session.add(
        Session(
            token_hash=digest(token),
            user_id=user.id,
            created_at=at,
            expires_at=at + timedelta(seconds=ttl_seconds),
        )
    )
    # Expired sessions are swept on login rather than by a timer: cheap, and no task.
    await session.execute(delete(Session).where(Session.expires_at < at))
    return token


async def close_session(session: LogSession, token: str) -> None:
    user_id = await session.scalar(
        delete(Session).where(Session.token_hash == digest(token)).returning(Session.user_id)
    )
    if user_id is not None:
        await changelog.sessions_changed(session, now(), user_id, actor_id=user_id)


async def user_for_session(
    session: AsyncSession, token: str
) -> tuple[User, list[int], datetime] | None:
    """The session's user, the ids of the groups they joined and when the session
    expires, in one query."""
    found = await _credential_owner(session, Session, Session.expires_at, token)
    if found is None:
        return None
    user, expires_at, group_ids = found
    if as_utc(expires_at) <= now():
        return None
    return user, group_ids, as_utc(expires_at)


async def create_token(session: AsyncSession, user: User, name: Any) -> tuple[ApiToken, str]:
    if not isinstance(name, str) or not name.strip() or len(name) > 100:
        raise invalid("a token needs a name of 1 to 100 characters, to tell it apart later")
    secret = new_api_token()
    token = ApiToken(user_id=user.id, name=name, token_hash=digest(secret), created_at=now())
    session.add(token)
    await session.flush()
    return token, secret


async def user_for_token(
    session: AsyncSession, secret: str
) -> tuple[User, datetime | None, list[int]] | None:
    """The token's user, when the token was last used, and the user's group ids."""
    return await _credential_owner(session, ApiToken, ApiToken.last_used_at, secret)


async def _credential_owner(
    session: AsyncSession, kind: type[Session] | type[ApiToken], column: Any, secret: str
) -> tuple[User, Any, list[int]] | None:
    """The enabled user holding a session or token secret, that credential's `column`,
    and the user's group ids: one query, as every request asks it."""
    rows = (
        await session.execute(
            select(User, column, user_groups.c.group_id)
            .join(kind, kind.user_id == User.id)
            .outerjoin(user_groups, user_groups.c.user_id == User.id)
            .where(kind.token_hash == digest(secret))
        )
    ).all()
    if not rows or rows[0][0].disabled:
        return None
    return rows[0][0], rows[0][1], [gid for *_, gid in rows if gid is not None]


@dataclass(frozen=True)
class Holder:
    """The enabled user behind a credential, as plain columns: what a save needs to know
    of its caller, without loading an ORM object for every request."""

    id: int
    username: str
    is_admin: bool


def _holder_query(kind: type[Session] | type[ApiToken], column: Any) -> Any:
    users, table = User.__table__, kind.__table__
    return (select(users.c.id, users.c.username, users.c.is_admin, users.c.disabled, column,
                   user_groups.c.group_id)
            .select_from(table.join(users, table.c.user_id == users.c.id))
            .outerjoin(user_groups, user_groups.c.user_id == users.c.id)
            .where(table.c.token_hash == bindparam("h")))


# Prebuilt: every save runs one.
_HOLDER_OF_TOKEN = _holder_query(ApiToken, ApiToken.__table__.c.last_used_at)
_HOLDER_OF_SESSION = _holder_query(Session, Session.__table__.c.expires_at)


def holder_of(conn: Connection, via: str, secret: str
              ) -> tuple[Holder, Any, list[int]] | None:
    """As ``user_for_token`` (``via`` "token") or ``user_for_session`` ("session"), the
    user as a ``Holder``: one prebuilt Core query, on the save's sync connection."""
    query = _HOLDER_OF_TOKEN if via == "token" else _HOLDER_OF_SESSION
    rows = execute(conn, query, {"h": digest(secret)}).all()
    if not rows or rows[0].disabled:
        return None
    first = rows[0]
    column = list(first)[4]
    if via == "session" and as_utc(column) <= now():
        return None
    return (Holder(first.id, first.username, bool(first.is_admin)), column,
            [r.group_id for r in rows if r.group_id is not None])


_TOUCH = (update(ApiToken).where(ApiToken.token_hash == bindparam("h"))
          .values(last_used_at=bindparam("at")))


def touch_token_on(conn: Connection, token_hash: str) -> None:
    """Note that the token with this hash (``security.digest`` of it) was used now."""
    execute(conn, _TOUCH, {"h": token_hash, "at": now()})


async def touch_token(session: AsyncSession, token_hash: str) -> None:
    """``touch_token_on`` in an ORM transaction."""
    await session.run_sync(lambda s: touch_token_on(s.connection(), token_hash))


async def user_tokens(session: AsyncSession, user: User) -> list[ApiToken]:
    rows = await session.execute(
        select(ApiToken).where(ApiToken.user_id == user.id).order_by(ApiToken.id))
    return list(rows.scalars())


async def revoke_token(session: LogSession, user: User, token_id: int) -> None:
    """Revoke one of ``user``'s own tokens; another user's answers as a missing one."""
    deleted = await session.scalar(
        delete(ApiToken).where(ApiToken.id == token_id, ApiToken.user_id == user.id)
        .returning(ApiToken.id)
    )
    if deleted is None:
        raise not_found(f"token {token_id}")
    # Live sockets opened with this token close too.
    await changelog.sessions_changed(session, now(), user.id, actor_id=user.id)


def token_json(token: ApiToken) -> dict[str, Any]:
    return {
        "id": token.id,
        "name": token.name,
        "created_at": iso(token.created_at),
        "last_used_at": iso(token.last_used_at),
    }


@dataclass(frozen=True)
class Caller:
    """The authenticated user of a request (or None) and how they proved it."""

    user: User | None
    via: str  # "session", "token" or "anonymous"
