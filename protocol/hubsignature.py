"""``X-Hub-Signature``: the HMAC a hub adds to a distribution (WebSub REC §7.1).

The hub signs with :func:`sign_body`; the subscriber checks with
:func:`verify_hub_signature` (§7.1.2). Both take the exact body bytes.
"""

from __future__ import annotations

import hmac
from typing import Final

from protocol.errors import LocalProtocolError, RemoteProtocolError

__all__ = ["SIGNATURE_METHODS", "sign_body", "verify_hub_signature"]

#: REC §7.1.1, strongest first; :func:`sign_body` defaults to sha256 (REC §8.3 prefers
#: sha256 or better over sha1).
SIGNATURE_METHODS: Final = ("sha512", "sha384", "sha256", "sha1")


def _key(secret: str | bytes) -> bytes:
    key = secret.encode("utf-8") if isinstance(secret, str) else secret
    if not key:
        raise LocalProtocolError("an X-Hub-Signature needs a non-empty secret")
    return key


def sign_body(body: bytes, secret: str | bytes, method: str = "sha256") -> str:
    """``X-Hub-Signature`` value: ``method=<lowercase hex HMAC of the exact body>``.

    Call it with the very bytes that go on the wire (notes/websub.md pitfall 6), and
    only when the subscriber gave a secret (pitfall 7, websub.rocks hub test 100).
    """
    if method not in SIGNATURE_METHODS:
        raise LocalProtocolError(f"X-Hub-Signature method must be one of {SIGNATURE_METHODS}")
    return f"{method}={hmac.new(_key(secret), body, method).hexdigest()}"


def verify_hub_signature(header: str | None, body: bytes, secret: str | bytes) -> str:
    """Check ``X-Hub-Signature``; return the method. Any failure raises (status 403).

    REC §7.1.2: the subscriber MUST ignore the content of a distribution that fails
    this check (it MAY still answer 2xx; websub.rocks test 302 expects non-2xx for a
    missing signature, which ``status_hint`` gives).
    """
    key = _key(secret)
    if header is None or not header.strip():
        raise RemoteProtocolError(
            "X-Hub-Signature is missing, but this subscription has a secret; "
            "the content is ignored",
            status_hint=403,
        )
    method, sep, hexsig = header.strip().partition("=")
    method = method.strip().lower()
    if not sep:
        raise RemoteProtocolError(
            "X-Hub-Signature must be method=hexsignature (e.g. sha256=…)", status_hint=403
        )
    if method not in SIGNATURE_METHODS:
        raise RemoteProtocolError(
            f"X-Hub-Signature method {method!r} is not one of sha1, sha256, sha384, sha512",
            status_hint=403,
        )
    try:
        given = bytes.fromhex(hexsig.strip())
    except ValueError as exc:
        raise RemoteProtocolError(
            "X-Hub-Signature value is not hexadecimal", status_hint=403
        ) from exc
    expected = hmac.new(key, body, method).digest()
    # Constant-time: a timing leak would let an attacker forge the HMAC byte by byte.
    if not hmac.compare_digest(given, expected):
        raise RemoteProtocolError(
            f"X-Hub-Signature does not match the body ({method} HMAC over the exact bytes "
            "received, keyed with hub.secret); the content is ignored",
            status_hint=403,
        )
    return method


