"""`fieldcast serve`: migrate, then serve with Hypercorn in one process or several."""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import sys
from collections.abc import Mapping
from typing import TYPE_CHECKING

from instance.cli.common import CliError, Subcommands, describe_db, migrate_only, settings_for
from instance.cli.keys import key_store
from instance.config import Settings, unreachable_base_url

if TYPE_CHECKING:
    from hypercorn.config import Config as HypercornConfig


def hypercorn_config(settings: Settings, *, access_log: bool) -> HypercornConfig:
    """Hypercorn's config for these settings; the one place that builds it."""
    from hypercorn.config import Config as HypercornConfig

    config = HypercornConfig()
    config.bind = [settings.bind]
    config.accesslog = "-" if access_log else None
    config.errorlog = "-"
    config.graceful_timeout = 5
    # Quart already caps request bodies; Hypercorn's own cap is for h11's buffer.
    config.h11_max_incomplete_size = 64 * 1024
    # Used only with several workers, which import the app themselves.
    config.workers = settings.workers
    config.application_path = "instance.asgi:app"
    return config


def cmd_serve(args: argparse.Namespace, environ: Mapping[str, str]) -> None:
    settings = settings_for(args, environ, bind=args.bind, workers=args.workers)
    # Keys would be published, and links made, under an origin that is not this server.
    problem = unreachable_base_url(settings)
    if problem:
        raise CliError(problem)
    keys = key_store(settings)
    if keys.exists():
        keys.load()  # refuse to start with private keys others may read
    # Migrate once here, before any worker starts, so workers never race on the schema.
    migrate_only(settings)
    hconfig = hypercorn_config(settings, access_log=args.access_log)
    print(
        f"fieldcast serving {settings.base_url} on {settings.bind} "
        f"({settings.workers} worker(s), database {describe_db(settings)})",
        flush=True,
    )
    if settings.workers == 1:
        asyncio.run(_serve_one(settings, hconfig))
        return
    from hypercorn.run import run

    # Worker processes rebuild the settings from the same file and environment
    # (instance/asgi.py): they inherit this process's environment, so the options given
    # here are handed on through it.
    if args.data_dir:
        os.environ["FIELDCAST_DATA_DIR"] = str(args.data_dir)
    if args.config:
        os.environ["FIELDCAST_CONFIG"] = str(args.config)
    sys.exit(run(hconfig))


async def _serve_one(settings: Settings, hconfig: HypercornConfig) -> None:
    from hypercorn.asyncio import serve

    from instance.app import create_app, going_away, prepare_serving_process

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    app = create_app(settings)
    prepare_serving_process(settings)

    async def shutdown_trigger() -> None:
        await stop.wait()
        # Before Hypercorn waits for open connections: /live sockets never end by
        # themselves, and would be cancelled after its graceful_timeout instead.
        await going_away(app)

    await serve(app, hconfig, shutdown_trigger=shutdown_trigger)


def register(sub: Subcommands, common: argparse.ArgumentParser) -> None:
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
