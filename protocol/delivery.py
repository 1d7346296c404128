"""Delivery rules, sans-IO: what an answer means, when to try again, when to renew.

The delivery worker (``hub/``) sends; these functions decide. All take numbers (a
status, a clock value, a random draw) and return numbers or an :class:`Outcome`, so
each rule is tested with plain vectors and property tests.

* :func:`classify` — a callback's answer to a distribution (REC §7).
* :class:`RetryPolicy` — exponential backoff with jitter, bounded, honouring
  ``Retry-After`` (:func:`parse_retry_after`, RFC 9110 §10.2.3).
* :func:`renew_at` — when a subscriber renews its lease (REC §5.1, §8.2).
"""

from __future__ import annotations

import email.utils
import math
from dataclasses import dataclass
from datetime import UTC
from enum import StrEnum
from typing import Final

from protocol.errors import LocalProtocolError

__all__ = [
    "DEFAULT_RETRY",
    "RENEW_FRACTION",
    "RENEW_MARGIN",
    "Outcome",
    "RetryPolicy",
    "classify",
    "parse_retry_after",
    "renew_at",
]


class Outcome(StrEnum):
    """What a distribution attempt's answer means for the delivery and the subscription.

    In the delivery state table (``DeliveryEvent`` in ``protocol.websub``) these are
    SUCCEEDED, GONE and FAILED; a FAILED attempt becomes GAVE_UP when
    :meth:`RetryPolicy.next_attempt` returns ``None``. Not imported here, so this
    module stays free of the WebSub message code.
    """

    #: 2xx: the callback has the content; the delivery is done.
    DELIVERED = "delivered"
    #: 410 Gone: the subscriber deleted the subscription; end it (REC §7: "the hub MAY
    #: terminate the subscription").
    GONE = "gone"
    #: Anything else, or no answer at all: try again later; the subscription stays.
    RETRY = "retry"


