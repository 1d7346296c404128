"""The hub of this process: built from the settings, started and stopped with the app."""

from __future__ import annotations

from collections.abc import Callable

from hub.broker import InProcessBroker, PostgresBroker, RedisBroker
from hub.hub import Broker, Hub, HubConfig
from instance.changelog import ChangeLog
from instance.config import Settings
from instance.live.backend import DatabaseBackend

LIVE_KEY = "fieldcast.live"


def make_broker(settings: Settings, epoch: str) -> Broker:
    url = settings.broker_url
    if url.startswith(("redis://", "rediss://")):
        return RedisBroker(url, f"fieldcast:{epoch}")
    if url == "postgresql":
        dsn = settings.effective_database_url.replace("+asyncpg", "", 1)
        return PostgresBroker(dsn, f"fieldcast_{epoch}")
    return InProcessBroker()


class LiveService:
    """Owns the hub for one process. The hub hears of commits as a change-log listener."""

    def __init__(self, settings: Settings, log: ChangeLog, config: HubConfig | None = None
                 ) -> None:
        self.settings = settings
        self.log = log
        self.config = config or HubConfig(poll_interval=settings.live_poll_ms / 1000,
                                          frame_duty=settings.live_frame_percent / 100)
        self.hub: Hub | None = None
        self._stop_listening: Callable[[], None] | None = None

    async def start(self) -> None:
        epoch = await self.log.epoch()
        self.hub = Hub(DatabaseBackend(self.log, epoch), make_broker(self.settings, epoch),
                       self.config)
        await self.hub.start()
        self._stop_listening = self.log.on_commit(self.hub.committed)

    async def drain(self) -> None:
        """The server is about to stop: close every /live socket with 1001 and wait
        until they are closed (at most the time one close may take, plus a little)."""
        if self.hub is not None:
            await self.hub.drain(self.hub.config.close_grace + 0.5)

    async def stop(self) -> None:
        if self._stop_listening is not None:
            self._stop_listening()
            self._stop_listening = None
        if self.hub is not None:
            await self.hub.stop()
