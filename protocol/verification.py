"""What every signature profile's ``verify`` is given besides the request itself.

* :data:`KeyLookup` - how a verifier finds the key a ``keyid`` names;
* :data:`DEFAULT_SKEW` - how far the signer's clock may disagree with ours.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Final

__all__ = ["DEFAULT_SKEW", "KeyLookup"]

#: Seconds a signature's time (RFC 9421 ``created``, the Cavage ``Date``) may lie in the
#: past or future: clock disagreement plus transit time. Mastodon tolerates about an
#: hour (CLOCK_SKEW_MARGIN = 1.hour); between NTP-synced instances 5 minutes is plenty
#: and shortens the window in which a captured request can be replayed. Widen it per
#: deployment if a peer's clock is off.
DEFAULT_SKEW: Final = 300

KeyLookup = Callable[[str], object | None]
"""keyid -> ``Ed25519PublicKey`` | ``RSAPublicKey`` | ``HmacSecret`` | None (unknown).

The key's type decides the algorithm. It may raise ``RemoteProtocolError`` with
``status_hint=403`` for a key it knows but refuses (revoked, blocked origin).
"""
