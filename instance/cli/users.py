"""`fieldcast user …`: accounts."""

from __future__ import annotations

import argparse
from collections.abc import Mapping
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from instance import accounts
from instance.changelog import LogSession
from instance.cli.common import CliError, Subcommands, read_password, run, run_read, settings_for
from instance.db import Database
from instance.security import Passwords


def cmd_user_add(args: argparse.Namespace, environ: Mapping[str, str]) -> None:
    settings = settings_for(args, environ)
    password, generated = read_password(args, generate=True)

    async def work(db: Database, session: LogSession) -> None:
        await accounts.create_user(
            session,
            Passwords(settings),
            username=args.username,
            password=password,
            is_admin=args.admin,
            display_name=args.display_name or "",
            groups=args.group or [],
        )

    run(settings, work)
    print(f"created user {args.username}" + (" (admin)" if args.admin else ""))
    if generated:
        print(f"password: {password}   (shown once)")


def cmd_user_list(args: argparse.Namespace, environ: Mapping[str, str]) -> None:
    async def work(db: Database, session: AsyncSession) -> list[dict[str, Any]]:
        return await accounts.users_json(session)

    for u in run_read(settings_for(args, environ), work):
        flags = ", ".join(
            f for f, on in (("admin", u["is_admin"]), ("disabled", u["disabled"])) if on
        )
        groups = ", ".join(u["groups"]) or "-"
        print(f"{u['username']:<20} groups: {groups}" + (f"  [{flags}]" if flags else ""))


def _user_update(args: argparse.Namespace, environ: Mapping[str, str],
                 changes: dict[str, Any], done: str) -> None:
    settings = settings_for(args, environ)

    async def work(db: Database, session: LogSession) -> None:
        user = await accounts.get_user(session, args.username)
        await accounts.update_user(session, Passwords(settings), user, changes)

    run(settings, work)
    print(done)


def cmd_user_set_password(args: argparse.Namespace, environ: Mapping[str, str]) -> None:
    password, _ = read_password(args, generate=False)
    _user_update(
        args, environ,
        {"password": password},
        f"password of {args.username} changed; their sessions are closed",
    )


def cmd_user_set(args: argparse.Namespace, environ: Mapping[str, str]) -> None:
    changes: dict[str, Any] = {}
    if args.admin is not None:
        changes["is_admin"] = args.admin == "yes"
    if args.disabled is not None:
        changes["disabled"] = args.disabled == "yes"
    if not changes:
        raise CliError("say what to change: --admin yes|no and/or --disabled yes|no")
    _user_update(args, environ, changes, f"updated {args.username}: {changes}")


def register(sub: Subcommands, common: argparse.ArgumentParser) -> None:
    user = sub.add_parser("user", help="manage users").add_subparsers(
        dest="action", required=True, metavar="ACTION"
    )
    p = user.add_parser("add", parents=[common], help="add a user")
    p.add_argument("username")
    p.add_argument("--admin", action="store_true", help="make the user an admin")
    p.add_argument("--display-name")
    p.add_argument("--group", action="append", help="a group to join (repeatable)")
    p.add_argument("--password-stdin", action="store_true")
    p.set_defaults(func=cmd_user_add)
    p = user.add_parser("list", parents=[common], help="list users")
    p.set_defaults(func=cmd_user_list)
    p = user.add_parser("set-password", parents=[common], help="change a password")
    p.add_argument("username")
    p.add_argument("--password-stdin", action="store_true")
    p.set_defaults(func=cmd_user_set_password)
    p = user.add_parser("set", parents=[common], help="grant/revoke admin, disable/enable")
    p.add_argument("username")
    p.add_argument("--admin", choices=["yes", "no"])
    p.add_argument("--disabled", choices=["yes", "no"])
    p.set_defaults(func=cmd_user_set)
