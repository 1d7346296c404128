"""Federation JSON documents, sans-IO: the thin notification and the exported item.

* :class:`Notification` - what a hub POSTs to a callback: "this item changed, here is
  its new version" (DESIGN.md: a refresh signal, never the data itself).
* :class:`ExportedItem` - what a signed ``GET`` of the topic returns: only the fields
  exported to the requesting instance, each with its own version.

Format version: the member ``"fieldcast"`` is an integer MAJOR version, currently ``1``.
There is no minor number: compatible additions are new members, which every parser
ignores (forward compatibility), so only a breaking change needs a new number. An
integer also cannot be mis-compared as text ("10" < "9"). ``"1.0"`` or ``"1"`` are
refused with a message saying so.

Errors: bytes that are not UTF-8 JSON (or hold a duplicate key, ``NaN``) are refused
with status 400; a well-formed document with a missing or wrongly typed member, an
unknown ``type`` or an unsupported major version with 422, naming the member and what
was expected.
"""

from __future__ import annotations

import base64
import hashlib
import json
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from types import MappingProxyType
from typing import Any, Final, ParamSpec, TypeVar
from urllib.parse import urlsplit

from protocol.errors import LocalProtocolError, ProtocolError, RemoteProtocolError
from protocol.timestamps import format_timestamp, parse_timestamp

__all__ = [
    "FORMAT_VERSION",
    "MAX_DOCUMENT_BYTES",
    "ExportedField",
    "ExportedItem",
    "Notification",
    "dumps",
    "etag",
    "etag_matches",
    "parse_item",
    "parse_notification",
]

#: The major version this code writes and reads.
FORMAT_VERSION: Final = 1
#: A textarea holds up to 200 000 characters (instance/fieldtypes.py), several may be
#: exported; 8 MiB leaves room and still bounds what a peer can make us parse.
MAX_DOCUMENT_BYTES: Final = 8 * 1024 * 1024

TYPE_NOTIFICATION: Final = "notification"
TYPE_ITEM: Final = "item"

_P = ParamSpec("_P")
_T = TypeVar("_T")


def _fail(error: type[ProtocolError], message: str) -> ProtocolError:
    return error(message, status_hint=422)


def _json_type(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list | tuple):
        return "array"
    if isinstance(value, Mapping):
        return "object"
    return type(value).__name__


# ------------------------------------------------------------------------- primitives


def _check_int(name: str, value: Any, minimum: int, error: type[ProtocolError]) -> int:
    # bool is an int subclass in Python, but true is not a version number.
    if isinstance(value, bool) or not isinstance(value, int):
        raise _fail(error, f"member {name!r} must be an integer, got {_json_type(value)}")
    if value < minimum:
        raise _fail(error, f"member {name!r} must be at least {minimum}, got {value}")
    return value


def _check_str(name: str, value: Any, error: type[ProtocolError]) -> str:
    if not isinstance(value, str):
        raise _fail(error, f"member {name!r} must be a string, got {_json_type(value)}")
    if not value:
        raise _fail(error, f"member {name!r} must not be empty")
    return value


def _check_topic(value: Any, error: type[ProtocolError]) -> str:
    text = _check_str("topic", value, error)
    parts = urlsplit(text)
    if parts.scheme not in ("http", "https") or not parts.netloc or "#" in text:
        raise _fail(
            error, f"member 'topic' must be an absolute http(s) URL without fragment, got {text!r}"
        )
    return text


def _check_json_value(name: str, value: Any, error: type[ProtocolError], depth: int = 0) -> None:
    """A field value must be plain JSON, so that canonical serialization is defined."""
    if depth > 32:
        raise _fail(error, f"member {name!r} is nested too deeply")
    if value is None or isinstance(value, bool | int | str):
        return
    if isinstance(value, float):
        if not math.isfinite(value):
            raise _fail(error, f"member {name!r} must be finite, got {value}")
        return
    if isinstance(value, list | tuple):
        for index, element in enumerate(value):
            _check_json_value(f"{name}[{index}]", element, error, depth + 1)
        return
    if isinstance(value, Mapping):
        for key, element in value.items():
            if not isinstance(key, str):
                raise _fail(error, f"member {name!r} has a non-string key {key!r}")
            _check_json_value(f"{name}.{key}", element, error, depth + 1)
        return
    raise _fail(error, f"member {name!r} holds a {type(value).__name__}, which is not JSON")


def _check_aware(name: str, value: Any) -> datetime:
    if not isinstance(value, datetime) or value.tzinfo is None or value.utcoffset() is None:
        raise LocalProtocolError(f"{name} must be a timezone-aware datetime")
    return value.astimezone(UTC)


# -------------------------------------------------------------------------- documents


@dataclass(frozen=True)
class Notification:
    """The thin ping. ``fields`` are the changed field names, kept sorted and unique."""

    topic: str
    item: int
    fields: tuple[str, ...]
    version: int
    event: int
    sent_at: datetime

    def __post_init__(self) -> None:
        _validate_notification(self, LocalProtocolError)

    def to_json(self) -> dict[str, Any]:
        return {
            "fieldcast": FORMAT_VERSION,
            "type": TYPE_NOTIFICATION,
            "topic": self.topic,
            "item": self.item,
            "fields": list(self.fields),
            "version": self.version,
            "event": self.event,
            "sent_at": format_timestamp(self.sent_at),
        }


