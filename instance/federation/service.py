"""The federation objects of one app: outgoing HTTP, the foreign-key resolver with its
replay cache, the lease policy and the verification worker. Started and stopped with
the app, like ``instance.live.LiveService``."""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from quart import current_app

from hub.delivery import DeliveryConfig, DeliveryWorker
from hub.outbound import Outbound, OutboundConfig
from hub.projector import Projector, ProjectorConfig
from hub.verifier import Verifier, VerifierConfig
from instance.changelog import ChangeLog
from instance.clock import signing_time
from instance.config import Settings
from instance.db import Database
from instance.federation.subscriptions import SqlIntentStore
from keys.pins import PinFile
from keys.resolver import KeyResolver
from keys.store import KeyStore
from protocol.addresses import AddressPolicy
from protocol.replay import ReplayCache
from protocol.websub import LeasePolicy

FEDERATION_KEY = "fieldcast.federation"
log = logging.getLogger("fieldcast.federation")
#: A well-known document lists a handful of keys; 256 KiB is generous and bounded.
MAX_KEY_DOCUMENT_BYTES = 256 * 1024


class FederationService:
    def __init__(self, settings: Settings, db: Database,
                 verifier_config: VerifierConfig | None = None, *,
                 change_log: ChangeLog | None = None,
                 keys: Callable[[], KeyStore | None] = lambda: None,
                 delivery_config: DeliveryConfig | None = None,
                 projector_config: ProjectorConfig | None = None) -> None:
        self.settings = settings
        self.db = db
        self.lease = LeasePolicy(settings.hub_lease_min_seconds,
                                 settings.hub_lease_default_seconds,
                                 settings.hub_lease_max_seconds)
        self.verifier_config = verifier_config or VerifierConfig()
        self.replay = ReplayCache()
        # Pins survive restarts: a peer that changes identity stays refused (keys/pins.py).
        self.resolver = KeyResolver(self._fetch_json,
                                    pins=PinFile(settings.data_dir / "federation-pins.json"),
                                    refetch_interval=settings.key_refetch_seconds)
        self.outbound: Outbound | None = None
        self.verifier: Verifier | None = None
        # Delivery (projector + worker) runs when the app hands over its change log.
        self.change_log = change_log
        self.keys = keys
        self.delivery_config = delivery_config or DeliveryConfig()
        self.projector_config = projector_config or ProjectorConfig()
        self.projector: Projector | None = None
        self.delivery: DeliveryWorker | None = None
        self._stop_listening: Callable[[], None] | None = None

    async def start(self) -> None:
        if self.settings.test_clock_offset_seconds:
            log.warning("test_clock_offset_seconds = %d: signing and checking signatures "
                        "with a shifted clock (a test switch)",
                        self.settings.test_clock_offset_seconds)
        policy = AddressPolicy(allow_private=self.settings.allow_private_callbacks,
                               allow_http=self.settings.allow_http_callbacks)
        self.outbound = Outbound(OutboundConfig(
            policy=policy, user_agent=f"fieldcast ({self.settings.base_url})"))
        self.verifier = Verifier(SqlIntentStore(self.db), self.outbound, self.verifier_config)
        await self.verifier.start()
        if self.change_log is not None:
            await self._start_delivery(self.change_log, self.outbound)

    async def _start_delivery(self, log: ChangeLog, outbound: Outbound) -> None:
        # Imported here: notify renders topics, and topics.py imports this module.
        from instance.federation.notify import Notifier
        from instance.federation.queue import SqlDeliveryStore, SqlProjectorStore

        notifier = Notifier(self.db, self.settings.base_url, self.keys, self._fetch_json,
                            instance_name=self.settings.instance_name,
                            clock=lambda: signing_time(self.settings))
        self.delivery = DeliveryWorker(SqlDeliveryStore(self.db), notifier, outbound,
                                       self.delivery_config)
        store = SqlProjectorStore(self.db, log)
        await store.ensure_cursor(datetime.now(UTC))
        self.projector = Projector(store, self.projector_config, on_queued=self.wake)
        await self.delivery.start()
        await self.projector.start()
        self._stop_listening = log.on_commit(self.projector.committed)

    async def stop(self) -> None:
        if self._stop_listening is not None:
            self._stop_listening()
            self._stop_listening = None
        if self.projector is not None:
            await self.projector.stop()
        if self.delivery is not None:
            await self.delivery.stop()
        if self.verifier is not None:
            await self.verifier.stop()
        if self.outbound is not None:
            await self.outbound.aclose()

    def wake(self) -> None:
        if self.verifier is not None:
            self.verifier.wake()
        if self.delivery is not None:
            self.delivery.wake()

    async def _fetch_json(self, url: str) -> tuple[int, Any]:
        """The resolver's fetch of a signer's ``/.well-known/fieldcast``, through Outbound
        (so the address policy applies to key fetches too)."""
        assert self.outbound is not None, "the service starts before the app serves"
        response = await self.outbound.request(
            "GET", url, headers=[("accept", "application/json")],
            max_bytes=MAX_KEY_DOCUMENT_BYTES)
        if response.status != 200:
            return response.status, None
        return 200, json.loads(response.body)


def federation() -> FederationService:
    service: FederationService = current_app.extensions[FEDERATION_KEY]
    return service
