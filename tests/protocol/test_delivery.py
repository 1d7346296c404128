"""Delivery rules: classifying answers, backoff with jitter, Retry-After, lease renewal."""

from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from protocol.delivery import (
    DEFAULT_RETRY,
    Outcome,
    RetryPolicy,
    classify,
    parse_retry_after,
    renew_at,
)
from protocol.errors import LocalProtocolError

# 1994-11-06T08:49:37Z, RFC 9110's example date.
EXAMPLE_DATE = 784111777.0


@pytest.mark.parametrize("status", [200, 201, 202, 204, 299])
def test_2xx_is_delivered(status: int) -> None:
    assert classify(status) is Outcome.DELIVERED


def test_410_ends_the_subscription() -> None:
    assert classify(410) is Outcome.GONE


@pytest.mark.parametrize("status", [None, 100, 199, 300, 301, 302, 304, 307, 400, 401, 403,
                                    404, 408, 409, 429, 451, 500, 501, 502, 503, 599])
def test_everything_else_is_retried(status: int | None) -> None:
    # REC §7: failures keep the subscription until its lease ends; only 410 ends it.
    assert classify(status) is Outcome.RETRY


@pytest.mark.parametrize("status", [True, "200", 200.0])
def test_classify_refuses_non_statuses(status: object) -> None:
    with pytest.raises(LocalProtocolError):
        classify(status)  # type: ignore[arg-type]


def test_default_schedule() -> None:
    policy = RetryPolicy(jitter=0.0)
    delays = [policy.next_attempt(a, 1000.0, 0.0) for a in range(1, 13)]
    assert delays[:9] == [1030.0, 1060.0, 1120.0, 1240.0, 1480.0, 1960.0, 2920.0, 4600.0,
                          4600.0]
    assert delays[11] is None  # attempt 12 was the last
    assert delays[10] == 4600.0


def test_jitter_shortens_only() -> None:
    policy = RetryPolicy(base=100.0, factor=2.0, cap=1000.0, max_attempts=5, jitter=0.5)
    assert policy.next_attempt(1, 0.0, 0.0) == 100.0
    assert policy.next_attempt(1, 0.0, 0.5) == 75.0
    assert policy.next_attempt(1, 0.0, 0.999) == pytest.approx(50.05)


def test_retry_after_is_honoured_within_the_cap() -> None:
    policy = RetryPolicy(base=10.0, factor=2.0, cap=600.0, max_attempts=3, jitter=0.0)
    assert policy.next_attempt(1, 0.0, 0.0, retry_after=120.0) == 120.0
    assert policy.next_attempt(1, 0.0, 0.0, retry_after=1.0) == 10.0  # not earlier than ours
    assert policy.next_attempt(1, 0.0, 0.0, retry_after=10**9) == 600.0  # bounded
    assert policy.next_attempt(3, 0.0, 0.0, retry_after=5.0) is None  # limit still holds
    with pytest.raises(LocalProtocolError):
        policy.next_attempt(1, 0.0, 0.0, retry_after=-1.0)
    with pytest.raises(LocalProtocolError):
        policy.next_attempt(1, 0.0, 0.0, retry_after=math.nan)


def test_huge_attempt_numbers_do_not_overflow() -> None:
    policy = RetryPolicy(max_attempts=10**9)
    assert policy.base_delay(10**8) == policy.cap
    assert RetryPolicy(factor=1.0, max_attempts=10**9).base_delay(10**8) == 30.0


@pytest.mark.parametrize("attempt", [0, -1, True, 1.0])
def test_attempts_count_from_one(attempt: object) -> None:
    with pytest.raises(LocalProtocolError):
        DEFAULT_RETRY.next_attempt(attempt, 0.0, 0.0)  # type: ignore[arg-type]


@pytest.mark.parametrize("rand", [-0.1, 1.0, 2.0, math.nan])
def test_rand_must_be_a_unit_draw(rand: float) -> None:
    with pytest.raises(LocalProtocolError):
        DEFAULT_RETRY.next_attempt(1, 0.0, rand)


@pytest.mark.parametrize(
    "kwargs",
    [dict(base=0), dict(base=-1), dict(base=10, cap=5), dict(factor=0.5), dict(max_attempts=0),
     dict(jitter=1.0), dict(jitter=-0.1), dict(cap=math.inf), dict(base=math.nan),
     dict(max_attempts=1.5), dict(base=True), dict(factor="2")],
)
def test_retry_policy_validates_at_construction(kwargs: dict[str, object]) -> None:
    with pytest.raises(LocalProtocolError):
        RetryPolicy(**kwargs)  # type: ignore[arg-type]