def _validate_notification(doc: Notification, error: type[ProtocolError]) -> None:
    _check_topic(doc.topic, error)
    _check_int("item", doc.item, 1, error)
    _check_int("version", doc.version, 0, error)
    _check_int("event", doc.event, 1, error)
    if not isinstance(doc.fields, list | tuple):
        raise _fail(error, f"member 'fields' must be an array, got {_json_type(doc.fields)}")
    names = [_check_str(f"fields[{i}]", name, error) for i, name in enumerate(doc.fields)]
    if len(set(names)) != len(names):
        raise _fail(error, "member 'fields' names a field more than once")
    object.__setattr__(doc, "fields", tuple(sorted(names)))
    object.__setattr__(doc, "sent_at", _check_aware("sent_at", doc.sent_at))


@dataclass(frozen=True)
class ExportedField:
    """One exported field's current value, its own version and its type name."""

    value: Any
    version: int
    type: str

    def __post_init__(self) -> None:
        _check_json_value("value", self.value, LocalProtocolError)
        _check_int("version", self.version, 0, LocalProtocolError)
        _check_str("type", self.type, LocalProtocolError)

    def to_json(self) -> dict[str, Any]:
        return {"value": self.value, "version": self.version, "type": self.type}


@dataclass(frozen=True)
class ExportedItem:
    """The topic resource: only the fields exported to the asking instance."""

    topic: str
    item: int
    tracker: str
    version: int
    fields: Mapping[str, ExportedField] = field(hash=False)
    updated_at: datetime

    def __post_init__(self) -> None:
        _check_topic(self.topic, LocalProtocolError)
        _check_int("item", self.item, 1, LocalProtocolError)
        _check_str("tracker", self.tracker, LocalProtocolError)
        _check_int("version", self.version, 0, LocalProtocolError)
        if not isinstance(self.fields, Mapping):
            raise LocalProtocolError("fields must be a mapping of name -> ExportedField")
        for name, value in self.fields.items():
            _check_str("fields key", name, LocalProtocolError)
            if not isinstance(value, ExportedField):
                raise LocalProtocolError(f"fields[{name!r}] must be an ExportedField")
        # A read-only copy: the caller's dict must not change a frozen document.
        object.__setattr__(self, "fields", MappingProxyType(dict(self.fields)))
        object.__setattr__(self, "updated_at", _check_aware("updated_at", self.updated_at))

    def to_json(self) -> dict[str, Any]:
        return {
            "fieldcast": FORMAT_VERSION,
            "type": TYPE_ITEM,
            "topic": self.topic,
            "item": self.item,
            "tracker": self.tracker,
            "version": self.version,
            "fields": {name: f.to_json() for name, f in self.fields.items()},
            "updated_at": format_timestamp(self.updated_at),
        }


Document = Notification | ExportedItem


# ------------------------------------------------------------------ canonical form, ETag


def dumps(doc: Document | Mapping[str, Any]) -> bytes:
    """Canonical JSON: sorted keys, no whitespace, UTF-8 (not \\u escapes), no NaN.

    Two equal documents give equal bytes, which is what makes :func:`etag` stable.
    """
    data = doc.to_json() if isinstance(doc, Notification | ExportedItem) else doc
    try:
        text = json.dumps(
            data, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False
        )
    except (TypeError, ValueError) as exc:
        raise LocalProtocolError(f"document is not serializable as JSON: {exc}") from exc
    return text.encode("utf-8")


def etag(doc: Document | Mapping[str, Any]) -> str:
    """A strong ETag (RFC 9110 §8.8.3): SHA-256 of the canonical bytes, base64url."""
    digest = hashlib.sha256(dumps(doc)).digest()
    return '"' + base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii") + '"'


def etag_matches(if_none_match: str | None, current: str) -> bool:
    """``If-None-Match`` evaluation (RFC 9110 §13.1.2: weak comparison, ``*`` matches)."""
    if if_none_match is None:
        return False
    if if_none_match.strip() == "*":
        return True
    wanted = current.removeprefix("W/")
    return any(tag.strip().removeprefix("W/") == wanted for tag in if_none_match.split(","))


# ---------------------------------------------------------------------------- parsing


def _refuse_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for key, value in pairs:
        if key in result:
            # Two parsers could pick different values for a duplicate key; refuse it.
            raise ValueError(f"duplicate member {key!r}")
        result[key] = value
    return result


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


