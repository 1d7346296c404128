"""`fieldcast keys …`: the instance's signing keys, and their first generation."""

from __future__ import annotations

import argparse
import time
from collections.abc import Mapping

from instance.cli.common import Subcommands, settings_for
from instance.config import Settings
from keys.store import KeyStore


def key_store(settings: Settings) -> KeyStore:
    """The key store of the data directory (not loaded)."""
    return KeyStore(settings.data_dir / "keys")


def ensure_keys(settings: Settings) -> None:
    """Generate the signing keys once, when the data directory has none yet."""
    keys = key_store(settings)
    if not keys.exists():
        keys.generate(time.time())
        print(f"signing keys (Ed25519 and RSA-2048, mode 0600) in {keys.directory}")


def cmd_keys_list(args: argparse.Namespace, environ: Mapping[str, str]) -> None:
    store = key_store(settings_for(args, environ)).load()
    now = time.time()
    for r in store.records():
        until = ("" if r.valid_until is None else
                 f", verifies until {time.strftime('%Y-%m-%d %H:%M', time.gmtime(r.valid_until))}"
                 " UTC" if r.valid_until > now else ", overlap over")
        print(f"{r.kid:<24} {r.alg:<8} {r.state}{until}")


def cmd_keys_rotate(args: argparse.Namespace, environ: Mapping[str, str]) -> None:
    store = key_store(settings_for(args, environ)).load()
    overlap = args.overlap_hours * 3600
    for alg in (("ed25519", "rsa") if args.alg == "all" else (args.alg,)):
        new = store.rotate(alg, time.time(), overlap)
        print(f"new current {alg} key {new.record.kid}; the previous one verifies for "
              f"{args.overlap_hours} more hours")
    for kid in store.retire_expired(time.time()):
        print(f"retired {kid}")


def register(sub: Subcommands, common: argparse.ArgumentParser) -> None:
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
