"""The subscriber side's worker: fetch followed topics, renew and end subscriptions.

A notification is a refresh signal (DESIGN.md): the callback only queues a *fetch job*
(one per topic, so a burst of pings costs one fetch), and this worker does the signed
``GET`` of the topic with ``If-None-Match``:

* 200 with an exported-item document of that topic → the store mirrors it;
* 304 → nothing changed, the sync time moves on;
* 404 / 410 → the host no longer shares the item with this instance ("no longer shared");
* anything else, a time-out or a refused connection → retried under
  :class:`protocol.delivery.RetryPolicy`; the topic is shown stale meanwhile.

It also sends the hub requests the store has due: lease renewals (a subscribe at
:func:`protocol.delivery.renew_at`) and unsubscribes after an unlink, and, on start and
every ``sweep_interval``, asks the store to queue fetches for topics whose last sync is
older than their last ping or than ``max_age``.

No SQL here: the store is :class:`RemoteStore` (``instance.remote.store`` implements it);
the HTTP client is anything shaped like ``hub.outbound.Outbound``; signing is an injected
callable, so this module never sees a private key.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Protocol
from urllib.parse import urlencode

from hub.outbound import HttpClient, OutboundError
from hub.worker import RoundWorker
from protocol.delivery import RetryPolicy
from protocol.documents import ExportedItem, parse_item
from protocol.errors import ProtocolError

log = logging.getLogger("fieldcast.hub.fetcher")

#: method, url, headers, body -> the signature headers to add.
Signer = Callable[[str, str, Sequence[tuple[str, str]], bytes], list[tuple[str, str]]]
MAX_DOCUMENT_BYTES = 8 * 1024 * 1024
FORM = "application/x-www-form-urlencoded"



# ---- one topic GET, one hub request: also what linking uses --------------------------


@dataclass(frozen=True, slots=True)
class TopicAnswer:
    """What a signed GET of a topic gave: ``kind`` is ok, not_modified, gone or failed."""

    kind: str
    status: int | None = None
    document: ExportedItem | None = None
    etag: str | None = None
    links: tuple[str, ...] = ()
    reason: str = ""


async def get_topic(http: HttpClient, sign: Signer, url: str, *, etag: str | None = None
                    ) -> TopicAnswer:
    headers = [("accept", "application/json")]
    if etag:
        headers.append(("if-none-match", etag))
    headers += sign("GET", url, headers, b"")
    try:
        response = await http.request("GET", url, headers=headers, max_bytes=MAX_DOCUMENT_BYTES)
    except OutboundError as exc:
        return TopicAnswer("failed", reason=f"the host does not answer: {exc.reason}")
    status = response.status
    links = tuple(response.header_values("link"))
    if status == 304:
        return TopicAnswer("not_modified", status, etag=etag, links=links)
    if status == 410:
        return TopicAnswer("gone", status, links=links,
                           reason="the host deleted the item")
    if status == 404:
        return TopicAnswer("gone", status, links=links,
                           reason="the host no longer exports any field of this item to "
                           "this instance")
    if status != 200:
        return TopicAnswer("failed", status, links=links,
                           reason=f"the host answered {status} to the topic GET")
    try:
        document = parse_item(response.body)
    except ProtocolError as exc:
        return TopicAnswer("failed", status, links=links,
                           reason=f"the answer is not a fieldcast exported-item document: {exc}")
    return TopicAnswer("ok", status, document, response.header("etag"), links)


async def send_hub_request(http: HttpClient, sign: Signer, *, hub: str, mode: str, topic: str,
                           callback: str, lease_seconds: int | None = None) -> str | None:
    """POST a signed (un)subscribe to ``hub``; None when accepted, else why not."""
    params = [("hub.mode", mode), ("hub.topic", topic), ("hub.callback", callback)]
    if mode == "subscribe" and lease_seconds:
        params.append(("hub.lease_seconds", str(lease_seconds)))
    body = urlencode(params).encode()
    headers = [("content-type", FORM)]
    headers += sign("POST", hub, headers, body)
    try:
        response = await http.request("POST", hub, headers=headers, body=body, max_bytes=4096)
    except OutboundError as exc:
        return f"the hub {hub} does not answer: {exc.reason}"
    if 200 <= response.status < 300:
        return None
    text = response.body.decode("utf-8", "replace").strip()[:300]
    return f"the hub {hub} answered {response.status}: {text or '(no reason given)'}"


# ---- the worker ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class FetchJob:
    id: int  # the subscription's
    topic: str
    etag: str | None
    attempts: int  # failed attempts before this one


@dataclass(frozen=True, slots=True)
class HubJob:
    id: int  # the subscription's
    mode: str  # subscribe (a renewal) or unsubscribe
    hub: str
    topic: str
    callback: str
    attempts: int
    lease_seconds: int | None = None


class RemoteStore(Protocol):
    async def claim_fetches(self, now: datetime, limit: int, hold: timedelta) -> list[FetchJob]:
        """Due fetch jobs no other worker holds, held for ``hold``."""

    async def fetched(self, job: FetchJob, document: ExportedItem, etag: str | None,
                      now: datetime) -> None:
        """Mirror the document into every item linked to the topic; the job is done."""

    async def not_modified(self, job: FetchJob, now: datetime) -> None: ...

    async def gone(self, job: FetchJob, reason: str, now: datetime) -> None:
        """The host no longer shares the item: clear the mirrored fields, say why."""

    async def failed(self, job: FetchJob, reason: str, now: datetime,
                     retry_at: datetime | None) -> None:
        """Show the topic stale; try again at ``retry_at`` (None: attempts used up)."""

    async def claim_hub_jobs(self, now: datetime, limit: int, hold: timedelta) -> list[HubJob]:
        """Due renewals and unsubscribes, each marked as awaiting its verification."""

    async def hub_job_done(self, job: HubJob, error: str | None, now: datetime,
                           retry_at: datetime | None) -> None: ...

    async def queue_stale(self, now: datetime, max_age: timedelta) -> int:
        """Queue a fetch of every linked topic synced before its last ping or ``max_age``
        ago; how many."""


def _utcnow() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True)
class FetcherConfig:
    poll_interval: float = 1.0
    batch: int = 20
    concurrency: int = 8
    #: Longer than the HTTP client's total time-out, so a slow host is not fetched twice.
    claim_hold: float = 60.0
    retry: RetryPolicy = field(default_factory=lambda: RetryPolicy(base=10.0, cap=900.0,
                                                                   max_attempts=20))
    #: How often the worker looks for topics synced too long ago.
    sweep_interval: float = 60.0


class Fetcher(RoundWorker):
    name = "fetcher"

    def __init__(self, store: RemoteStore, http: HttpClient, sign: Signer,
                 max_age: timedelta, config: FetcherConfig | None = None, *,
                 clock: Callable[[], datetime] = _utcnow,
                 rand: Callable[[], float] = random.random) -> None:
        self.store = store
        self.http = http
        self.sign = sign
        self.max_age = max_age
        self.config = config or FetcherConfig()
        self.clock = clock
        self.rand = rand
        super().__init__(self.config.poll_interval)
        self._last_sweep: datetime | None = None

    async def round(self) -> None:
        await self.run_once()

    async def run_once(self) -> int:
        """Sweep if due, send due hub requests, run due fetches; how many fetches."""
        now = self.clock()
        if (self._last_sweep is None
                or now - self._last_sweep >= timedelta(seconds=self.config.sweep_interval)):
            # The first sweep after a start looks at every followed topic: pings sent
            # while this process was down were lost, and the host tries them again only
            # after its backoff (up to an hour). Each is a conditional GET (304 if
            # nothing changed).
            max_age = timedelta(0) if self._last_sweep is None else self.max_age
            self._last_sweep = now
            queued = await self.store.queue_stale(now, max_age)
            if queued:
                log.info("%d followed topic(s) out of date: fetching", queued)
        hold = timedelta(seconds=self.config.claim_hold)
        for job in await self.store.claim_hub_jobs(now, self.config.batch, hold):
            await self.hub_request(job)
        limit = asyncio.Semaphore(self.config.concurrency)

        async def one(job: FetchJob) -> None:
            async with limit:
                await self.fetch(job)

        done = 0
        while True:
            batch = await self.store.claim_fetches(self.clock(), self.config.batch, hold)
            await asyncio.gather(*(one(j) for j in batch))
            done += len(batch)
            if len(batch) < self.config.batch:
                return done

    def _retry_at(self, attempt: int) -> datetime | None:
        now = self.clock()
        at = self.config.retry.next_attempt(attempt, now.timestamp(), self.rand())
        return None if at is None else datetime.fromtimestamp(at, UTC)

    async def fetch(self, job: FetchJob) -> None:
        answer = await get_topic(self.http, self.sign, job.topic, etag=job.etag)
        document = answer.document
        if answer.kind == "ok" and document is not None:
            if document.topic != job.topic:
                answer = TopicAnswer("failed", answer.status, reason=(
                    f"the host answered the document of {document.topic}, not of "
                    f"{job.topic}"))
            else:
                await self.store.fetched(job, document, answer.etag, self.clock())
                return
        if answer.kind == "not_modified":
            await self.store.not_modified(job, self.clock())
        elif answer.kind == "gone":
            await self.store.gone(job, answer.reason, self.clock())
        else:
            retry_at = self._retry_at(job.attempts + 1)
            await self.store.failed(job, answer.reason, self.clock(), retry_at)

    async def hub_request(self, job: HubJob) -> None:
        error = await send_hub_request(self.http, self.sign, hub=job.hub, mode=job.mode,
                                       topic=job.topic, callback=job.callback,
                                       lease_seconds=job.lease_seconds)
        retry_at = None if error is None else self._retry_at(job.attempts + 1)
        await self.store.hub_job_done(job, error, self.clock(), retry_at)
