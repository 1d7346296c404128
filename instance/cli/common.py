"""What every command shares: its settings, its database session, its error, a password,
and the check that the data directory is an instance at all."""

from __future__ import annotations

import argparse
import asyncio
import getpass
import secrets
import shlex
import sys
from collections.abc import Awaitable, Callable, Mapping
from pathlib import Path
from typing import Any

from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncSession

from instance.changelog import ChangeLog, LogSession
from instance.config import CONFIG_FILENAME, Settings, load_settings, locate
from instance.db import Database, current_revision, known_revision, migrate

# What each command module's register(sub, common) adds its commands to; `common` is
# the parent parser giving every command --data-dir and --config.
Subcommands = argparse._SubParsersAction


class CliError(Exception):
    """Printed as 'fieldcast: error: …' with exit status 2."""


def init_hint(data_dir: Path, what: str = "create one") -> str:
    return f"{what} with: fieldcast init --data-dir {shlex.quote(str(data_dir))}"


def check_instance(args: argparse.Namespace, environ: Mapping[str, str]) -> None:
    """Refuse, in one line, to run a command on a directory that `fieldcast init` did not
    make: without this, the first database access created an empty SQLite database
    there (no config, keys or admin), or failed with a traceback for a missing one.
    Called for every command but those that make an instance (`init`, `demo`), before
    anything is read, asked or created. The database must exist (on SQLite) and carry
    the schema at a migration this code knows; an older one is migrated by the command
    as before."""
    where = locate(environ=environ, data_dir=args.data_dir, config_file=args.config)
    # First what the settings themselves get wrong (a misspelt variable, a bad file).
    settings = settings_for(args, environ)
    if not where.config_given:
        if not where.data_dir.exists():
            why = "no such directory"
        elif not where.data_dir.is_dir():
            why = "not a directory"
        elif not where.config_file.is_file():
            why = f"no {CONFIG_FILENAME}"
        else:
            why = ""
        if why:
            raise CliError(f"{where.data_dir} is not a fieldcast instance ({why}); "
                           + init_hint(where.data_dir))
    # The file may name the data directory (or --config may stand for it).
    if not settings.data_dir.is_dir():
        raise CliError(f"{settings.data_dir} is not a fieldcast instance (no such "
                       "directory); " + init_hint(settings.data_dir))
    _check_database(settings)


def settings_for(args: argparse.Namespace, environ: Mapping[str, str], **overrides: Any
                 ) -> Settings:
    """The settings for this run: --data-dir/--config, the environment, then `overrides`
    (command-line options; None means not given)."""
    return load_settings(data_dir=args.data_dir, config_file=args.config, environ=environ,
                         overrides=overrides)


def read_password(args: argparse.Namespace, *, generate: bool) -> tuple[str, bool]:
    """(password, generated). From stdin with --password-stdin, a prompt on a terminal,
    or — where allowed — a random one that is printed once."""
    if getattr(args, "password_stdin", False):
        password = sys.stdin.readline().rstrip("\n")
        if not password:
            raise CliError("--password-stdin: standard input gave an empty line")
        return password, False
    if sys.stdin.isatty():
        first = getpass.getpass("Password: ")
        if first != getpass.getpass("Again: "):
            raise CliError("the two passwords differ")
        return first, False
    if generate:
        return secrets.token_urlsafe(12), True
    raise CliError("no terminal to ask for a password: pass it with --password-stdin")


async def with_db(settings: Settings, work: Callable[[Database], Awaitable[Any]]) -> Any:
    db = Database(settings.effective_database_url)
    try:
        return await work(db)
    finally:
        await db.dispose()


def _check_database(settings: Settings) -> None:
    """The database is one `fieldcast init` set up, at a migration this code knows."""
    not_set_up = (f"{settings.data_dir} is not set up; "
                  + init_hint(settings.data_dir, "set it up"))
    if settings.is_sqlite:
        path = Path(describe_db(settings))
        # Checked before any engine exists: SQLite would create a missing file on the
        # first connect, and write its header into an empty one.
        if not path.is_file():
            raise CliError(f"the database {path} does not exist, so {not_set_up}")
        if path.stat().st_size == 0:
            raise CliError(f"the database {path} is an empty file, so {not_set_up}")
    revision = asyncio.run(_revision(settings))
    if revision is None:
        raise CliError(f"the database {describe_db(settings)} has no fieldcast schema, so "
                       + not_set_up)
    if not known_revision(revision):
        raise CliError(f"the database {describe_db(settings)} is at migration {revision}, "
                       "which this version of fieldcast does not know (a newer version "
                       "made it?)")


async def _revision(settings: Settings) -> str | None:
    db = Database(settings.effective_database_url)
    try:
        return await current_revision(db.engine)
    except (DBAPIError, OSError) as exc:
        raise CliError(f"cannot read the database {describe_db(settings)}: "
                       f"{one_line(exc)}") from None
    finally:
        await db.dispose()


def one_line(exc: BaseException) -> str:
    """An exception as one line; a driver's error rather than SQLAlchemy's wrapping of it
    (which adds the statement and a link over several lines)."""
    inner = getattr(exc, "orig", None) or exc
    text = str(inner).strip() or type(inner).__name__
    return text.splitlines()[0]


def run(settings: Settings, work: Callable[[Database, LogSession], Awaitable[Any]]) -> Any:
    """Run `work` in one write transaction on a migrated database."""
    async def inner(db: Database) -> Any:
        await migrate(db.engine)
        async with ChangeLog(db).write() as session:
            return await work(db, session)

    return asyncio.run(with_db(settings, inner))


def run_read(settings: Settings, work: Callable[[Database, AsyncSession], Awaitable[Any]]) -> Any:
    """Run `work` in one read transaction on a migrated database."""
    async def inner(db: Database) -> Any:
        await migrate(db.engine)
        async with db.read() as session:
            return await work(db, session)

    return asyncio.run(with_db(settings, inner))


def migrate_only(settings: Settings) -> None:
    asyncio.run(with_db(settings, lambda db: migrate(db.engine)))


def describe_db(settings: Settings) -> str:
    """The database for people: a SQLite file's path, or PostgreSQL's host/db (no user)."""
    url = settings.effective_database_url
    if settings.is_sqlite:
        return url.split(":///", 1)[1]
    return url.split("@")[-1]
