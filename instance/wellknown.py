"""What this instance publishes for federation: who it is and the keys that verify it."""

from __future__ import annotations

import time
from typing import Any

from quart import Blueprint

from instance.errors import ApiError, not_found
from instance.federation.urls import hub_url
from instance.web import state
from keys.publish import key_document, well_known_document
from keys.store import KeyStore

bp = Blueprint("wellknown", __name__)


def _keys() -> KeyStore:
    keys = state().current_keys()
    if keys is None:
        raise ApiError(503, "no_keys", "this instance has no signing keys yet; its admin "
                       "should run `fieldcast init` (or check the data directory)")
    return keys


@bp.get("/.well-known/fieldcast")
async def instance_document() -> tuple[dict[str, Any], int, dict[str, str]]:
    settings = state().settings
    doc = well_known_document(_keys(), name=settings.instance_name,
                              base_url=settings.base_url, now=time.time(),
                              hub=hub_url(settings.base_url))
    # Peers cache keys; a short max-age keeps rotations visible within minutes.
    return doc, 200, {"Cache-Control": "max-age=300"}


@bp.get("/.well-known/fieldcast/keys/<kid>")
async def key(kid: str) -> tuple[dict[str, Any], int, dict[str, str]]:
    found = _keys().get(kid, time.time())
    if found is None:
        raise not_found(f"key {kid!r} (unknown, or retired after its overlap window)")
    return key_document(found, state().settings.base_url), 200, {"Cache-Control": "max-age=300"}
