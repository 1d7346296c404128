"""Login throttling: per pair, per address, per account, without locking a user out."""

from __future__ import annotations

import pytest

from instance.errors import ApiError
from instance.throttle import LoginThrottle, ThrottleConfig
from tests.conftest import PASSWORD, Env


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def wait_for(throttle: LoginThrottle, account: str, address: str) -> int:
    try:
        throttle.check(account, address)
    except ApiError as exc:
        assert exc.status == 429
        return int(exc.headers["Retry-After"])
    return 0


def test_a_pair_waits_exponentially_and_a_success_resets_it() -> None:
    clock = Clock()
    t = LoginThrottle(clock=clock)
    waits = []
    for _ in range(8):
        clock.now += wait_for(t, "alice", "1.2.3.4")
        assert wait_for(t, "alice", "1.2.3.4") == 0
        t.failed("alice", "1.2.3.4")
        waits.append(wait_for(t, "alice", "1.2.3.4"))
    assert waits == [0, 0, 1, 2, 4, 8, 16, 32]
    # Another address is not held up by this pair.
    assert wait_for(t, "alice", "5.6.7.8") == 0
    t.succeeded("alice", "1.2.3.4")
    assert wait_for(t, "alice", "1.2.3.4") == 0


def test_an_address_spraying_accounts_is_slowed() -> None:
    clock = Clock()
    t = LoginThrottle(ThrottleConfig(address_burst=5, address_refill=10), clock=clock)
    for n in range(5):
        assert wait_for(t, f"user{n}", "9.9.9.9") == 0
        t.failed(f"user{n}", "9.9.9.9")
    assert wait_for(t, "someone", "9.9.9.9") == 10
    assert wait_for(t, "someone", "1.1.1.1") == 0
    clock.now += 10
    assert wait_for(t, "someone", "9.9.9.9") == 0


def test_many_addresses_against_one_account_do_not_lock_its_user_out() -> None:
    clock = Clock()
    t = LoginThrottle(ThrottleConfig(account_burst=10, account_refill=6), clock=clock)
    for n in range(10):
        t.failed("alice", f"10.0.0.{n}")
    # A failing address waits for the account's refill...
    assert wait_for(t, "alice", "10.0.0.1") == 6
    # ...an address that has not failed gets in at once, then at most one per second.
    assert wait_for(t, "alice", "192.168.1.1") == 0
    assert wait_for(t, "alice", "192.168.1.2") == 1
    clock.now += 1
    assert wait_for(t, "alice", "192.168.1.2") == 0
    # Other accounts are untouched.
    assert wait_for(t, "bob", "10.0.0.1") == 0


def test_tables_are_bounded() -> None:
    t = LoginThrottle(ThrottleConfig(max_entries=100), clock=Clock())
    for n in range(1000):
        t.failed(f"u{n}", f"a{n}")
    assert len(t._pairs) <= 100 and len(t._accounts) <= 100 and len(t._addresses) <= 100


async def test_forty_wrong_passwords_then_the_right_one_is_throttled(env: Env) -> None:
    anon = await env.client()
    statuses = []
    for _ in range(40):
        r = await anon.post("/api/login", json={"username": "admin", "password": "wrong pw!"})
        statuses.append(r.status_code)
    assert statuses[:3] == [401, 401, 401]
    assert statuses.count(429) >= 30
    r = await anon.post("/api/login", json={"username": "admin", "password": PASSWORD})
    assert r.status_code == 429
    assert int(r.headers["Retry-After"]) >= 1
    body = await r.get_json()
    assert body["error"] == "too_many_attempts" and body["retry_after"] >= 1


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
async def test_the_right_password_from_another_address_still_works(env: Env) -> None:
    anon = await env.client()
    for _ in range(10):
        await anon.post("/api/login", json={"username": "admin", "password": "wrong pw!"})
    other = await env.client()
    r = await other.post("/api/login", json={"username": "admin", "password": PASSWORD},
                         scope_base={"client": ("198.51.100.7", 5000)})
    assert r.status_code == 200
