"""The subscription and delivery state tables."""

from __future__ import annotations

import itertools

import pytest

from protocol.errors import LocalProtocolError
from protocol.states import (
    DELIVERY_TRANSITIONS,
    SUBSCRIPTION_TRANSITIONS,
    DeliveryEvent,
    DeliveryState,
    SubscriptionEvent,
    SubscriptionState,
    transition,
)

S, SE, D, DE = SubscriptionState, SubscriptionEvent, DeliveryState, DeliveryEvent

EXPECTED_SUBSCRIPTION = {
    (S.PENDING_VERIFICATION, SE.SUBSCRIBE_REQUESTED): S.PENDING_VERIFICATION,
    (S.PENDING_VERIFICATION, SE.VERIFIED): S.ACTIVE,
    (S.PENDING_VERIFICATION, SE.VERIFICATION_FAILED): S.DENIED,
    (S.PENDING_VERIFICATION, SE.DENIED): S.DENIED,
    (S.PENDING_VERIFICATION, SE.UNSUBSCRIBE_VERIFIED): S.UNSUBSCRIBED,
    (S.ACTIVE, SE.SUBSCRIBE_REQUESTED): S.ACTIVE,
    (S.ACTIVE, SE.VERIFIED): S.ACTIVE,
    (S.ACTIVE, SE.VERIFICATION_FAILED): S.ACTIVE,
    (S.ACTIVE, SE.UNSUBSCRIBE_REQUESTED): S.ACTIVE,
    (S.ACTIVE, SE.UNSUBSCRIBE_VERIFIED): S.UNSUBSCRIBED,
    (S.ACTIVE, SE.LEASE_EXPIRED): S.EXPIRED,
    (S.ACTIVE, SE.DENIED): S.DENIED,
    (S.ACTIVE, SE.CALLBACK_GONE): S.UNSUBSCRIBED,
    (S.EXPIRED, SE.SUBSCRIBE_REQUESTED): S.PENDING_VERIFICATION,
    (S.DENIED, SE.SUBSCRIBE_REQUESTED): S.PENDING_VERIFICATION,
    (S.UNSUBSCRIBED, SE.SUBSCRIBE_REQUESTED): S.PENDING_VERIFICATION,
}

EXPECTED_DELIVERY = {
    (D.PENDING, DE.CLAIMED): D.IN_FLIGHT,
    (D.PENDING, DE.GAVE_UP): D.DEAD,
    (D.IN_FLIGHT, DE.SUCCEEDED): D.DONE,
    (D.IN_FLIGHT, DE.FAILED): D.RETRY,
    (D.IN_FLIGHT, DE.RELEASED): D.PENDING,
    (D.IN_FLIGHT, DE.GONE): D.DEAD,
    (D.IN_FLIGHT, DE.GAVE_UP): D.DEAD,
    (D.RETRY, DE.CLAIMED): D.IN_FLIGHT,
    (D.RETRY, DE.GAVE_UP): D.DEAD,
}


@pytest.mark.parametrize(
    ("move", "target"), list({**EXPECTED_SUBSCRIPTION, **EXPECTED_DELIVERY}.items())
)
def test_every_allowed_transition(move: tuple, target: object) -> None:  # type: ignore[type-arg]
    assert transition(*move) == target


def test_tables_hold_exactly_the_documented_moves() -> None:
    assert dict(SUBSCRIPTION_TRANSITIONS) == EXPECTED_SUBSCRIPTION
    assert dict(DELIVERY_TRANSITIONS) == EXPECTED_DELIVERY


FORBIDDEN = [
    (move, table)
    for states, events, table in (
        (S, SE, EXPECTED_SUBSCRIPTION),
        (D, DE, EXPECTED_DELIVERY),
    )
    for move in itertools.product(states, events)
    if move not in table
]


@pytest.mark.parametrize("move", [m for m, _ in FORBIDDEN])
def test_every_forbidden_transition_raises(move: tuple) -> None:  # type: ignore[type-arg]
    with pytest.raises(LocalProtocolError, match="does not allow"):
        transition(*move)


def test_some_forbidden_moves_by_name() -> None:
    # A delivery that is done never goes back in flight; an expired lease is not revived
    # by a stray verification; a pending subscription has no lease to expire.
    for state, event in [
        (D.DONE, DE.CLAIMED),
        (D.DEAD, DE.SUCCEEDED),
        (S.EXPIRED, SE.VERIFIED),
        (S.PENDING_VERIFICATION, SE.LEASE_EXPIRED),
    ]:
        with pytest.raises(LocalProtocolError):
            transition(state, event)  # type: ignore[arg-type]


def test_mixing_machines_is_refused() -> None:
    with pytest.raises(LocalProtocolError, match="does not belong"):
        transition(S.ACTIVE, DE.CLAIMED)  # type: ignore[arg-type]


def test_states_are_plain_strings_for_storage() -> None:
    assert S("active") is S.ACTIVE
    assert D.IN_FLIGHT == "in_flight"


def test_resubscribe_lifecycle_walk() -> None:
    state: object = S.PENDING_VERIFICATION
    for event in [
        SE.VERIFIED,
        SE.SUBSCRIBE_REQUESTED,
        SE.VERIFICATION_FAILED,
        SE.LEASE_EXPIRED,
        SE.SUBSCRIBE_REQUESTED,
        SE.VERIFIED,
        SE.UNSUBSCRIBE_VERIFIED,
    ]:
        state = transition(state, event)  # type: ignore[arg-type]
    assert state == S.UNSUBSCRIBED
