"""`fieldcast group …`: groups and their members."""

from __future__ import annotations

import argparse
from collections.abc import Mapping
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from instance import accounts
from instance.changelog import LogSession
from instance.cli.common import Subcommands, run, run_read, settings_for
from instance.db import Database


def cmd_group_add(args: argparse.Namespace, environ: Mapping[str, str]) -> None:
    async def work(db: Database, session: AsyncSession) -> None:
        await accounts.create_group(session, args.name, args.description or "")

    run(settings_for(args, environ), work)
    print(f"created group {args.name}")


def cmd_group_list(args: argparse.Namespace, environ: Mapping[str, str]) -> None:
    async def work(db: Database, session: AsyncSession) -> list[dict[str, Any]]:
        return await accounts.groups_json(session)

    for g in run_read(settings_for(args, environ), work):
        who = "(built-in)" if g["builtin"] else (", ".join(g["members"]) or "(no members)")
        print(f"{g['name']:<20} {who}")


def cmd_group_delete(args: argparse.Namespace, environ: Mapping[str, str]) -> None:
    async def work(db: Database, session: LogSession) -> None:
        await accounts.delete_group(session, args.name)

    run(settings_for(args, environ), work)
    print(f"deleted group {args.name}")


def cmd_group_member(args: argparse.Namespace, environ: Mapping[str, str]) -> None:
    add = args.action == "add-member"

    async def work(db: Database, session: LogSession) -> bool:
        return await accounts.set_membership(session, args.group, args.username, add)

    changed = run(settings_for(args, environ), work)
    if changed:
        print(f"{args.username} {'added to' if add else 'removed from'} {args.group}")
    else:
        print(f"{args.username} {'was already in' if add else 'was not in'} {args.group}; "
              "nothing changed")


def register(sub: Subcommands, common: argparse.ArgumentParser) -> None:
    group = sub.add_parser("group", help="manage groups").add_subparsers(
        dest="action", required=True, metavar="ACTION"
    )
    p = group.add_parser("add", parents=[common], help="add a group")
    p.add_argument("name")
    p.add_argument("--description")
    p.set_defaults(func=cmd_group_add)
    p = group.add_parser("list", parents=[common], help="list groups and members")
    p.set_defaults(func=cmd_group_list)
    p = group.add_parser("delete", parents=[common], help="delete a group")
    p.add_argument("name")
    p.set_defaults(func=cmd_group_delete)
    for action in ("add-member", "remove-member"):
        p = group.add_parser(action, parents=[common], help=f"{action.replace('-', ' ')}")
        p.add_argument("group")
        p.add_argument("username")
        p.set_defaults(func=cmd_group_member)
