"""What every command shares: its settings, its database session, its error, a password."""

from __future__ import annotations

import argparse
import asyncio
import getpass
import secrets
import sys
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from instance.changelog import ChangeLog, LogSession
from instance.config import Settings, load_settings
from instance.db import Database, migrate

# What each command module's register(sub, common) adds its commands to; `common` is
# the parent parser giving every command --data-dir and --config.
Subcommands = argparse._SubParsersAction


class CliError(Exception):
    """Printed as 'fieldcast: error: …' with exit status 2."""


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
