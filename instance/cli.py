"""The `fieldcast` command: set up an instance, serve it, and administer it."""

from __future__ import annotations

import argparse
import asyncio
import getpass
import json
import os
import secrets
import signal
import sys
import time
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from instance import accounts, trackers
from instance.config import CONFIG_FILENAME, ConfigError, Settings, load_settings, render_toml
from instance.db import Database, migrate
from instance.errors import ApiError
from instance.models import Group, Tracker, User
from instance.rights import load_fields
from instance.security import Passwords
from keys.store import KeyStore, KeyStoreError

EPILOG = """\
Start here:
  fieldcast init --data-dir ./data            create the database and the first admin
  fieldcast serve --data-dir ./data           serve it at http://127.0.0.1:8000

Then, for example:
  fieldcast group add Staff
  fieldcast user add alice --group Staff
  fieldcast tracker add bugs --name "Bugs"
  fieldcast field add bugs status --type dropdown --choices open,closed
  fieldcast field add bugs notes --type textarea --read Staff --edit Staff

Settings come from DATA_DIR/fieldcast.toml, then FIELDCAST_<NAME> environment variables
(FIELDCAST_DATABASE_URL=postgresql+asyncpg://user@host/db for PostgreSQL).
"""


class CliError(Exception):
    """Printed as 'fieldcast: error: …' with exit status 2."""


# ---- helpers -----------------------------------------------------------------------------


def _settings(args: argparse.Namespace, **overrides: Any) -> Settings:
    return load_settings(data_dir=args.data_dir, config_file=args.config, environ=os.environ,
                         overrides=overrides)


def _read_password(args: argparse.Namespace, *, generate: bool) -> tuple[str, bool]:
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


async def _with_db(settings: Settings, work: Callable[[Database], Awaitable[Any]]) -> Any:
    db = Database(settings.effective_database_url)
    try:
        return await work(db)
    finally:
        await db.dispose()


def _run(
    settings: Settings,
    work: Callable[[Database, AsyncSession], Awaitable[Any]],
    *,
    write: bool = True,
) -> Any:
    async def inner(db: Database) -> Any:
        await migrate(db.engine)
        async with db.write() if write else db.read() as session:
            return await work(db, session)

    return asyncio.run(_with_db(settings, inner))


# ---- init, migrate, serve ----------------------------------------------------------------


def cmd_init(args: argparse.Namespace) -> None:
    data_dir = Path(args.data_dir or os.environ.get("FIELDCAST_DATA_DIR") or "data")
    data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    config_path = Path(args.config) if args.config else data_dir / CONFIG_FILENAME
    overrides = {
        "base_url": args.base_url,
        "database_url": args.database_url,
        "instance_name": args.instance_name,
        "bind": args.bind,
    }
    settings = load_settings(data_dir=data_dir, config_file=args.config, environ=os.environ,
                             overrides=overrides)
    if not config_path.exists():
        config_path.write_text(render_toml(settings))
        print(f"wrote {config_path}")
    # With --exist-ok a database that already has an admin is fine: this is a restart,
    # or another node's data directory for a shared PostgreSQL database.
    if args.exist_ok and _run(settings, _has_admin, write=False):
        keys = KeyStore(data_dir / "keys")
        if not keys.exists():
            keys.generate(time.time())
            print(f"signing keys (Ed25519 and RSA-2048, mode 0600) in {keys.directory}")
        print(f"the database ({_describe_db(settings)}) is already set up; nothing to do")
        return
    password, generated = _read_password(args, generate=True)
    reason = accounts.check_password_strength(password)
    if reason:
        raise CliError(reason)

    async def work(db: Database, session: AsyncSession) -> None:
        if await _has_admin(db, session):
            raise CliError(
                f"{data_dir} is already set up (it has an admin); "
                "use `fieldcast user add NAME --admin` for another admin"
            )
        await accounts.create_user(
            session, Passwords(settings), username=args.admin, password=password, is_admin=True
        )

    _run(settings, work)
    keys = KeyStore(data_dir / "keys")
    if not keys.exists():
        keys.generate(time.time())
        print(f"signing keys (Ed25519 and RSA-2048, mode 0600) in {keys.directory}")
    print(f"database ready: {_describe_db(settings)}")
    print(f"admin user: {args.admin}")
    if generated:
        print(
            f"admin password: {password}   (shown once; change it with "
            f"`fieldcast user set-password {args.admin}`)"
        )
    print(f"next: fieldcast serve --data-dir {data_dir}")


