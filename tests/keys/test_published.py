"""Two real instances publish their keys; each verifies the other's signed requests in
both profiles by fetching those keys over HTTP. Rotation through the CLI is followed."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from keys.resolver import KeyResolver, verify_signed
from keys.store import KeyStore
from protocol.errors import RemoteProtocolError
from protocol.replay import ReplayCache
from protocol.signatures import CAVAGE_RSA_SHA256, RFC9421_ED25519, sign_request
from tests.harness import RunningInstance


async def http_fetch(url: str) -> tuple[int, Any]:
    async with httpx.AsyncClient(timeout=10) as client:
        r = await client.get(url)
        return r.status_code, (r.json() if r.status_code == 200 else None)


def sign_as(inst: RunningInstance, profile: str, url: str, body: bytes) -> dict[str, str]:
    store = KeyStore(inst.data_dir / "keys").load()
    key = store.current("ed25519" if profile == RFC9421_ED25519 else "rsa")
    kid = f"{inst.base_url}/.well-known/fieldcast/keys/{key.record.kid}"
    headers = {"Content-Type": "application/json", "Host": url.split("/")[2]}
    headers.update(sign_request(profile, "POST", url, headers, body, key.private, kid,
                                time.time()))
    return headers


async def test_two_instances_verify_each_other(tmp_path: Path) -> None:
    a, b = RunningInstance.create(tmp_path, "a"), RunningInstance.create(tmp_path, "b")
    a.start()
    b.start()
    try:
        async with httpx.AsyncClient() as c:
            doc = (await c.get(a.base_url + "/.well-known/fieldcast")).json()
            assert doc["name"] == "a" and doc["base_url"] == a.base_url
            assert {k["algorithm"] for k in doc["keys"]} == {"ed25519", "rsa"}
            one = (await c.get(doc["keys"][0]["id"])).json()
            assert one == doc["keys"][0]
            assert (await c.get(a.base_url + "/.well-known/fieldcast/keys/nope")
                    ).status_code == 404
        for signer, receiver in ((a, b), (b, a)):
            resolver = KeyResolver(http_fetch)
            for profile in (RFC9421_ED25519, CAVAGE_RSA_SHA256):
                url = f"{receiver.base_url}/callback"
                body = b'{"type":"notification"}'
                headers = sign_as(signer, profile, url, body)
                verified = await verify_signed(resolver, "POST", url, headers, body,
                                               now=time.time(), replay_cache=ReplayCache(),
                                               expected_origin=signer.base_url)
                assert verified.profile == profile
                with pytest.raises(RemoteProtocolError):
                    await verify_signed(resolver, "POST", url, headers, body + b" ",
                                        now=time.time(), replay_cache=None)

        # Rotation through the CLI, while the instance runs: a peer that cached the old
        # key verifies new signatures after one re-fetch, and old ones during the overlap.
        resolver = KeyResolver(http_fetch, refetch_interval=0)
        url = f"{b.base_url}/callback"
        old_headers = sign_as(a, RFC9421_ED25519, url, b"{}")
        await verify_signed(resolver, "POST", url, old_headers, b"{}", now=time.time(),
                            replay_cache=None)
        out = a.cli("keys", "rotate", "--alg", "ed25519", "--overlap-hours", "1")
        assert out.returncode == 0, out.stderr
        a.stop()
        a.start()  # the running process reads its keys at start
        new_headers = sign_as(a, RFC9421_ED25519, url, b"{}")
        assert new_headers["Signature-Input"] != old_headers["Signature-Input"]
        await verify_signed(resolver, "POST", url, new_headers, b"{}", now=time.time(),
                            replay_cache=None)
        await verify_signed(resolver, "POST", url, old_headers, b"{}", now=time.time(),
                            replay_cache=None)
        listing = a.cli("keys", "list").stdout
        assert "previous, verifies until" in listing
    finally:
        a.stop()
        b.stop()
