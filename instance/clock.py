"""The instance's clock: every stored time is an aware UTC datetime."""

from __future__ import annotations

import time
from datetime import UTC, datetime

from instance.config import Settings


def now() -> datetime:
    return datetime.now(UTC)


def as_utc(dt: datetime) -> datetime:
    # SQLite hands back naive datetimes; everything we store is UTC.
    return dt if dt.tzinfo else dt.replace(tzinfo=UTC)


def signing_time(settings: Settings) -> float:
    """Unix time for signing and checking HTTP signatures: the one source both use, so
    that the test-only ``test_clock_offset_seconds`` shifts this instance's clock as a
    badly set system clock would (tests/scenarios)."""
    return time.time() + settings.test_clock_offset_seconds
