"""`fieldcast federation …`: what the hub holds (subscriptions, deliveries), read-only.

The rows are instance.federation.overview's, as the admin API and page show them.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Mapping, Sequence
from datetime import datetime

from sqlalchemy.ext.asyncio import AsyncSession

from instance.accounts import iso
from instance.cli.common import Subcommands, run_read, settings_for
from instance.db import Database
from instance.federation.overview import (
    DELIVERIES_SHOWN,
    DeliveryView,
    SubscriptionView,
    delivery_views,
    subscription_views,
)

#: A table cell longer than this is cut (with "…"); --json has everything.
CELL = 60


def _when(dt: datetime | None) -> str:
    return iso(dt) or "-"


def _cell(value: object) -> str:
    text = "-" if value is None or value == "" else str(value)
    text = " ".join(text.split())  # an error message with newlines stays on its row
    return text if len(text) <= CELL else text[:CELL - 1] + "…"


def table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    cells = [[_cell(v) for v in row] for row in rows]
    widths = [max([len(h), *(len(r[i]) for r in cells)]) for i, h in enumerate(headers)]
    lines = ["  ".join(h.upper().ljust(w) for h, w in zip(headers, widths, strict=True))]
    lines += ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip()
              for r in cells]
    return "\n".join(lines)


def subscriptions_table(subs: Sequence[SubscriptionView]) -> str:
    return table(
        ["state", "topic", "callback", "target", "subscriber", "lease end", "fields",
         "last success", "last error"],
        [[s.state, s.topic, s.callback, s.target, s.subscriber_origin or "public",
          _when(s.lease_expires_at), ",".join(s.exported_fields) or "(none)",
          _when(s.last_success_at), s.last_error] for s in subs])


def deliveries_table(deliveries: Sequence[DeliveryView]) -> str:
    return table(
        ["state", "subscription", "callback", "topic", "target", "attempts", "next retry",
         "last status", "last error", "event"],
        [[d.state, d.subscription, d.callback, d.topic, d.target, d.attempts,
          _when(d.next_attempt_at), d.last_status, d.last_error, d.event_id]
         for d in deliveries])


def cmd_subscriptions(args: argparse.Namespace, environ: Mapping[str, str]) -> None:
    async def work(db: Database, session: AsyncSession) -> list[SubscriptionView]:
        return await subscription_views(session)

    subs = run_read(settings_for(args, environ), work)
    if args.json:
        print(json.dumps({"subscriptions": [s.json() for s in subs]}, indent=2))
    elif not subs:
        print("no subscriptions")
    else:
        print(subscriptions_table(subs))


def cmd_deliveries(args: argparse.Namespace, environ: Mapping[str, str]) -> None:
    async def work(db: Database, session: AsyncSession) -> list[DeliveryView]:
        return await delivery_views(session, args.limit)

    deliveries = run_read(settings_for(args, environ), work)
    if args.json:
        print(json.dumps({"deliveries": [d.json() for d in deliveries]}, indent=2))
    elif not deliveries:
        print("no deliveries")
    else:
        print(deliveries_table(deliveries))


def _positive(raw: str) -> int:
    value = int(raw)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be 1 or more, got {value}")
    return value


def register(sub: Subcommands, common: argparse.ArgumentParser) -> None:
    federation = sub.add_parser(
        "federation", help="see the hub's subscriptions and deliveries").add_subparsers(
        dest="action", required=True, metavar="ACTION")
    p = federation.add_parser(
        "subscriptions", parents=[common],
        help="who subscribed to which topic, and what is exported to them")
    p.add_argument("--json", action="store_true", help="JSON, as GET /api/federation/"
                   "subscriptions answers")
    p.set_defaults(func=cmd_subscriptions)
    p = federation.add_parser("deliveries", parents=[common],
                              help="the delivery queue, newest first")
    p.add_argument("--json", action="store_true", help="JSON instead of a table")
    p.add_argument("--limit", type=_positive, default=DELIVERIES_SHOWN,
                   help=f"at most this many rows (default {DELIVERIES_SHOWN})")
    p.set_defaults(func=cmd_deliveries)
