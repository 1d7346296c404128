"""Subscription and delivery state machines, as explicit tables (h11's ``_state.py``).

Each table maps (state, event) to the next state; a move that is not in the table is a
bug on our side, and :func:`transition` raises :class:`LocalProtocolError` for it. The
values are plain strings, so they can be stored as they are.
"""

from __future__ import annotations

from collections.abc import Mapping
from enum import StrEnum
from typing import Final, overload

from protocol.errors import LocalProtocolError

__all__ = [
    "DELIVERY_TRANSITIONS",
    "SUBSCRIPTION_TRANSITIONS",
    "DeliveryEvent",
    "DeliveryState",
    "SubscriptionEvent",
    "SubscriptionState",
    "transition",
]


class SubscriptionState(StrEnum):
    PENDING_VERIFICATION = "pending_verification"
    ACTIVE = "active"
    EXPIRED = "expired"
    DENIED = "denied"
    UNSUBSCRIBED = "unsubscribed"


class SubscriptionEvent(StrEnum):
    SUBSCRIBE_REQUESTED = "subscribe_requested"
    VERIFIED = "verified"
    VERIFICATION_FAILED = "verification_failed"
    DENIED = "denied"
    UNSUBSCRIBE_REQUESTED = "unsubscribe_requested"
    UNSUBSCRIBE_VERIFIED = "unsubscribe_verified"
    LEASE_EXPIRED = "lease_expired"
    CALLBACK_GONE = "callback_gone"


_S = SubscriptionState
_SE = SubscriptionEvent

#: (state, event) -> next state, for one (topic, callback) pair. Anything absent is a bug.
SUBSCRIPTION_TRANSITIONS: Final[
    Mapping[tuple[SubscriptionState, SubscriptionEvent], SubscriptionState]
] = {
    # A repeated request before verification replaces the pending one (new challenge).
    (_S.PENDING_VERIFICATION, _SE.SUBSCRIBE_REQUESTED): _S.PENDING_VERIFICATION,
    (_S.PENDING_VERIFICATION, _SE.VERIFIED): _S.ACTIVE,
    # The subscriber did not confirm: the subscription never came into being.
    (_S.PENDING_VERIFICATION, _SE.VERIFICATION_FAILED): _S.DENIED,
    (_S.PENDING_VERIFICATION, _SE.DENIED): _S.DENIED,
    (_S.PENDING_VERIFICATION, _SE.UNSUBSCRIBE_VERIFIED): _S.UNSUBSCRIBED,
    # REC §5.1: a re-request overrides the state "only once the action is verified";
    # a failed re-verification leaves the active subscription as it was (hub test 103).
    (_S.ACTIVE, _SE.SUBSCRIBE_REQUESTED): _S.ACTIVE,
    (_S.ACTIVE, _SE.VERIFIED): _S.ACTIVE,  # lease renewed
    (_S.ACTIVE, _SE.VERIFICATION_FAILED): _S.ACTIVE,
    (_S.ACTIVE, _SE.UNSUBSCRIBE_REQUESTED): _S.ACTIVE,
    (_S.ACTIVE, _SE.UNSUBSCRIBE_VERIFIED): _S.UNSUBSCRIBED,
    (_S.ACTIVE, _SE.LEASE_EXPIRED): _S.EXPIRED,  # REC §5.3.1: MUST enforce leases
    (_S.ACTIVE, _SE.DENIED): _S.DENIED,  # REC §5.2: a denial may come at any time
    (_S.ACTIVE, _SE.CALLBACK_GONE): _S.UNSUBSCRIBED,  # REC §7: 410 Gone
    # Re-subscribe after the end of a subscription starts over.
    (_S.EXPIRED, _SE.SUBSCRIBE_REQUESTED): _S.PENDING_VERIFICATION,
    (_S.DENIED, _SE.SUBSCRIBE_REQUESTED): _S.PENDING_VERIFICATION,
    (_S.UNSUBSCRIBED, _SE.SUBSCRIBE_REQUESTED): _S.PENDING_VERIFICATION,
}


class DeliveryState(StrEnum):
    PENDING = "pending"
    IN_FLIGHT = "in_flight"
    DONE = "done"
    RETRY = "retry"
    DEAD = "dead"


class DeliveryEvent(StrEnum):
    CLAIMED = "claimed"  # a worker took it
    SUCCEEDED = "succeeded"  # 2xx
    FAILED = "failed"  # other status, timeout, connection error: retry later
    RELEASED = "released"  # the worker died or its claim timed out
    GONE = "gone"  # 410: the subscriber deleted the subscription
    GAVE_UP = "gave_up"  # retry limit reached, or the subscription ended


_D = DeliveryState
_DE = DeliveryEvent

DELIVERY_TRANSITIONS: Final[Mapping[tuple[DeliveryState, DeliveryEvent], DeliveryState]] = {
    (_D.PENDING, _DE.CLAIMED): _D.IN_FLIGHT,
    (_D.PENDING, _DE.GAVE_UP): _D.DEAD,
    (_D.IN_FLIGHT, _DE.SUCCEEDED): _D.DONE,
    (_D.IN_FLIGHT, _DE.FAILED): _D.RETRY,
    # A crashed worker must not lose the delivery (DESIGN.md: nothing lost on restart).
    (_D.IN_FLIGHT, _DE.RELEASED): _D.PENDING,
    (_D.IN_FLIGHT, _DE.GONE): _D.DEAD,
    (_D.IN_FLIGHT, _DE.GAVE_UP): _D.DEAD,
    (_D.RETRY, _DE.CLAIMED): _D.IN_FLIGHT,
    (_D.RETRY, _DE.GAVE_UP): _D.DEAD,
}


@overload
def transition(state: SubscriptionState, event: SubscriptionEvent) -> SubscriptionState: ...
@overload
def transition(state: DeliveryState, event: DeliveryEvent) -> DeliveryState: ...
@overload
def transition(
    state: SubscriptionState | DeliveryState, event: SubscriptionEvent | DeliveryEvent
) -> SubscriptionState | DeliveryState: ...
def transition(
    state: SubscriptionState | DeliveryState, event: SubscriptionEvent | DeliveryEvent
) -> SubscriptionState | DeliveryState:
    """The next state, or :class:`LocalProtocolError` if the tables forbid the move."""
    following: SubscriptionState | DeliveryState | None
    if isinstance(state, SubscriptionState) and isinstance(event, SubscriptionEvent):
        following = SUBSCRIPTION_TRANSITIONS.get((state, event))
    elif isinstance(state, DeliveryState) and isinstance(event, DeliveryEvent):
        following = DELIVERY_TRANSITIONS.get((state, event))
    else:
        raise LocalProtocolError(
            f"event {event!r} does not belong to the state machine of {state!r}"
        )
    if following is None:
        raise LocalProtocolError(
            f"{type(state).__name__} {state.value!r} does not allow event {event.value!r}"
        )
    return following
