"""What every request handler needs: the app's state, the caller, the JSON body."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any
from urllib.parse import urlsplit

from quart import current_app, g, request
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import AsyncSession

from instance import accounts, jsonbody
from instance.accounts import Holder, as_utc, now
from instance.changelog import ChangeLog
from instance.config import Settings
from instance.db import Database
from instance.errors import ApiError
from instance.models import User
from instance.rights import Principal, builtin_group_ids, principal_from
from instance.security import SESSION_COOKIE, TOKEN_PREFIX, Passwords, digest
from instance.throttle import LoginThrottle
from keys.store import KeyStore, KeyStoreError

STATE_KEY = "fieldcast"
log = logging.getLogger("fieldcast.web")


@dataclass
class AppState:
    settings: Settings
    db: Database
    change_log: ChangeLog
    passwords: Passwords
    login_throttle: LoginThrottle
    keys: KeyStore | None = None
    _builtin: dict[str, int] | None = None

    def current_keys(self) -> KeyStore | None:
        """The signing keys, read again first when ``fieldcast keys rotate`` changed them
        on disk while this process serves (a stat per call otherwise)."""
        if self.keys is not None:
            try:
                if self.keys.reload_if_changed():
                    log.info("signing keys reloaded from %s", self.keys.directory)
            except KeyStoreError as exc:
                log.error("keeping the signing keys held so far: %s", exc)
        return self.keys

    def builtin_known(self) -> dict[str, int] | None:
        """The built-in groups' ids, if this process has read them yet."""
        return self._builtin

    async def builtin_groups(self, session: AsyncSession) -> dict[str, int]:
        # Built-in groups can be neither renamed nor deleted, so their ids never change.
        if self._builtin is None:
            self._builtin = await builtin_group_ids(session)
        return self._builtin


def state() -> AppState:
    return current_app.extensions[STATE_KEY]


def db() -> Database:
    return state().db


def change_log() -> ChangeLog:
    return state().change_log


@dataclass(frozen=True)
class Identity:
    """Who presented which credential: what both requests and sockets need to know."""

    user: User | None
    member_of: list[int]
    via: str  # "session", "token" or "anonymous"
    credential: tuple[str, str] | None = None  # (via, hash of the secret)
    expires_at: datetime | None = None  # sessions end by themselves; tokens do not
    last_used: datetime | None = None  # tokens only
    holder: Holder | None = None  # instead of ``user``, when identified ``lean``


ANONYMOUS = Identity(None, [], "anonymous")


def _bad_token() -> ApiError:
    return ApiError(401, "bad_token", "this API token is unknown, revoked, or belongs to a "
                    "disabled account")


async def identify(session: AsyncSession, authorization: str, cookie: str | None
                   ) -> Identity:
    """The user behind an ``Authorization`` header or a session cookie.

    A bearer token that is malformed or unknown is an error (401): a script that sent
    one must hear so. A stale session cookie is not: the browser is simply logged out.
    """
    if authorization:
        secret = _token_secret(authorization)
        found = await accounts.user_for_token(session, secret)
        if found is None:
            raise _bad_token()
        user, last_used, member_of = found
        return Identity(user, member_of, "token", ("token", digest(secret)),
                        last_used=last_used)
    if cookie and (logged_in := await accounts.user_for_session(session, cookie)) is not None:
        user, member_of, expires_at = logged_in
        return Identity(user, member_of, "session", ("session", digest(cookie)),
                        expires_at=expires_at)
    return ANONYMOUS


def _token_secret(authorization: str) -> str:
    scheme, _, secret = authorization.partition(" ")
    secret = secret.strip()
    if scheme.lower() != "bearer" or not secret.startswith(TOKEN_PREFIX):
        raise ApiError(401, "bad_token", "Authorization must be 'Bearer fc_…' "
                       "with an API token from POST /api/tokens")
    return secret


def _identify_lean(conn: Connection, authorization: str, cookie: str | None) -> Identity:
    """``identify`` on a sync connection, the user as a ``Holder`` (columns, no ORM
    object), in ``holder``."""
    if authorization:
        secret = _token_secret(authorization)
        found = accounts.holder_of(conn, "token", secret)
        if found is None:
            raise _bad_token()
        holder, last_used, member_of = found
        return Identity(None, member_of, "token", ("token", digest(secret)),
                        last_used=last_used, holder=holder)
    if cookie and (found := accounts.holder_of(conn, "session", cookie)) is not None:
        holder, expires_at, member_of = found
        return Identity(None, member_of, "session", ("session", digest(cookie)),
                        expires_at=as_utc(expires_at), holder=holder)
    return ANONYMOUS


def same_origin(origin: str | None, host: str) -> bool:
    """Whether a request's ``Origin`` is this instance (or absent, as from scripts).

    Cookies ride along on cross-site requests, so whatever a cookie authorizes checks
    this: a state-changing request or a socket from another site is a forgery.
    """
    return _same_origin(origin, host, state().settings.base_url)


def _same_origin(origin: str | None, host: str, base_url: str) -> bool:
    if origin is None:
        return True
    own, theirs = urlsplit(base_url), urlsplit(origin)
    return (theirs.scheme, theirs.netloc) == (own.scheme, own.netloc) or theirs.netloc == host


SAFE_METHODS = ("GET", "HEAD", "OPTIONS")


async def caller() -> tuple[User | None, Principal]:
    """The user behind this request and their groups: one query, once per request."""
    if "fc_principal" in g:
        return g.fc_user, g.fc_principal
    async with db().read() as session:
        who = await _identify_request(session)
        builtin = await state().builtin_groups(session)
    if _touch_due(who):
        assert who.credential is not None
        async with db().write() as session:
            await accounts.touch_token(session, who.credential[1])
    return _admit(who, builtin)


