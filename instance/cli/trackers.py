"""`fieldcast tracker …`: trackers."""

from __future__ import annotations

import argparse
from collections.abc import Mapping

from sqlalchemy.ext.asyncio import AsyncSession

from instance import trackers
from instance.cli.common import Subcommands, run, run_read, settings_for
from instance.db import Database
from instance.rights import Principal

# Whoever runs the CLI on the instance's own data directory administers it.
OPERATOR = Principal(user_id=None, username=None, is_admin=True, group_ids=frozenset())


def cmd_tracker_add(args: argparse.Namespace, environ: Mapping[str, str]) -> None:
    data = {
        "slug": args.slug,
        "name": args.name or args.slug,
        "description": args.description or "",
        "require_if_match": args.require_if_match,
    }

    async def work(db: Database, session: AsyncSession) -> None:
        await trackers.create_tracker(session, data)

    run(settings_for(args, environ), work)
    print(f"created tracker {args.slug}")


def cmd_tracker_list(args: argparse.Namespace, environ: Mapping[str, str]) -> None:
    async def work(db: Database, session: AsyncSession) -> list[tuple[str, str, int]]:
        shown = await trackers.visible_trackers(session, OPERATOR)
        return [(t.slug, t.name, len(fields)) for t, fields in shown]

    for slug, name, count in run_read(settings_for(args, environ), work):
        print(f"{slug:<20} {name}  ({count} fields)")


def register(sub: Subcommands, common: argparse.ArgumentParser) -> None:
    tracker = sub.add_parser("tracker", help="manage trackers").add_subparsers(
        dest="action", required=True, metavar="ACTION"
    )
    p = tracker.add_parser("add", parents=[common], help="add a tracker")
    p.add_argument("slug", help="short name used in URLs: lowercase letters, digits, _")
    p.add_argument("--name", help="display name")
    p.add_argument("--description")
    p.add_argument(
        "--require-if-match",
        action="store_true",
        help="refuse saves without If-Match (428) instead of last-write-wins",
    )
    p.set_defaults(func=cmd_tracker_add)
    p = tracker.add_parser("list", parents=[common], help="list trackers")
    p.set_defaults(func=cmd_tracker_list)
