"""The delivery worker: claims due notifications, sends them, records the outcome.

No SQL here (the store is :class:`DeliveryStore`) and no documents either: the
instance's :class:`Composer` turns a claimed delivery into the request to send (a thin
signed ping for a fieldcast partner, the topic's bytes for a plain WebSub subscriber).
The worker decides with ``protocol.delivery``: 2xx done, 410 the subscription ends,
anything else (a time-out, a refused connection, any other status) is retried under the
:class:`~protocol.delivery.RetryPolicy`, ``Retry-After`` honoured, until the attempts
run out or the subscription's lease ends: then the delivery is dead, its last status
and error kept for the admin. Every move goes through ``protocol.states.transition``.

A slow callback holds only its own slot: up to ``concurrency`` requests run at once,
each bounded by ``timeout``, and a free slot is refilled at once rather than after the
whole batch.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Protocol

from hub.outbound import HttpClient, OutboundError
from hub.worker import RoundWorker
from protocol.delivery import DEFAULT_RETRY, Outcome, RetryPolicy, classify, parse_retry_after
from protocol.states import DeliveryEvent, DeliveryState, transition

log = logging.getLogger("fieldcast.hub.delivery")


@dataclass(frozen=True, slots=True)
class Claimed:
    """A delivery a worker holds, with what it needs of its subscription."""

    id: int
    subscription_id: int
    topic: str
    item_id: int | None  # None for a tracker's feed (then ``tracker_id`` is set)
    event_id: int
    item_version: int  # the topic version the ping announces (hub.projector.Owed)
    fields: tuple[str, ...]
    #: Attempts including this one; also the guard that makes the store ignore a
    #: result for a row another worker re-claimed meanwhile.
    attempt: int
    callback: str
    origin: str | None
    secret: str | None
    subscription_active: bool
    lease_expires_at: datetime | None
    tracker_id: int | None = None


@dataclass(frozen=True, slots=True)
class Outgoing:
    headers: list[tuple[str, str]]
    body: bytes


class Composer(Protocol):
    async def compose(self, delivery: Claimed) -> Outgoing:
        """The request to POST to ``delivery.callback``."""


class DeliveryStore(Protocol):
    async def claim(self, now: datetime, limit: int, hold: timedelta) -> list[Claimed]:
        """Due deliveries (pending or retry, or in flight with an expired claim), at
        most one per (subscription, topic), held for ``hold``; state in_flight."""

    async def finish(self, delivery: Claimed, state: DeliveryState, *, now: datetime,
                     status: int | None = None, error: str | None = None,
                     retry_at: datetime | None = None, gone: bool = False) -> None:
        """Record the attempt: ``state`` done, retry (at ``retry_at``) or dead; ``gone``
        ends the subscription (410). Ignored if the row was re-claimed meanwhile."""



@dataclass(frozen=True)
class DeliveryConfig:
    #: Seconds between looks for due deliveries when nothing woke the worker.
    poll_interval: float = 1.0
    #: Requests in flight at once, per worker.
    concurrency: int = 16
    #: The whole attempt, from connecting to the last byte of the answer.
    timeout: float = 20.0
    #: How long a claim holds; longer than ``timeout``, so a live worker's row is never
    #: taken by another. After it, a crashed worker's rows are taken again.
    claim_hold: float = 60.0
    retry: RetryPolicy = DEFAULT_RETRY
    #: A callback's answer is not read beyond this (only its status matters).
    max_body: int = 4096


def _utcnow() -> datetime:
    return datetime.now(UTC)


_D, _E = DeliveryState, DeliveryEvent


class DeliveryWorker(RoundWorker):
    name = "delivery worker"

    def __init__(self, store: DeliveryStore, composer: Composer, http: HttpClient,
                 config: DeliveryConfig | None = None, *,
                 clock: Callable[[], datetime] = _utcnow,
                 rand: Callable[[], float] = random.random) -> None:
        self.store = store
        self.composer = composer
        self.http = http
        self.config = config or DeliveryConfig()
        self.clock = clock
        self.rand = rand
        super().__init__(self.config.poll_interval)
        self._inflight: set[asyncio.Task[None]] = set()

    async def stop(self) -> None:
        """Stop claiming and cancel attempts in flight: their rows stay in flight until
        the claim runs out, then another worker (or this one restarted) sends them."""
        await super().stop()
        tasks = list(self._inflight)
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._inflight.clear()

    async def round(self) -> None:
        await self.fill()

    async def fill(self) -> int:
        """Claim as many due deliveries as there are free slots and start them."""
        free = self.config.concurrency - len(self._inflight)
        if free <= 0:
            return 0
        claimed = await self.store.claim(self.clock(), free,
                                         timedelta(seconds=self.config.claim_hold))
        for delivery in claimed:
            task = asyncio.create_task(self._attempt_logged(delivery))
            self._inflight.add(task)
            task.add_done_callback(self._done)
        return len(claimed)

    def _done(self, task: asyncio.Task[None]) -> None:
        self._inflight.discard(task)
        self._wake.set()  # a slot is free

    async def drain(self) -> None:
        """Until nothing is due and nothing in flight (tests, shutdown)."""
        while await self.fill() or self._inflight:
            if self._inflight:
                await asyncio.wait(set(self._inflight))

    async def _attempt_logged(self, delivery: Claimed) -> None:
        try:
            await self.attempt(delivery)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            # A bug or a database hiccup: the row must not stay in flight until its
            # claim runs out with nobody saying why.
            log.exception("delivery %d to %s failed", delivery.id, delivery.callback)
            with contextlib.suppress(Exception):
                at = self.config.retry.next_attempt(delivery.attempt, self.clock().timestamp(),
                                                    self.rand())
                event = _E.GAVE_UP if at is None else _E.FAILED
                await self._finish(delivery, event, error=f"internal error: {exc!r}",
                                   retry_at=None if at is None else datetime.fromtimestamp(at, UTC))

    async def attempt(self, delivery: Claimed) -> None:
        now = self.clock()
        if not delivery.subscription_active or (
                delivery.lease_expires_at is not None and delivery.lease_expires_at <= now):
            await self._finish(delivery, _E.GAVE_UP, error="the subscription ended")
            return
        outgoing = await self.composer.compose(delivery)
        status: int | None = None
        retry_after: str | None = None
        error: str | None = None
        try:
            response = await asyncio.wait_for(
                self.http.request("POST", delivery.callback, headers=outgoing.headers,
                                  body=outgoing.body, max_bytes=self.config.max_body),
                self.config.timeout)
            status, retry_after = response.status, response.header("retry-after")
        except TimeoutError:
            error = f"no answer within {self.config.timeout:g} s"
        except OutboundError as exc:
            error = exc.reason
        outcome = classify(status)
        if outcome is Outcome.DELIVERED:
            await self._finish(delivery, _E.SUCCEEDED, status=status)
        elif outcome is Outcome.GONE:
            await self._finish(delivery, _E.GONE, status=status,
                               error="the callback answered 410 Gone", gone=True)
        else:
            if error is None:
                error = f"the callback answered {status}"
            now = self.clock()
            wait = parse_retry_after(retry_after, now.timestamp())
            at = self.config.retry.next_attempt(delivery.attempt, now.timestamp(), self.rand(),
                                                retry_after=wait)
            when = None if at is None else datetime.fromtimestamp(at, UTC)
            if when is None or (delivery.lease_expires_at is not None
                                and when >= delivery.lease_expires_at):
                await self._finish(delivery, _E.GAVE_UP, status=status,
                                   error=f"{error}; gave up after {delivery.attempt} attempt(s)")
            else:
                await self._finish(delivery, _E.FAILED, status=status, error=error,
                                   retry_at=when)

    async def _finish(self, delivery: Claimed, event: DeliveryEvent, *,
                      status: int | None = None, error: str | None = None,
                      retry_at: datetime | None = None, gone: bool = False) -> None:
        state = transition(_D.IN_FLIGHT, event)
        await self.store.finish(delivery, state, now=self.clock(), status=status,
                                error=error, retry_at=retry_at, gone=gone)


#: Signature profiles this instance can sign with, best first (PROTOCOL.md, "Profiles").
SIGNING_PREFERENCE: tuple[str, ...] = ("rfc9421-ed25519", "cavage-rsa-sha256")


def best_profile(theirs: Sequence[str], ours: Sequence[str] = SIGNING_PREFERENCE
                 ) -> str | None:
    """The best profile both sides accept, or None."""
    return next((p for p in ours if p in theirs), None)
