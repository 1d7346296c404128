"""`fieldcast token create`: API tokens for scripts."""

from __future__ import annotations

import argparse
from collections.abc import Mapping

from sqlalchemy.ext.asyncio import AsyncSession

from instance import accounts
from instance.cli.common import Subcommands, run, settings_for
from instance.db import Database


def cmd_token_create(args: argparse.Namespace, environ: Mapping[str, str]) -> None:
    async def work(db: Database, session: AsyncSession) -> str:
        user = await accounts.get_user(session, args.username)
        _, secret = await accounts.create_token(session, user, args.name)
        return secret

    print(run(settings_for(args, environ), work))


def register(sub: Subcommands, common: argparse.ArgumentParser) -> None:
    token = sub.add_parser("token", help="API tokens").add_subparsers(
        dest="action", required=True, metavar="ACTION"
    )
    p = token.add_parser(
        "create", parents=[common], help="create an API token for a user; prints it once"
    )
    p.add_argument("username")
    p.add_argument("--name", default="cli", help="a name to tell the token apart")
    p.set_defaults(func=cmd_token_create)
