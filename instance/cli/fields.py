"""`fieldcast field …`: a tracker's fields, their options and their rights."""

from __future__ import annotations

import argparse
import json
from collections.abc import Mapping
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from instance import trackers
from instance.changelog import LogSession
from instance.cli.common import CliError, Subcommands, run, run_read, settings_for
from instance.db import Database


def _field_options(args: argparse.Namespace) -> dict[str, Any]:
    options: dict[str, Any] = {}
    if args.choices:
        options["choices"] = [c.strip() for c in args.choices.split(",") if c.strip()]
    if args.min is not None:
        options["min"] = args.min
    if args.max is not None:
        options["max"] = args.max
    if args.integer:
        options["integer"] = True
    if args.source:
        parts = args.source.rsplit("/", 2)
        if len(parts) != 3:
            raise CliError(
                "--source is INSTANCE_URL/TRACKER/FIELD, e.g. https://a.example/bugs/status"
            )
        options["source"] = {"instance": parts[0], "tracker": parts[1], "field": parts[2]}
    return options


def _rights_changes(args: argparse.Namespace) -> dict[str, Any]:
    """--read/--edit/--export/--partner as field members ([] for --read alone: admins)."""
    data: dict[str, Any] = {}
    if args.read is not None:
        data["read_groups"] = args.read
    if args.edit is not None:
        data["edit_groups"] = args.edit
    if args.export:
        data["export"] = {"mode": args.export, "partners": args.partner or []}
    return data


def cmd_field_add(args: argparse.Namespace, environ: Mapping[str, str]) -> None:
    data: dict[str, Any] = {"name": args.name, "type": args.type, "options": _field_options(args),
                            **_rights_changes(args)}
    if args.label:
        data["label"] = args.label

    async def work(db: Database, session: LogSession) -> None:
        tracker = await trackers.get_tracker(session, args.tracker)
        await trackers.create_field(session, tracker, data)

    run(settings_for(args, environ), work)
    print(f"added field {args.name} ({args.type}) to {args.tracker}")


def cmd_field_list(args: argparse.Namespace, environ: Mapping[str, str]) -> None:
    async def work(db: Database, session: AsyncSession) -> list[dict[str, Any]]:
        tracker = await trackers.get_tracker(session, args.tracker)
        names = await trackers.group_names(session)
        fields = await trackers.tracker_fields(session, tracker)
        return [
            {
                "name": f.name,
                "type": f.type,
                "options": f.options,
                "read": sorted(names[g] for g in f.read_group_ids),
                "edit": sorted(names[g] for g in f.edit_group_ids),
                "export": f.export_mode,
            }
            for f in fields
        ]

    for f in run_read(settings_for(args, environ), work):
        print(
            f"{f['name']:<16} {f['type']:<9} read: {', '.join(f['read']) or 'admins only':<22} "
            f"edit: {', '.join(f['edit']) or 'admins only':<22} export: {f['export']}"
            + (f"  options: {json.dumps(f['options'])}" if f["options"] else "")
        )


def cmd_field_rights(args: argparse.Namespace, environ: Mapping[str, str]) -> None:
    data = _rights_changes(args)
    if not data:
        raise CliError("say what to change: --read, --edit and/or --export")

    async def work(db: Database, session: LogSession) -> None:
        tracker = await trackers.get_tracker(session, args.tracker)
        await trackers.update_field(
            session, await trackers.get_field(session, tracker, args.name), data
        )

    run(settings_for(args, environ), work)
    print(f"updated field {args.name} of {args.tracker}")


def register(sub: Subcommands, common: argparse.ArgumentParser) -> None:
    field = sub.add_parser("field", help="manage fields").add_subparsers(
        dest="action", required=True, metavar="ACTION"
    )
    p = field.add_parser(
        "add",
        parents=[common],
        help="add a field to a tracker",
        description="Add a field. Without --read/--edit, every logged-in user "
        "(group Registered) may read and edit it. Give --read with no group to "
        "make it admins-only.",
    )
    p.add_argument("tracker")
    p.add_argument("name")
    p.add_argument(
        "--type",
        default="text",
        choices=["text", "textarea", "number", "dropdown", "date", "user", "remote"],
    )
    p.add_argument("--label")
    p.add_argument("--choices", help="dropdown choices, comma-separated")
    p.add_argument("--min", type=float)
    p.add_argument("--max", type=float)
    p.add_argument("--integer", action="store_true", help="number: whole numbers only")
    p.add_argument("--source", help="remote: INSTANCE_URL/TRACKER/FIELD it mirrors")
    p.add_argument("--read", nargs="*", metavar="GROUP", help="groups that may read it")
    p.add_argument("--edit", nargs="*", metavar="GROUP", help="groups that may edit it")
    p.add_argument("--export", choices=["none", "partners", "public"])
    p.add_argument("--partner", action="append", help="a partner instance URL (repeatable)")
    p.set_defaults(func=cmd_field_add)
    p = field.add_parser("list", parents=[common], help="list a tracker's fields and rights")
    p.add_argument("tracker")
    p.set_defaults(func=cmd_field_list)
    p = field.add_parser("rights", parents=[common], help="change who reads/edits/exports it")
    p.add_argument("tracker")
    p.add_argument("name")
    p.add_argument("--read", nargs="*", metavar="GROUP")
    p.add_argument("--edit", nargs="*", metavar="GROUP")
    p.add_argument("--export", choices=["none", "partners", "public"])
    p.add_argument("--partner", action="append")
    p.set_defaults(func=cmd_field_rights)
