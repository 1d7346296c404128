"""hub.verifier against an in-memory store: what it reports for each kind of answer."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from hub.outbound import Outbound, OutboundConfig, OutboundResponse
from hub.verifier import Intent, Verifier, VerifierConfig
from protocol.addresses import AddressPolicy


class Store:
    def __init__(self, *intents: Intent) -> None:
        self.due = list(intents)
        self.log: list[tuple[str, int, str]] = []

    async def claim(self, now: datetime, limit: int, hold: timedelta) -> list[Intent]:
        batch, self.due = self.due[:limit], self.due[limit:]
        return batch

    async def verified(self, intent: Intent, now: datetime) -> None:
        self.log.append(("verified", intent.id, ""))

    async def refused(self, intent: Intent, reason: str, now: datetime) -> None:
        self.log.append(("refused", intent.id, reason))

    async def retry(self, intent: Intent, reason: str, at: datetime) -> None:
        self.log.append(("retry", intent.id, reason))

    async def denial_sent(self, intent: Intent, now: datetime) -> None:
        self.log.append(("denial_sent", intent.id, ""))

    async def expire_leases(self, now: datetime) -> int:
        return 0


def intent(n: int, mode: str = "subscribe", callback: str = "https://b.example/cb") -> Intent:
    return Intent(id=n, mode=mode, topic="https://a.example/federation/items/1",
                  callback=callback, challenge=f"challenge-{n}", attempts=0,
                  lease_seconds=60 if mode == "subscribe" else None, reason="no")


class Answers:
    """An HTTP client that answers from a table keyed by challenge, recording URLs."""

    def __init__(self, answers: dict[int, tuple[int, bytes]]) -> None:
        self.answers = answers
        self.urls: list[str] = []

    async def request(self, method: str, url: str, **_: Any) -> OutboundResponse:
        self.urls.append(url)
        n = int(url.split("challenge-")[1].split("&")[0]) if "challenge-" in url else 0
        status, body = self.answers.get(n, (200, b""))
        return OutboundResponse(status, [], body)


async def test_each_answer_is_reported_as_the_rec_says() -> None:
    store = Store(intent(1), intent(2), intent(3), intent(4, "denied"),
                  intent(5, "unsubscribe"))
    http = Answers({1: (200, b"challenge-1"), 2: (200, b"challenge-1"), 3: (404, b""),
                    5: (204, b"challenge-5")})
    assert await Verifier(store, http).run_once() == 5  # type: ignore[arg-type]
    outcome = {n: (what, reason) for what, n, reason in store.log}
    assert outcome[1] == ("verified", "")
    assert outcome[2][0] == "refused" and "echoed exactly" in outcome[2][1]
    assert outcome[3] == ("refused", "the subscriber refused (404)")
    assert outcome[4] == ("denial_sent", "")
    assert outcome[5] == ("verified", "")
    denial = next(u for u in http.urls if "hub.mode=denied" in u)
    assert "hub.reason=no" in denial and "challenge" not in denial


async def test_a_refused_address_fails_at_once_without_retry() -> None:
    store = Store(intent(1, callback="https://127.0.0.1/cb"))
    outbound = Outbound(OutboundConfig(policy=AddressPolicy()))
    try:
        await Verifier(store, outbound, VerifierConfig(retry_delays=(1.0,))).run_once()
    finally:
        await outbound.aclose()
    ((what, _, reason),) = store.log
    assert what == "refused" and "address is refused" in reason
