"""`fieldcast item link ITEM URL` / `fieldcast item unlink ITEM`: mirror another
instance's item, as `PUT`/`DELETE /api/items/ITEM/link` do.

The running instance must be up: the host's hub verifies the subscription at its
callback, and its fetch worker keeps the item current (an unlink's unsubscribe is sent
by that worker too).
"""

from __future__ import annotations

import argparse
import asyncio
from collections.abc import Mapping

from hub.outbound import Outbound, OutboundConfig
from instance.changelog import ChangeLog
from instance.cli.common import Subcommands, settings_for, with_db
from instance.cli.keys import key_store
from instance.config import Settings
from instance.db import Database, migrate
from instance.federation.service import FederationService
from instance.remote import links
from instance.remote.service import RemoteService
from protocol.addresses import AddressPolicy


async def _with_service(settings: Settings, db: Database, item: int, url: str | None) -> None:
    await migrate(db.engine)
    keys = key_store(settings)
    loaded = keys.load() if keys.exists() else None
    federation = FederationService(settings, db)
    federation.outbound = Outbound(OutboundConfig(
        policy=AddressPolicy(allow_private=settings.allow_private_callbacks,
                             allow_http=settings.allow_http_callbacks),
        user_agent=f"fieldcast ({settings.base_url})"))
    service = RemoteService(settings, db, ChangeLog(db), federation, lambda: loaded)
    try:
        if url is None:
            await links.unlink(service, item)
        else:
            await links.link(service, item, url)
    finally:
        await federation.outbound.aclose()


def cmd_item_link(args: argparse.Namespace, environ: Mapping[str, str]) -> None:
    settings = settings_for(args, environ)
    asyncio.run(with_db(settings, lambda db: _with_service(settings, db, args.item, args.url)))
    print(f"item {args.item} linked to {args.url}")


def cmd_item_unlink(args: argparse.Namespace, environ: Mapping[str, str]) -> None:
    settings = settings_for(args, environ)
    asyncio.run(with_db(settings, lambda db: _with_service(settings, db, args.item, None)))
    print(f"item {args.item} unlinked; the running instance unsubscribes")


def register(sub: Subcommands, common: argparse.ArgumentParser) -> None:
    item = sub.add_parser("item", help="items: link to another instance's item").add_subparsers(
        dest="action", required=True, metavar="ACTION")
    p = item.add_parser("link", parents=[common],
                        help="mirror an item of another instance in this item's remote fields")
    p.add_argument("item", type=int, help="this instance's item id")
    p.add_argument("url", help="the other item's page URL (https://a.example/items/7) or topic")
    p.set_defaults(func=cmd_item_link)
    p = item.add_parser("unlink", parents=[common], help="stop mirroring; unsubscribe")
    p.add_argument("item", type=int)
    p.set_defaults(func=cmd_item_unlink)