@dataclass(frozen=True)
class Writer:
    """Who sends a write, as far as the request tells, taken on the event loop: the
    write's own transaction identifies them (``principal``), on SQLite on the writer
    thread, where there is no request context."""

    authorization: str
    cookie: str | None
    origin: str | None
    host: str
    base_url: str
    builtin: dict[str, int]

    def principal(self, conn: Connection) -> Principal:
        """The caller, read and a token's use noted in the write's transaction instead
        of in two of their own, as columns, not ORM objects (bench/writes.py: the
        caller's read transaction and ORM load cost about a fifth of a save). No ORM
        user is loaded: a later ``caller`` in the request reads its own."""
        who = _identify_lean(conn, self.authorization, self.cookie)
        if who.via == "session" and not _same_origin(self.origin, self.host, self.base_url):
            raise _cross_origin(self.origin)
        if who.via == "anonymous" and self.cookie:
            raise _ended()
        if _touch_due(who):
            assert who.credential is not None
            accounts.touch_token_on(conn, who.credential[1])
        return principal_from(who.holder, who.member_of, self.builtin)


async def writer() -> Writer:
    """The sender of this request, a write (see ``Writer``)."""
    builtin = state().builtin_known()
    if builtin is None:  # once a process
        async with db().read() as session:
            builtin = await state().builtin_groups(session)
    return Writer(request.headers.get("Authorization", ""),
                  request.cookies.get(SESSION_COOKIE), request.headers.get("Origin"),
                  request.headers.get("Host", ""), state().settings.base_url, builtin)


async def _identify_request(session: AsyncSession) -> Identity:
    return await identify(session, request.headers.get("Authorization", ""),
                          request.cookies.get(SESSION_COOKIE))


def _touch_due(who: Identity) -> bool:
    # At most one write per token per minute: a busy script should not turn every
    # read into a write.
    return who.via == "token" and (who.last_used is None
                                   or now() - as_utc(who.last_used) > timedelta(minutes=1))


def _admit(who: Identity, builtin: dict[str, int]) -> tuple[User | None, Principal]:
    principal = _check(who, principal_from(who.user, who.member_of, builtin))
    g.fc_user, g.fc_principal, g.fc_via = who.user, principal, who.via
    g.fc_session_ended = _session_ended(who)
    return who.user, principal


def _session_ended(who: Identity) -> bool:
    # A cookie that names no live session: the browser thinks it is logged in.
    return who.via == "anonymous" and bool(request.cookies.get(SESSION_COOKIE))


def _check(who: Identity, principal: Principal) -> Principal:
    if who.via == "session" and request.method not in SAFE_METHODS:
        origin = request.headers.get("Origin")
        # Our JSON-only bodies stop plain forms; this stops the rest.
        if not same_origin(origin, request.headers.get("Host", "")):
            raise _cross_origin(origin)
    return principal


def _cross_origin(origin: str | None) -> ApiError:
    return ApiError(403, "cross_origin",
                    f"requests from {origin} may not use this instance's login cookie")


def _refuse_ended_session() -> None:
    """A write sent with an ended session's cookie is refused as such (401), before any
    lookup: answering as the anonymous caller it became would say "no such field", and
    the user would not learn that logging in again is all it takes. Reads stay anonymous
    (a logged-out browser simply browses), and a caller with no cookie hears nothing new.
    """
    if g.get("fc_session_ended") and request.method not in SAFE_METHODS:
        raise _ended()


def _ended() -> ApiError:
    return ApiError(401, "session_ended", "your session ended (logged out, expired, or the "
                    "password changed); log in again")


async def principal() -> Principal:
    who = (await caller())[1]
    _refuse_ended_session()
    return who


async def require_login() -> tuple[User, Principal]:
    user, who = await caller()
    _refuse_ended_session()
    if user is None:
        raise ApiError(401, "login_required", "log in (POST /api/login) or send an API token")
    return user, who


async def require_admin() -> tuple[User, Principal]:
    user, who = await require_login()
    if not who.is_admin:
        raise ApiError(403, "admin_required", "only an admin may do this")
    return user, who


async def json_body() -> dict[str, Any]:
    if not request.is_json:
        raise ApiError(
            415,
            "unsupported_media_type",
            "send the body as JSON with Content-Type: application/json",
        )
    raw = await request.get_data(cache=True, as_text=False)
    assert isinstance(raw, bytes)
    data = jsonbody.parse(raw)
    if not isinstance(data, dict):
        raise ApiError(422, "invalid", "the body must be a JSON object")
    return data


# The largest id or count the database holds (a signed 64-bit integer on PostgreSQL).
MAX_INT = 2**63 - 1


def int_arg(name: str, default: int, *, minimum: int = 0, maximum: int = MAX_INT) -> int:
    raw = request.args.get(name)
    if raw is None:
        return default
    try:
        # Digits only: int() also takes "1_000", " 7 " and other scripts' digits.
        if not raw.isascii() or not raw.lstrip("-").isdigit() or len(raw) > 20:
            raise ValueError(raw)
        value = int(raw)
    except ValueError:
        raise ApiError(
            400, "bad_query", f"query parameter {name} must be a whole number, got {raw!r}"
        ) from None
    if not minimum <= value <= maximum:
        raise ApiError(
            400, "bad_query",
            f"query parameter {name} must be between {minimum} and {maximum}, got {value}",
        )
    return value
