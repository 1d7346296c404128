"""`fieldcast init` and `fieldcast migrate`: the data directory and the database."""

from __future__ import annotations

import argparse
from collections.abc import Mapping
from pathlib import Path

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from instance import accounts
from instance.changelog import LogSession
from instance.cli.common import (
    CliError,
    Subcommands,
    describe_db,
    migrate_only,
    read_password,
    run,
    run_read,
    settings_for,
)
from instance.cli.keys import ensure_keys
from instance.config import (
    ENV_PREFIX,
    Settings,
    base_url_for_bind,
    bind_address,
    locate,
    render_toml,
    unreachable_base_url,
)
from instance.db import Database
from instance.models import User
from instance.security import Passwords


def _settings(args: argparse.Namespace, environ: Mapping[str, str], config_path: Path
              ) -> Settings:
    """The settings init sets up, with base_url and bind that agree.

    A config file is written once: options that contradict an existing one are
    refused rather than silently ignored. Without --base-url (or FIELDCAST_BASE_URL) the
    base URL is the bind's own address; a bind on every address names none, so there
    the public URL must be given.
    """
    given = {"base_url": args.base_url, "database_url": args.database_url,
             "instance_name": args.instance_name, "bind": args.bind}
    settings = settings_for(args, environ, **given)
    if config_path.exists():
        on_file = settings_for(args, environ)
        for name, value in given.items():
            if value is not None and getattr(settings, name) != getattr(on_file, name):
                raise CliError(
                    f"{config_path} already sets {name} = {getattr(on_file, name)!r}, not "
                    f"{value!r}: init writes that file once; edit it to change a setting")
    elif args.base_url is None and f"{ENV_PREFIX}BASE_URL" not in environ:
        derived = base_url_for_bind(settings.bind)
        if derived is None:
            port = bind_address(settings.bind)[1]
            raise CliError(
                f"--bind {settings.bind} listens on every address, so it names no URL for "
                "links and federation: give the public one with --base-url (for example "
                f"https://tracker.example.org, or http://THIS-HOST:{port})")
        settings = settings.replace(base_url=derived)
    problem = unreachable_base_url(settings)
    if problem:
        raise CliError(problem)
    return settings


def cmd_init(args: argparse.Namespace, environ: Mapping[str, str]) -> None:
    where = locate(environ=environ, data_dir=args.data_dir, config_file=args.config)
    settings = _settings(args, environ, where.config_file)
    data_dir = settings.data_dir
    data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    config_path = where.config_file
    if not config_path.exists():
        config_path.write_text(render_toml(settings))
        print(f"wrote {config_path}")
    # With --exist-ok a database that already has an admin is fine: this is a restart,
    # or another node's data directory for a shared PostgreSQL database.
    if args.exist_ok and run_read(settings, _has_admin):
        ensure_keys(settings)
        print(f"the database ({describe_db(settings)}) is already set up; nothing to do")
        return
    password, generated = read_password(args, generate=True)
    reason = accounts.check_password_strength(password)
    if reason:
        raise CliError(reason)

    async def work(db: Database, session: LogSession) -> None:
        if await _has_admin(db, session):
            raise CliError(
                f"{data_dir} is already set up (it has an admin); "
                "use `fieldcast user add NAME --admin` for another admin"
            )
        await accounts.create_user(
            session, Passwords(settings), username=args.admin, password=password, is_admin=True
        )

    run(settings, work)
    ensure_keys(settings)
    print(f"database ready: {describe_db(settings)}")
    print(f"admin user: {args.admin}")
    if generated:
        print(
            f"admin password: {password}   (shown once; change it with "
            f"`fieldcast user set-password {args.admin}`)"
        )
    print(f"next: fieldcast serve --data-dir {data_dir}")


async def _has_admin(db: Database, session: AsyncSession) -> bool:
    return await session.scalar(select(User.id).where(User.is_admin.is_(True))) is not None


def cmd_migrate(args: argparse.Namespace, environ: Mapping[str, str]) -> None:
    settings = settings_for(args, environ)
    migrate_only(settings)
    print(f"database is up to date: {describe_db(settings)}")


def register(sub: Subcommands, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser(
        "init",
        parents=[common],
        help="create the database and the first admin",
        description="Create the data directory, its config file, the database "
        "schema and the first admin. Without a terminal or --password-stdin a "
        "random admin password is generated and printed once.",
    )
    p.add_argument("--admin", default="admin", help="the first admin's username (default admin)")
    p.add_argument("--password-stdin", action="store_true", help="read the password from stdin")
    p.add_argument("--base-url", help="the public URL, e.g. https://tracker.example.org "
                   "(default: http://BIND, the address --bind gives)")
    p.add_argument(
        "--database-url",
        help="PostgreSQL: postgresql+asyncpg://user@host/db "
        "(default: SQLite in the data directory)",
    )
    p.add_argument("--instance-name", help="a name for this instance")
    p.add_argument("--bind", help="host:port to serve on (default 127.0.0.1:8000); one on "
                   "every address (0.0.0.0:8000) needs --base-url")
    p.add_argument("--exist-ok", action="store_true",
                   help="succeed without creating an admin if the database already has one")
    p.set_defaults(func=cmd_init, creates_instance=True)

    p = sub.add_parser("migrate", parents=[common], help="apply pending database migrations")
    p.set_defaults(func=cmd_migrate)
