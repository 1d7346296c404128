"""Verification of intent (WebSub REC §5.3) and denials (§5.2), as a background worker.

The hub endpoint answers 202 at once and leaves an *intent* in the store (REC §5.1.2:
the answer must not depend on the verification). This worker claims due intents, GETs
the callback through the injected HTTP client, and reports each result to the store,
which applies it to the subscription through ``protocol.websub.transition``. It also
ends subscriptions whose lease ran out (REC §5.3.1: hubs MUST enforce lease expiry).

No SQL here: the store is the :class:`IntentStore` interface the instance implements
(as ``LiveBackend`` is for the live hub), and the HTTP client is anything shaped like
``hub.outbound.Outbound``.

Retries: an answer from the callback is final - a wrong body or a 404 is the
subscriber's refusal (REC §5.3.1). Only a transport failure (time-out, connection
refused or reset) is tried again, ``len(retry_delays)`` times with growing delays; an
address the policy refuses is final at once.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Protocol

from hub.outbound import AddressRefused, HttpClient, OutboundError, ResponseTooLarge
from hub.worker import RoundWorker
from protocol.websub import (
    MODE_DENIED,
    MODE_SUBSCRIBE,
    build_denial_url,
    build_verification_url,
    check_verification_response,
)

log = logging.getLogger("fieldcast.hub.verifier")


@dataclass(frozen=True, slots=True)
class Intent:
    """A claimed intent, ready for one attempt."""

    id: int
    mode: str  # "subscribe", "unsubscribe" or "denied"
    topic: str
    callback: str
    #: Drawn afresh for this attempt (single use, REC §8.2); also the guard that makes
    #: the store ignore a result for an intent replaced or re-claimed meanwhile.
    challenge: str
    attempts: int  # attempts made before this one
    lease_seconds: int | None = None
    reason: str | None = None  # for a denial


class IntentStore(Protocol):
    async def claim(self, now: datetime, limit: int, hold: timedelta) -> list[Intent]:
        """Due intents not claimed by another worker, each with a new challenge, held
        for ``hold`` (after which another worker may take them again)."""

    async def verified(self, intent: Intent, now: datetime) -> None:
        """The callback confirmed: apply the (un)subscription, drop the intent."""

    async def refused(self, intent: Intent, reason: str, now: datetime) -> None:
        """Final failure: the subscription stays as it was (REC §5.1), drop the intent."""

    async def retry(self, intent: Intent, reason: str, at: datetime) -> None:
        """Try again at ``at``."""

    async def denial_sent(self, intent: Intent, now: datetime) -> None:
        """The denial reached the callback (whatever it answered): drop the intent."""

    async def expire_leases(self, now: datetime) -> int:
        """End active subscriptions whose lease has run out; how many."""



@dataclass(frozen=True)
class VerifierConfig:
    #: How often the worker looks for due intents and expired leases when nothing woke
    #: it (a subscribe request wakes it at once).
    poll_interval: float = 1.0
    batch: int = 20
    #: Callbacks verified at the same time by one worker.
    concurrency: int = 8
    #: How long a claim holds: longer than the HTTP client's total time-out, so a slow
    #: callback is not verified twice.
    claim_hold: float = 60.0
    #: Delays before each retry after a transport failure; then the intent fails.
    retry_delays: tuple[float, ...] = (10.0, 60.0, 300.0)
    #: A challenge is 43 characters; a callback answering more cannot be echoing it.
    max_body: int = 4096


def _utcnow() -> datetime:
    return datetime.now(UTC)


class Verifier(RoundWorker):
    name = "verifier"

    def __init__(self, store: IntentStore, http: HttpClient, config: VerifierConfig | None = None,
                 *, clock: Callable[[], datetime] = _utcnow) -> None:
        self.store = store
        self.http = http
        self.config = config or VerifierConfig()
        self.clock = clock
        super().__init__(self.config.poll_interval)

    async def round(self) -> None:
        await self.run_once()

    async def run_once(self) -> int:
        """Expire leases, then attempt every due intent; how many were attempted."""
        now = self.clock()
        expired = await self.store.expire_leases(now)
        if expired:
            log.info("%d subscription lease(s) ran out", expired)
        done = 0
        limit = asyncio.Semaphore(self.config.concurrency)

        async def one(intent: Intent) -> None:
            async with limit:
                await self.attempt(intent)

        while True:
            batch = await self.store.claim(self.clock(), self.config.batch,
                                           timedelta(seconds=self.config.claim_hold))
            await asyncio.gather(*(one(i) for i in batch))
            done += len(batch)
            if len(batch) < self.config.batch:
                return done

    async def attempt(self, intent: Intent) -> None:
        denial = intent.mode == MODE_DENIED
        if denial:
            url = build_denial_url(intent.callback, topic=intent.topic, reason=intent.reason)
        else:
            url = build_verification_url(
                intent.callback, mode=intent.mode, topic=intent.topic,
                challenge=intent.challenge,
                lease_seconds=intent.lease_seconds if intent.mode == MODE_SUBSCRIBE else None,
            )
        try:
            response = await self.http.request("GET", url, headers=[("accept", "text/plain")],
                                               max_bytes=self.config.max_body)
        except AddressRefused as exc:
            await self.store.refused(intent, f"the callback's address is refused: {exc.reason}",
                                     self.clock())
            return
        except ResponseTooLarge:
            if denial:
                await self.store.denial_sent(intent, self.clock())
            else:
                await self.store.refused(
                    intent, f"the callback answered more than {self.config.max_body} bytes, "
                    "so not the hub.challenge echoed", self.clock())
            return
        except OutboundError as exc:
            await self._transport_failure(intent, f"could not reach the callback: {exc.reason}")
            return
        if denial:
            await self.store.denial_sent(intent, self.clock())
            return
        outcome = check_verification_response(response.status, response.body, intent.challenge)
        if outcome.verified:
            await self.store.verified(intent, self.clock())
        else:
            await self.store.refused(intent, outcome.reason, self.clock())

    async def _transport_failure(self, intent: Intent, reason: str) -> None:
        delays = self.config.retry_delays
        if intent.attempts < len(delays):
            at = self.clock() + timedelta(seconds=delays[intent.attempts])
            await self.store.retry(intent, reason, at)
        else:
            await self.store.refused(intent, f"{reason} (after {intent.attempts + 1} attempts)",
                                     self.clock())