policies = st.builds(
    RetryPolicy,
    base=st.floats(min_value=0.001, max_value=1e4),
    factor=st.floats(min_value=1.0, max_value=100.0),
    cap=st.floats(min_value=1e4, max_value=1e7),
    max_attempts=st.integers(min_value=1, max_value=10**6),
    jitter=st.floats(min_value=0.0, max_value=0.999),
)
attempts = st.integers(min_value=1, max_value=10**6)
draws = st.floats(min_value=0.0, max_value=1.0, exclude_max=True)


@given(policies, attempts)
def test_base_delays_never_decrease(policy: RetryPolicy, attempt: int) -> None:
    assert policy.base_delay(attempt) <= policy.base_delay(attempt + 1)


@given(policies, attempts)
def test_base_delays_start_at_base_and_respect_the_cap(policy: RetryPolicy,
                                                       attempt: int) -> None:
    assert policy.base_delay(1) == policy.base
    assert policy.base <= policy.base_delay(attempt) <= policy.cap


@given(policies, attempts, draws, st.floats(min_value=0, max_value=1e9))
def test_jitter_and_cap_bound_every_delay(policy: RetryPolicy, attempt: int, rand: float,
                                          now: float) -> None:
    when = policy.next_attempt(attempt, now, rand)
    if attempt >= policy.max_attempts:
        assert when is None
        return
    assert when is not None
    delay = when - now
    base = policy.base_delay(attempt)
    # Float rounding of now + delay - now: allow a hair of slack.
    slack = 1e-6 * max(1.0, now)
    assert base * (1 - policy.jitter) - slack <= delay <= base + slack
    assert delay <= policy.cap + slack


@given(policies, attempts, draws, st.one_of(st.none(), st.floats(min_value=0, max_value=1e12)))
def test_retry_after_never_exceeds_the_cap(policy: RetryPolicy, attempt: int, rand: float,
                                           retry_after: float | None) -> None:
    when = policy.next_attempt(attempt, 0.0, rand, retry_after=retry_after)
    if when is not None:
        assert 0 < when <= policy.cap
        if retry_after is not None:
            assert when >= min(retry_after, policy.cap)


# --------------------------------------------------------------------------- Retry-After


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("120", 120.0),
        (" 0 ", 0.0),
        ("Sun, 06 Nov 1994 08:51:37 GMT", 120.0),  # IMF-fixdate
        ("Sunday, 06-Nov-94 08:51:37 GMT", 120.0),  # obsolete RFC 850
        ("Sun Nov  6 08:51:37 1994", 120.0),  # obsolete asctime
        ("Sun, 06 Nov 1994 08:00:00 GMT", 0.0),  # in the past: now
        (None, None),
        ("", None),
        ("soon", None),
        ("-5", None),
        ("1.5", None),
        ("１２０", None),  # fullwidth digits: str.isdigit says yes, RFC 9110 says DIGIT
        ("9" * 13, None),
        ("Sun, 99 Nov 1994 08:51:37 GMT", None),
    ],
)
def test_parse_retry_after(value: str | None, expected: float | None) -> None:
    assert parse_retry_after(value, EXAMPLE_DATE) == expected


# --------------------------------------------------------------------------- leases


def test_renew_at_80_percent_of_a_long_lease() -> None:
    ten_days = 10 * 86400
    assert renew_at(1000.0, ten_days) == 1000.0 + 8 * 86400


def test_renew_keeps_a_margin_before_the_end() -> None:
    # 80 % of 4 h leaves 48 min; the 1 h margin wins.
    assert renew_at(0.0, 4 * 3600) == 3 * 3600
    # Shorter than twice the margin: half the lease.
    assert renew_at(0.0, 3600) == 1800
    assert renew_at(0.0, 60) == 30


@given(st.floats(min_value=0, max_value=1e10), st.floats(min_value=0.001, max_value=1e9),
       st.floats(min_value=0.01, max_value=0.99), st.floats(min_value=0, max_value=1e6))
def test_renewal_always_falls_inside_the_lease(start: float, lease: float, fraction: float,
                                               margin: float) -> None:
    at = renew_at(start, lease, fraction=fraction, margin=margin)
    assert start <= at <= start + lease
    assert at - start <= fraction * lease + 1e-9 * max(1.0, start)


@pytest.mark.parametrize("kwargs", [dict(lease_seconds=0), dict(lease_seconds=-1),
                                    dict(lease_seconds=math.inf), dict(fraction=1.0),
                                    dict(fraction=0.0), dict(margin=-1)])
def test_renew_at_validates(kwargs: dict[str, float]) -> None:
    args: dict[str, float] = {"lease_start": 0.0, "lease_seconds": 100.0, **kwargs}
    with pytest.raises(LocalProtocolError):
        renew_at(**args)
