"""The subscriber side's per-app objects: the request signer and the fetch worker.

It borrows the host side's outgoing client, key resolver and replay cache
(``instance.federation.service``): one of each per process, whichever side uses them.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import timedelta

from quart import current_app

from hub.fetcher import Fetcher, FetcherConfig
from instance.changelog import ChangeLog
from instance.clock import signing_time
from instance.config import Settings
from instance.db import Database
from instance.federation.service import FederationService
from instance.remote.store import SqlRemoteStore
from keys.store import KeyStore, key_url
from protocol.signatures import RFC9421_ED25519, sign_request

REMOTE_KEY = "fieldcast.remote"


class RemoteService:
    def __init__(self, settings: Settings, db: Database, change_log: ChangeLog,
                 federation: FederationService, keys: Callable[[], KeyStore | None],
                 config: FetcherConfig | None = None) -> None:
        self.settings = settings
        self.db = db
        self.change_log = change_log
        self.federation = federation
        self.keys = keys
        self.config = config or FetcherConfig()
        self.store = SqlRemoteStore(db, change_log, settings.base_url,
                                    settings.remote_lease_seconds)
        self.fetcher: Fetcher | None = None

    def sign(self, method: str, url: str, headers: Sequence[tuple[str, str]], body: bytes
             ) -> list[tuple[str, str]]:
        """Signature headers with this instance's current Ed25519 key (none without keys:
        the host then answers as to anyone, with its public fields only)."""
        store = self.keys()
        if store is None:
            return []
        key = store.current("ed25519")
        signed = sign_request(RFC9421_ED25519, method, url, list(headers), body, key.private,
                              key_url(self.settings.base_url, key.record.kid),
                              signing_time(self.settings))
        return list(signed.items())

    @property
    def http(self) -> object:
        assert self.federation.outbound is not None, "started after the federation service"
        return self.federation.outbound

    async def start(self) -> None:
        assert self.federation.outbound is not None, "start the federation service first"
        self.fetcher = Fetcher(
            self.store, self.federation.outbound, self.sign,
            timedelta(seconds=self.settings.remote_sync_max_age_seconds), self.config)
        await self.fetcher.start()

    async def stop(self) -> None:
        if self.fetcher is not None:
            await self.fetcher.stop()

    def wake(self) -> None:
        if self.fetcher is not None:
            self.fetcher.wake()


def remote() -> RemoteService:
    service: RemoteService = current_app.extensions[REMOTE_KEY]
    return service