def _load(data: bytes | str | Mapping[str, Any], max_bytes: int) -> Mapping[str, Any]:
    if isinstance(data, Mapping):
        obj: Any = data
    else:
        raw = data.encode("utf-8") if isinstance(data, str) else data
        if len(raw) > max_bytes:
            raise RemoteProtocolError(
                f"document is {len(raw)} bytes; at most {max_bytes} are accepted",
                status_hint=413,
            )
        try:
            obj = json.loads(
                raw.decode("utf-8"),
                object_pairs_hook=_refuse_duplicates,
                parse_constant=_refuse_constant,
            )
        except UnicodeDecodeError as exc:
            raise RemoteProtocolError("document is not UTF-8", status_hint=400) from exc
        except (ValueError, RecursionError) as exc:
            raise RemoteProtocolError(
                f"document is not valid JSON: {exc}", status_hint=400
            ) from exc
    if not isinstance(obj, Mapping):
        raise RemoteProtocolError(
            f"document must be a JSON object, got {_json_type(obj)}", status_hint=422
        )
    return obj


def _header(obj: Mapping[str, Any], expected_type: str) -> None:
    # The version comes first: a future major version may change every other member,
    # and "unsupported version" is the message that lets the sender act.
    if "fieldcast" not in obj:
        raise RemoteProtocolError(
            f"member 'fieldcast' is missing; expected the integer {FORMAT_VERSION}",
            status_hint=422,
        )
    version = obj["fieldcast"]
    if isinstance(version, bool) or not isinstance(version, int):
        raise RemoteProtocolError(
            f"member 'fieldcast' must be the integer major version {FORMAT_VERSION}, "
            f"got {_json_type(version)} {version!r}",
            status_hint=422,
        )
    if version != FORMAT_VERSION:
        raise RemoteProtocolError(
            f"fieldcast document version {version} is not supported; this instance reads "
            f"version {FORMAT_VERSION}",
            status_hint=422,
        )
    kind = obj.get("type")
    if kind != expected_type:
        raise RemoteProtocolError(
            f"member 'type' must be {expected_type!r}, got {kind!r}", status_hint=422
        )


def _member(obj: Mapping[str, Any], name: str, expected: str, path: str = "") -> Any:
    if name not in obj:
        raise RemoteProtocolError(
            f"member {path + name!r} is missing (expected {expected})", status_hint=422
        )
    return obj[name]


def _remote(build: Callable[_P, _T], *args: _P.args, **kwargs: _P.kwargs) -> _T:
    """Construct a document; a value rule it breaks becomes the peer's 422."""
    try:
        return build(*args, **kwargs)
    except LocalProtocolError as exc:
        raise RemoteProtocolError(exc.message, status_hint=422) from exc


def parse_notification(
    data: bytes | str | Mapping[str, Any], *, max_bytes: int = MAX_DOCUMENT_BYTES
) -> Notification:
    """Parse and validate a notification body. Unknown members are ignored."""
    obj = _load(data, max_bytes)
    _header(obj, TYPE_NOTIFICATION)
    err = RemoteProtocolError
    topic = _check_topic(_member(obj, "topic", "a URL string"), err)
    item = _check_int("item", _member(obj, "item", "an integer"), 1, err)
    fields = _member(obj, "fields", "an array of field names")
    if not isinstance(fields, list):
        raise _fail(err, f"member 'fields' must be an array, got {_json_type(fields)}")
    version = _check_int("version", _member(obj, "version", "an integer"), 0, err)
    event = _check_int("event", _member(obj, "event", "an integer"), 1, err)
    sent_at = _member(obj, "sent_at", "an RFC 3339 string")
    sent = parse_timestamp(_check_str("sent_at", sent_at, err), "sent_at")
    return _remote(Notification, topic, item, tuple(fields), version, event, sent)


def parse_item(
    data: bytes | str | Mapping[str, Any], *, max_bytes: int = MAX_DOCUMENT_BYTES
) -> ExportedItem:
    """Parse and validate an exported-item document. Unknown members are ignored."""
    obj = _load(data, max_bytes)
    _header(obj, TYPE_ITEM)
    err = RemoteProtocolError
    topic = _check_topic(_member(obj, "topic", "a URL string"), err)
    item = _check_int("item", _member(obj, "item", "an integer"), 1, err)
    tracker = _check_str("tracker", _member(obj, "tracker", "a string"), err)
    version = _check_int("version", _member(obj, "version", "an integer"), 0, err)
    raw_fields = _member(obj, "fields", "an object")
    if not isinstance(raw_fields, Mapping):
        raise _fail(err, f"member 'fields' must be an object, got {_json_type(raw_fields)}")
    fields: dict[str, ExportedField] = {}
    for name, entry in raw_fields.items():
        path = f"fields.{name}"
        if not isinstance(entry, Mapping):
            raise _fail(err, f"member {path!r} must be an object, got {_json_type(entry)}")
        value = _member(entry, "value", "any JSON value", path + ".")
        _check_json_value(path + ".value", value, err)
        fversion = _member(entry, "version", "an integer", path + ".")
        ftype = _member(entry, "type", "a string", path + ".")
        fields[name] = ExportedField(
            value=value,
            version=_check_int(path + ".version", fversion, 0, err),
            type=_check_str(path + ".type", ftype, err),
        )
    updated = _member(obj, "updated_at", "an RFC 3339 string")
    updated_at = parse_timestamp(_check_str("updated_at", updated, err), "updated_at")
    return _remote(ExportedItem, topic, item, tracker, version, fields, updated_at)