def classify(status: int | None) -> Outcome:
    """The :class:`Outcome` of one attempt; ``None`` is a transport failure or time-out.

    REC §7: a 2xx is success, 410 means the subscription was deleted, and every other
    code is a failure after which the hub SHOULD retry "up to self-imposed limits" but
    "MUST keep the subscription active until the end of the lease duration". So unlike
    Mastodon's delivery worker (which drops a delivery on most 4xx and on 501 as
    "unsalvageable"), no status other than 410 ends anything here: a 404 or 403 is a
    failed attempt, retried under :class:`RetryPolicy`, and the next publish tries again
    while the lease lasts. A 3xx is a failure too: callbacks are never redirected (the
    redirect target would escape the address policy, and REC §5.1.1 makes the callback
    URL exact).
    """
    if status is None:
        return Outcome.RETRY
    if isinstance(status, bool) or not isinstance(status, int):
        raise LocalProtocolError(f"status must be an int or None, got {status!r}")
    if 200 <= status <= 299:
        return Outcome.DELIVERED
    if status == 410:
        return Outcome.GONE
    return Outcome.RETRY


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """Exponential backoff: attempt ``n`` failed → wait ``base * factor**(n-1)`` seconds,
    at most ``cap``, minus up to ``jitter`` of it; give up after ``max_attempts`` attempts.

    Jitter only shortens a delay, so the cap is a hard bound and a delay never drops
    below ``(1 - jitter)`` of its base; it spreads retries of many subscriptions that
    failed together (one hub outage) so they do not all return in the same second.

    The defaults (30 s, doubling, capped at 1 h, 12 attempts) spread about 5 hours of
    retries: shorter than Mastodon's ~2 days, because a WebSub hub retries anyway on the
    topic's next publish while the lease (10 days by default, REC §8.2) lasts.
    """

    base: float = 30.0
    factor: float = 2.0
    cap: float = 3600.0
    max_attempts: int = 12
    jitter: float = 0.2

    def __post_init__(self) -> None:
        for name in ("base", "factor", "cap", "jitter"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise LocalProtocolError(f"RetryPolicy.{name} must be a number, got {value!r}")
            if not math.isfinite(value):
                raise LocalProtocolError(f"RetryPolicy.{name} must be finite, got {value!r}")
        if isinstance(self.max_attempts, bool) or not isinstance(self.max_attempts, int):
            raise LocalProtocolError(f"RetryPolicy.max_attempts must be an int, got "
                                     f"{self.max_attempts!r}")
        if not 0 < self.base <= self.cap:
            raise LocalProtocolError(f"RetryPolicy needs 0 < base <= cap, got base={self.base}"
                                     f", cap={self.cap}")
        if self.factor < 1:
            raise LocalProtocolError(f"RetryPolicy.factor must be >= 1, got {self.factor}")
        if self.max_attempts < 1:
            raise LocalProtocolError(f"RetryPolicy.max_attempts must be >= 1, got "
                                     f"{self.max_attempts}")
        if not 0 <= self.jitter < 1:
            raise LocalProtocolError(f"RetryPolicy.jitter must be in [0, 1), got {self.jitter}")

    def base_delay(self, attempt: int) -> float:
        """The delay after failed attempt ``attempt`` (1-based), before jitter."""
        _check_attempt(attempt)
        steps = attempt - 1
        # Compare in log space: factor**steps overflows a float long before attempt
        # numbers stop being plausible, and the answer is the cap long before that.
        if self.factor > 1 and steps * math.log(self.factor) >= math.log(self.cap / self.base):
            return self.cap
        return min(self.cap, self.base * self.factor**steps)

    def next_attempt(
        self, attempt: int, now: float, rand: float, *, retry_after: float | None = None
    ) -> float | None:
        """When to try again after failed attempt ``attempt`` (1-based), as a clock value.

        ``rand`` is a draw from [0, 1) (injected, so tests are exact). ``retry_after`` is
        the server's ``Retry-After`` in seconds (:func:`parse_retry_after`): the retry is
        not earlier than it asks, but never later than ``cap`` — a hostile or confused
        server must not park a delivery for a year. ``None`` when the attempts are used up.
        """
        _check_attempt(attempt)
        if not 0 <= rand < 1:
            raise LocalProtocolError(f"rand must be in [0, 1), got {rand!r}")
        if attempt >= self.max_attempts:
            return None
        delay = self.base_delay(attempt) * (1 - self.jitter * rand)
        if retry_after is not None:
            if not math.isfinite(retry_after) or retry_after < 0:
                raise LocalProtocolError(f"retry_after must be >= 0 seconds, got {retry_after}")
            delay = max(delay, min(retry_after, self.cap))
        return now + delay


DEFAULT_RETRY: Final = RetryPolicy()


def _check_attempt(attempt: int) -> None:
    if isinstance(attempt, bool) or not isinstance(attempt, int) or attempt < 1:
        raise LocalProtocolError(f"attempt must be an int >= 1, got {attempt!r}")


# Longer digit strings are not a plausible number of seconds; refusing them keeps int()
# away from megabyte-long input.
_MAX_RETRY_AFTER_DIGITS: Final = 12


def parse_retry_after(value: str | None, now: float) -> float | None:
    """A ``Retry-After`` value (RFC 9110 §10.2.3) as seconds from ``now``, or ``None``.

    Both forms: delay-seconds (``120``) and an HTTP-date (IMF-fixdate, and the obsolete
    RFC 850 and asctime forms a recipient must accept, RFC 9110 §5.6.7). A date in the
    past means "now" (0). An unparseable value is ignored (``None``): it is the peer's
    hint, not something to fail a delivery over. Bounding by the cap is
    :meth:`RetryPolicy.next_attempt`'s job.
    """
    if value is None:
        return None
    text = value.strip()
    if not text:
        return None
    if text.isdigit() and text.isascii():
        if len(text) > _MAX_RETRY_AFTER_DIGITS:
            return None
        return float(int(text))
    try:
        when = email.utils.parsedate_to_datetime(text)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:  # asctime form and "-0000": UTC (RFC 9110 §5.6.7)
        when = when.replace(tzinfo=UTC)
    return max(0.0, when.timestamp() - now)


#: A subscriber renews when this fraction of its lease has passed ...
RENEW_FRACTION: Final = 0.8
#: ... but at least this many seconds before the lease ends (a slow hub, a retry or two).
RENEW_MARGIN: Final = 3600.0


def renew_at(
    lease_start: float,
    lease_seconds: float,
    *,
    fraction: float = RENEW_FRACTION,
    margin: float = RENEW_MARGIN,
) -> float:
    """When a subscriber should send its renewing subscribe request, as a clock value.

    REC §5.1: a subscription ends with its lease unless renewed, and the hub verifies the
    renewal (§5.3) before it counts, so renewing at the last moment loses deliveries.
    Renew at ``fraction`` of the lease (80 %: for the default 10-day lease, after 8 days),
    or ``margin`` before the end if that is earlier. For a lease shorter than twice the
    margin the margin shrinks to half the lease, so the answer always lies strictly
    inside the lease: after ``lease_start`` and before ``lease_start + lease_seconds``.
    """
    if not math.isfinite(lease_seconds) or lease_seconds <= 0:
        raise LocalProtocolError(f"lease_seconds must be positive, got {lease_seconds!r}")
    if not 0 < fraction < 1:
        raise LocalProtocolError(f"fraction must be in (0, 1), got {fraction!r}")
    if not math.isfinite(margin) or margin < 0:
        raise LocalProtocolError(f"margin must be >= 0 seconds, got {margin!r}")
    before_end = lease_seconds - min(margin, lease_seconds / 2)
    return lease_start + min(fraction * lease_seconds, before_end)