async def _has_admin(db: Database, session: AsyncSession) -> bool:
    return await session.scalar(select(User.id).where(User.is_admin.is_(True))) is not None


def _describe_db(settings: Settings) -> str:
    url = settings.effective_database_url
    if settings.is_sqlite:
        return url.split(":///", 1)[1]
    return url.split("@")[-1]


def cmd_migrate(args: argparse.Namespace) -> None:
    settings = _settings(args)
    asyncio.run(_with_db(settings, lambda db: migrate(db.engine)))
    print(f"database is up to date: {_describe_db(settings)}")


def cmd_serve(args: argparse.Namespace) -> None:
    from hypercorn.config import Config as HypercornConfig

    settings = _settings(args, bind=args.bind, workers=args.workers)
    keys = KeyStore(settings.data_dir / "keys")
    if keys.exists():
        keys.load()  # refuse to start with private keys others may read
    # Migrate once here, before any worker starts, so workers never race on the schema.
    asyncio.run(_with_db(settings, lambda db: migrate(db.engine)))
    hconfig = HypercornConfig()
    hconfig.bind = [settings.bind]
    hconfig.accesslog = "-" if args.access_log else None
    hconfig.errorlog = "-"
    hconfig.graceful_timeout = 5
    # Quart already caps request bodies; Hypercorn's own cap is for h11's buffer.
    hconfig.h11_max_incomplete_size = 64 * 1024
    print(
        f"fieldcast serving {settings.base_url} on {settings.bind} "
        f"({settings.workers} worker(s), database {_describe_db(settings)})",
        flush=True,
    )
    if settings.workers == 1:
        asyncio.run(_serve_one(settings, hconfig))
        return
    from hypercorn.run import run

    # Worker processes rebuild the settings from the same file and environment.
    if args.data_dir:
        os.environ["FIELDCAST_DATA_DIR"] = str(args.data_dir)
    if args.config:
        os.environ["FIELDCAST_CONFIG"] = str(args.config)
    hconfig.workers = settings.workers
    hconfig.application_path = "instance.asgi:app"
    sys.exit(run(hconfig))


async def _serve_one(settings: Settings, hconfig: Any) -> None:
    from hypercorn.asyncio import serve

    from instance.app import create_app, prepare_serving_process

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    app = create_app(settings)
    prepare_serving_process(settings)
    await serve(app, hconfig, shutdown_trigger=stop.wait)  # type: ignore[arg-type]


# ---- users and groups --------------------------------------------------------------------


def cmd_user_add(args: argparse.Namespace) -> None:
    settings = _settings(args)
    password, generated = _read_password(args, generate=True)

    async def work(db: Database, session: AsyncSession) -> None:
        await accounts.create_user(
            session,
            Passwords(settings),
            username=args.username,
            password=password,
            is_admin=args.admin,
            display_name=args.display_name or "",
            groups=args.group or [],
        )

    _run(settings, work)
    print(f"created user {args.username}" + (" (admin)" if args.admin else ""))
    if generated:
        print(f"password: {password}   (shown once)")


def cmd_user_list(args: argparse.Namespace) -> None:
    async def work(db: Database, session: AsyncSession) -> list[dict[str, Any]]:
        users = (await session.execute(select(User).order_by(User.username))).scalars().all()
        return [await accounts.user_json(session, u) for u in users]

    rows = _run(_settings(args), work, write=False)
    for u in rows:
        flags = ", ".join(
            f for f, on in (("admin", u["is_admin"]), ("disabled", u["disabled"])) if on
        )
        groups = ", ".join(u["groups"]) or "-"
        print(f"{u['username']:<20} groups: {groups}" + (f"  [{flags}]" if flags else ""))


def _user_update(args: argparse.Namespace, changes: dict[str, Any], done: str) -> None:
    settings = _settings(args)

    async def work(db: Database, session: AsyncSession) -> None:
        user = await accounts.get_user(session, args.username)
        await accounts.update_user(session, Passwords(settings), user, changes)

    _run(settings, work)
    print(done)


def cmd_user_set_password(args: argparse.Namespace) -> None:
    password, _ = _read_password(args, generate=False)
    _user_update(
        args,
        {"password": password},
        f"password of {args.username} changed; their sessions are closed",
    )


