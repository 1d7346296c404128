"""The `fieldcast` command: set up an instance, serve it, and administer it.

One module per command group; each has a `register(sub, common)` that adds its commands
to the parser built here. `main` is the entry point (`fieldcast`, `python -m
instance.cli`), and the only place the CLI reads the process environment: it hands it
to every command, which hands it to the settings loader.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Mapping, Sequence

from sqlalchemy.exc import DBAPIError

from instance.cli import (
    demo,
    federation,
    fields,
    groups,
    init,
    items,
    keys,
    serve,
    tokens,
    trackers,
    users,
)
from instance.cli.common import CliError, check_instance, one_line
from instance.config import ConfigError
from instance.errors import ApiError
from keys.store import KeyStoreError

EPILOG = """\
Try it:
  fieldcast demo                              two federated instances with sample data

Start here:
  fieldcast init --data-dir ./data            create the database and the first admin
  fieldcast serve --data-dir ./data           serve it at http://127.0.0.1:8000

Then, for example:
  fieldcast group add Staff
  fieldcast user add alice --group Staff
  fieldcast tracker add bugs --name "Bugs"
  fieldcast field add bugs status --type dropdown --choices open,closed
  fieldcast field add bugs notes --type textarea --read Staff --edit Staff
  fieldcast item link 12 https://other.example/items/7

Settings come from DATA_DIR/fieldcast.toml, then FIELDCAST_<NAME> environment variables
(FIELDCAST_DATABASE_URL=postgresql+asyncpg://user@host/db for PostgreSQL).
"""

# In the order `fieldcast --help` lists them.
COMMAND_GROUPS = (demo, init, serve, users, groups, trackers, fields, items, keys, tokens,
                  federation)


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
    for group in COMMAND_GROUPS:
        group.register(sub, common)
    return parser


def main(argv: Sequence[str] | None = None, environ: Mapping[str, str] | None = None) -> None:
    parser = build_parser()
    args = parser.parse_args(argv)
    env = os.environ if environ is None else environ
    try:
        # Every command but those that make one (`init`, `demo`) needs an instance.
        if not getattr(args, "creates_instance", False):
            check_instance(args, env)
        args.func(args, env)
    except (CliError, ConfigError, KeyStoreError) as exc:
        parser.exit(2, f"fieldcast: error: {exc}\n")
    except ApiError as exc:
        parser.exit(2, f"fieldcast: error: {exc.detail}\n")
    except OSError as exc:
        parser.exit(2, f"fieldcast: error: {exc}\n")
    except DBAPIError as exc:
        # The database refused or went away mid-command (down, locked, out of space):
        # the driver's message, not a traceback.
        parser.exit(2, f"fieldcast: error: the database failed: {one_line(exc)}\n")
