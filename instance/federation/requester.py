"""Who sent an incoming federation request: nobody (unsigned) or the origin of the key
that signed it, verified through the signer's published keys (PROTOCOL.md, "Signatures")."""

from __future__ import annotations

from quart import request

from instance.clock import signing_time
from instance.federation.exports import normalize_origin
from instance.federation.service import federation
from keys.resolver import verify_signed


def is_signed() -> bool:
    return "signature-input" in request.headers or "signature" in request.headers


def public_url() -> str:
    """The URL the client addressed, rebuilt from ``base_url`` (the public URL, also
    behind a proxy) and the raw path and query: what ``@target-uri`` covers."""
    raw = request.scope.get("raw_path") or request.path.encode()
    url = federation().settings.base_url + raw.decode("latin-1")
    query = request.scope.get("query_string", b"")
    return url + "?" + query.decode("latin-1") if query else url


async def signer_origin(body: bytes) -> str | None:
    """None for an unsigned request; the signer's origin for a good signature.

    A bad one raises ``RemoteProtocolError`` with the status to answer (400, 401, 403).
    """
    if not is_signed():
        return None
    service = federation()
    verified = await verify_signed(
        service.resolver, request.method, public_url(), list(request.headers.items()), body,
        now=signing_time(service.settings), replay_cache=service.replay,
    )
    return normalize_origin(verified.key_id)