def cmd_user_set(args: argparse.Namespace) -> None:
    changes: dict[str, Any] = {}
    if args.admin is not None:
        changes["is_admin"] = args.admin == "yes"
    if args.disabled is not None:
        changes["disabled"] = args.disabled == "yes"
    if not changes:
        raise CliError("say what to change: --admin yes|no and/or --disabled yes|no")
    _user_update(args, changes, f"updated {args.username}: {changes}")


def cmd_group_add(args: argparse.Namespace) -> None:
    async def work(db: Database, session: AsyncSession) -> None:
        await accounts.create_group(session, args.name, args.description or "")

    _run(_settings(args), work)
    print(f"created group {args.name}")


def cmd_group_list(args: argparse.Namespace) -> None:
    async def work(db: Database, session: AsyncSession) -> list[tuple[str, bool, list[str]]]:
        groups = (await session.execute(select(Group).order_by(Group.name))).scalars().all()
        return [
            (g.name, g.builtin, [] if g.builtin else await accounts.group_members(session, g))
            for g in groups
        ]

    for name, builtin, members in _run(_settings(args), work, write=False):
        who = "(built-in)" if builtin else (", ".join(members) or "(no members)")
        print(f"{name:<20} {who}")


def cmd_group_delete(args: argparse.Namespace) -> None:
    async def work(db: Database, session: AsyncSession) -> None:
        await accounts.delete_group(session, args.name)

    _run(_settings(args), work)
    print(f"deleted group {args.name}")


def cmd_group_member(args: argparse.Namespace) -> None:
    add = args.action == "add-member"

    async def work(db: Database, session: AsyncSession) -> None:
        await accounts.set_membership(session, args.group, args.username, add)

    _run(_settings(args), work)
    print(f"{args.username} {'added to' if add else 'removed from'} {args.group}")


# ---- trackers and fields -----------------------------------------------------------------


def cmd_tracker_add(args: argparse.Namespace) -> None:
    data = {
        "slug": args.slug,
        "name": args.name or args.slug,
        "description": args.description or "",
        "require_if_match": args.require_if_match,
    }

    async def work(db: Database, session: AsyncSession) -> None:
        await trackers.create_tracker(session, data)

    _run(_settings(args), work)
    print(f"created tracker {args.slug}")


def cmd_tracker_list(args: argparse.Namespace) -> None:
    async def work(db: Database, session: AsyncSession) -> list[tuple[str, str, int]]:
        rows = (await session.execute(select(Tracker).order_by(Tracker.slug))).scalars().all()
        fields = await load_fields(session, [t.id for t in rows])
        return [(t.slug, t.name, len(fields[t.id])) for t in rows]

    for slug, name, count in _run(_settings(args), work, write=False):
        print(f"{slug:<20} {name}  ({count} fields)")


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


def cmd_field_add(args: argparse.Namespace) -> None:
    data: dict[str, Any] = {"name": args.name, "type": args.type, "options": _field_options(args),
                            **_rights_changes(args)}
    if args.label:
        data["label"] = args.label

    async def work(db: Database, session: AsyncSession) -> None:
        tracker = await trackers.get_tracker(session, args.tracker)
        await trackers.create_field(session, tracker, data)

    _run(_settings(args), work)
    print(f"added field {args.name} ({args.type}) to {args.tracker}")


def cmd_field_list(args: argparse.Namespace) -> None:
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

    for f in _run(_settings(args), work, write=False):
        print(
            f"{f['name']:<16} {f['type']:<9} read: {', '.join(f['read']) or 'admins only':<22} "
            f"edit: {', '.join(f['edit']) or 'admins only':<22} export: {f['export']}"
            + (f"  options: {json.dumps(f['options'])}" if f["options"] else "")
        )


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


def cmd_field_rights(args: argparse.Namespace) -> None:
    data = _rights_changes(args)
    if not data:
        raise CliError("say what to change: --read, --edit and/or --export")

    async def work(db: Database, session: AsyncSession) -> None:
        tracker = await trackers.get_tracker(session, args.tracker)
        await trackers.update_field(
            session, await trackers.get_field(session, tracker, args.name), data
        )

    _run(_settings(args), work)
    print(f"updated field {args.name} of {args.tracker}")


def _store(args: argparse.Namespace) -> KeyStore:
    return KeyStore(_settings(args).data_dir / "keys").load()


def cmd_keys_list(args: argparse.Namespace) -> None:
    store = _store(args)
    now = time.time()
    for r in store.records():
        until = ("" if r.valid_until is None else
                 f", verifies until {time.strftime('%Y-%m-%d %H:%M', time.gmtime(r.valid_until))}"
                 " UTC" if r.valid_until > now else ", overlap over")
        print(f"{r.kid:<24} {r.alg:<8} {r.state}{until}")


