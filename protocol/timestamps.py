"""RFC 3339 timestamps as fieldcast writes and reads them: UTC, spelled with ``Z``.

One spelling per instant keeps documents canonical (and their ETags stable):
microseconds appear only when there are any, and the year has four digits.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime

from protocol.errors import LocalProtocolError, ProtocolError, RemoteProtocolError

__all__ = ["format_timestamp", "parse_timestamp"]

_RFC3339 = re.compile(
    r"(\d{4})-(\d{2})-(\d{2})[Tt](\d{2}):(\d{2}):(\d{2})(\.\d{1,9})?([Zz]|[+-]\d{2}:\d{2})"
)


def format_timestamp(moment: datetime) -> str:
    """RFC 3339 in UTC with a ``Z``; microseconds only when there are any."""
    if moment.tzinfo is None or moment.utcoffset() is None:
        raise LocalProtocolError("timestamps must be timezone-aware (UTC)")
    # isoformat(), not strftime("%Y"): strftime leaves years before 1000 unpadded,
    # which is not RFC 3339 and which parse_timestamp would refuse.
    return moment.astimezone(UTC).replace(tzinfo=None).isoformat() + "Z"


def parse_timestamp(
    text: str, member: str = "timestamp", error: type[ProtocolError] = RemoteProtocolError
) -> datetime:
    """RFC 3339 in UTC (``Z`` or ``+00:00``); other offsets are refused, as the format
    says UTC and one spelling per instant keeps documents canonical. Errors carry 422."""
    match = _RFC3339.fullmatch(text)
    if match is None:
        raise error(
            f"member {member!r} must be an RFC 3339 UTC timestamp such as "
            f"'2024-05-01T12:00:00Z', got {text!r}",
            status_hint=422,
        )
    year, month, day, hour, minute, second = (int(g) for g in match.groups()[:6])
    fraction, offset = match.group(7), match.group(8)
    if offset not in ("Z", "z", "+00:00", "-00:00"):
        raise error(
            f"member {member!r} must be in UTC (…Z), got offset {offset}", status_hint=422
        )
    micro = int((fraction[1:] + "000000")[:6]) if fraction else 0
    try:
        return datetime(year, month, day, hour, minute, second, micro, tzinfo=UTC)
    except ValueError as exc:
        raise error(
            f"member {member!r} is not a real date and time: {text!r}", status_hint=422
        ) from exc