def cmd_keys_rotate(args: argparse.Namespace) -> None:
    store = _store(args)
    overlap = args.overlap_hours * 3600
    for alg in (("ed25519", "rsa") if args.alg == "all" else (args.alg,)):
        new = store.rotate(alg, time.time(), overlap)
        print(f"new current {alg} key {new.record.kid}; the previous one verifies for "
              f"{args.overlap_hours} more hours")
    for kid in store.retire_expired(time.time()):
        print(f"retired {kid}")


def cmd_token_create(args: argparse.Namespace) -> None:
    async def work(db: Database, session: AsyncSession) -> str:
        user = await accounts.get_user(session, args.username)
        _, secret = await accounts.create_token(session, user, args.name)
        return secret

    secret = _run(_settings(args), work)
    print(secret)


# ---- the parser --------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="fieldcast",
        description="A live, federated issue tracker with per-field rights.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    # --data-dir and --config may stand before or after the command; SUPPRESS keeps a
    # subcommand's absent option from overwriting the value given before it.
    data_help = "the instance's directory (default ./data, or $FIELDCAST_DATA_DIR)"
    config_help = "a TOML config file (default DATA_DIR/fieldcast.toml)"
    parser.add_argument("--data-dir", help=data_help)
    parser.add_argument("--config", help=config_help)
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--data-dir", default=argparse.SUPPRESS, help=data_help)
    common.add_argument("--config", default=argparse.SUPPRESS, help=config_help)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

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
    p.add_argument("--base-url", help="the public URL, e.g. https://tracker.example.org")
    p.add_argument(
        "--database-url",
        help="PostgreSQL: postgresql+asyncpg://user@host/db "
        "(default: SQLite in the data directory)",
    )
    p.add_argument("--instance-name", help="a name for this instance")
    p.add_argument("--bind", help="host:port to serve on (default 127.0.0.1:8000)")
    p.add_argument("--exist-ok", action="store_true",
                   help="succeed without creating an admin if the database already has one")
    p.set_defaults(func=cmd_init)

    p = sub.add_parser("migrate", parents=[common], help="apply pending database migrations")
    p.set_defaults(func=cmd_migrate)

    p = sub.add_parser(
        "serve",
        parents=[common],
        help="serve the instance with Hypercorn",
        description="Apply pending migrations, then serve HTTP.",
    )
    p.add_argument("--bind", help="host:port (default from config, 127.0.0.1:8000)")
    p.add_argument("--workers", type=int, help="worker processes (more than 1 needs PostgreSQL)")
    p.add_argument("--access-log", action="store_true", help="log every request to stdout")
    p.set_defaults(func=cmd_serve)

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

    keys = sub.add_parser("keys", help="the instance's signing keys").add_subparsers(
        dest="action", required=True, metavar="ACTION")
    p = keys.add_parser("list", parents=[common], help="list keys and their state")
    p.set_defaults(func=cmd_keys_list)
    p = keys.add_parser("rotate", parents=[common], help="replace the current key(s)",
                        description="Create new current keys. The previous ones still verify "
                        "for the overlap, so peers that cached them keep working while they "
                        "re-fetch; keys past their overlap are retired and deleted.")
    p.add_argument("--alg", choices=["ed25519", "rsa", "all"], default="all")
    p.add_argument("--overlap-hours", type=float, default=168.0,
                   help="how long the previous key still verifies (default a week)")
    p.set_defaults(func=cmd_keys_rotate)

    token = sub.add_parser("token", help="API tokens").add_subparsers(
        dest="action", required=True, metavar="ACTION"
    )
    p = token.add_parser(
        "create", parents=[common], help="create an API token for a user; prints it once"
    )
    p.add_argument("username")
    p.add_argument("--name", default="cli", help="a name to tell the token apart")
    p.set_defaults(func=cmd_token_create)
    return parser


def main(argv: Sequence[str] | None = None) -> None:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        args.func(args)
    except (CliError, ConfigError, KeyStoreError) as exc:
        parser.exit(2, f"fieldcast: error: {exc}\n")
    except ApiError as exc:
        parser.exit(2, f"fieldcast: error: {exc.detail}\n")
    except OSError as exc:
        parser.exit(2, f"fieldcast: error: {exc}\n")


if __name__ == "__main__":
    main()
