"""Notification and exported-item documents: canonical form, strict parsing, ETags."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from protocol.documents import (
    ExportedField,
    ExportedItem,
    Notification,
    dumps,
    etag,
    etag_matches,
    parse_item,
    parse_notification,
)
from protocol.errors import LocalProtocolError, RemoteProtocolError
from protocol.timestamps import format_timestamp, parse_timestamp

TOPIC = "https://a.example/trackers/bugs/items/42"
WHEN = datetime(2024, 5, 1, 12, 0, 0, tzinfo=UTC)


def notification_json(**changes: Any) -> dict[str, Any]:
    doc = {
        "fieldcast": 1,
        "type": "notification",
        "topic": TOPIC,
        "item": 42,
        "fields": ["status", "assignee"],
        "version": 8,
        "event": 1234,
        "sent_at": "2024-05-01T12:00:00Z",
    }
    doc.update(changes)
    return doc


def item_json(**changes: Any) -> dict[str, Any]:
    doc = {
        "fieldcast": 1,
        "type": "item",
        "topic": TOPIC,
        "item": 42,
        "tracker": "bugs",
        "version": 8,
        "fields": {
            "status": {"value": "open", "version": 3, "type": "dropdown"},
            "estimate": {"value": 2.5, "version": 1, "type": "number"},
            "notes": {"value": None, "version": 0, "type": "textarea"},
        },
        "updated_at": "2024-05-01T12:00:00.250000Z",
    }
    doc.update(changes)
    return doc


# ----------------------------------------------------------------------- notification


def test_notification_round_trip_and_canonical_bytes() -> None:
    parsed = parse_notification(json.dumps(notification_json()).encode())
    assert parsed == Notification(TOPIC, 42, ("assignee", "status"), 8, 1234, WHEN)
    assert dumps(parsed) == (
        b'{"event":1234,"fieldcast":1,"fields":["assignee","status"],"item":42,'
        b'"sent_at":"2024-05-01T12:00:00Z","topic":"' + TOPIC.encode() + b'",'
        b'"type":"notification","version":8}'
    )
    assert parse_notification(dumps(parsed)) == parsed


def test_unknown_members_are_tolerated() -> None:
    doc = notification_json(future_member={"x": [1, 2]}, priority="high")
    assert parse_notification(doc) == parse_notification(notification_json())
    extra_field_member = item_json()
    extra_field_member["fields"]["status"]["label"] = "Status"
    assert parse_item(extra_field_member) == parse_item(item_json())


@pytest.mark.parametrize(
    ("version", "status", "message"),
    [
        (2, 422, "version 2 is not supported"),
        (0, 422, "version 0 is not supported"),
        ("1.0", 422, "must be the integer major version 1"),
        ("1", 422, "must be the integer major version 1"),
        (1.0, 422, "must be the integer major version 1"),
        (True, 422, "must be the integer major version 1"),
    ],
)
def test_fieldcast_version(version: object, status: int, message: str) -> None:
    for parse, doc in ((parse_notification, notification_json), (parse_item, item_json)):
        with pytest.raises(RemoteProtocolError, match=message) as info:
            parse(doc(fieldcast=version))  # type: ignore[operator]
        assert info.value.status_hint == status


def test_unknown_major_version_is_reported_before_shape_errors() -> None:
    # A v2 document may look nothing like v1; the version is what the sender must hear.
    with pytest.raises(RemoteProtocolError, match="version 2 is not supported"):
        parse_notification({"fieldcast": 2, "type": "ping", "whatever": True})


def test_missing_version_and_wrong_type() -> None:
    doc = notification_json()
    del doc["fieldcast"]
    with pytest.raises(RemoteProtocolError, match="'fieldcast' is missing"):
        parse_notification(doc)
    with pytest.raises(RemoteProtocolError, match="'type' must be 'notification', got 'item'"):
        parse_notification(item_json())
    with pytest.raises(RemoteProtocolError, match="'type' must be 'item'"):
        parse_item(notification_json())


@pytest.mark.parametrize(
    ("body", "status", "message"),
    [
        (b"\xff{}", 400, "not UTF-8"),
        (b"{", 400, "not valid JSON"),
        (b'{"fieldcast": 1, "fieldcast": 1}', 400, "duplicate member 'fieldcast'"),
        (b'{"version": NaN}', 400, "NaN is not valid JSON"),
        (b"[1, 2]", 422, "must be a JSON object, got array"),
        (b'"text"', 422, "must be a JSON object, got string"),
        (b"[" * 100_000 + b"]" * 100_000, 400, "not valid JSON"),
    ],
)
def test_malformed_bytes(body: bytes, status: int, message: str) -> None:
    with pytest.raises(RemoteProtocolError, match=message) as info:
        parse_notification(body)
    assert info.value.status_hint == status


def test_size_limit() -> None:
    with pytest.raises(RemoteProtocolError) as info:
        parse_item(json.dumps(item_json()).encode(), max_bytes=100)
    assert info.value.status_hint == 413


@pytest.mark.parametrize(
    ("member", "value", "message"),
    [
        ("topic", "/relative", "absolute http"),
        ("topic", "https://a.example/x#frag", "without fragment"),
        ("item", 0, "at least 1"),
        ("item", "42", "'item' must be an integer, got string"),
        ("version", -1, "at least 0"),
        ("version", 8.0, "'version' must be an integer, got number"),
        ("event", None, "'event' must be an integer, got null"),
        ("fields", "status", "'fields' must be an array, got string"),
        ("fields", ["status", "status"], "more than once"),
        ("fields", ["status", 3], r"'fields\[1\]' must be a string, got integer"),
        ("fields", [""], r"'fields\[0\]' must not be empty"),
        ("sent_at", "2024-05-01 12:00:00", "RFC 3339"),
        ("sent_at", "2024-05-01T12:00:00+02:00", "must be in UTC"),
        ("sent_at", "2024-02-30T12:00:00Z", "not a real date"),
        ("sent_at", 1714564800, "'sent_at' must be a string, got integer"),
    ],
)
def test_notification_member_errors_name_the_member(member: str, value: Any, message: str) -> None:
    with pytest.raises(RemoteProtocolError, match=message) as info:
        parse_notification(notification_json(**{member: value}))
    assert info.value.status_hint == 422


def test_empty_field_list_is_allowed() -> None:
    # An item deletion or a rights change has no changed field to name; the fetch tells.
    assert parse_notification(notification_json(fields=[])).fields == ()


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2024-05-01T12:00:00Z", WHEN),
        ("2024-05-01t12:00:00z", WHEN),
        ("2024-05-01T12:00:00+00:00", WHEN),
        ("2024-05-01T12:00:00.5Z", WHEN.replace(microsecond=500000)),
        ("2024-05-01T12:00:00.123456789Z", WHEN.replace(microsecond=123456)),
    ],
)
def test_timestamps(text: str, expected: datetime) -> None:
    assert parse_timestamp(text) == expected


def test_format_timestamp_is_utc_z() -> None:
    plus2 = timezone(timedelta(hours=2))
    assert format_timestamp(datetime(2024, 5, 1, 14, 0, tzinfo=plus2)) == "2024-05-01T12:00:00Z"
    assert format_timestamp(WHEN.replace(microsecond=7)) == "2024-05-01T12:00:00.000007Z"
    with pytest.raises(LocalProtocolError):
        format_timestamp(datetime(2024, 5, 1))


def test_construction_refuses_invalid_notifications() -> None:
    with pytest.raises(LocalProtocolError, match="timezone-aware"):
        Notification(TOPIC, 1, (), 0, 1, datetime(2024, 1, 1))
    with pytest.raises(LocalProtocolError, match="'item'"):
        Notification(TOPIC, True, (), 0, 1, WHEN)
    with pytest.raises(LocalProtocolError, match="more than once"):
        Notification(TOPIC, 1, ("a", "a"), 0, 1, WHEN)
    assert Notification(TOPIC, 1, ["b", "a"], 0, 1, WHEN).fields == ("a", "b")  # type: ignore[arg-type]


# ------------------------------------------------------------------------------ item


def test_item_round_trip() -> None:
    parsed = parse_item(json.dumps(item_json()))
    assert parsed.tracker == "bugs"
    assert parsed.fields["status"] == ExportedField("open", 3, "dropdown")
    assert parsed.fields["notes"].value is None
    assert parsed.updated_at == WHEN.replace(microsecond=250000)
    assert json.loads(dumps(parsed)) == item_json()
    assert parse_item(dumps(parsed)) == parsed


def test_item_fields_are_read_only_and_copied() -> None:
    source = {"status": ExportedField("open", 1, "dropdown")}
    doc = ExportedItem(TOPIC, 42, "bugs", 1, source, WHEN)
    source["other"] = ExportedField("x", 1, "text")
    assert list(doc.fields) == ["status"]
    with pytest.raises(TypeError):
        doc.fields["x"] = ExportedField("y", 1, "text")  # type: ignore[index]


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda d: d.pop("tracker"), "'tracker' is missing"),
        (lambda d: d.update(tracker=""), "'tracker' must not be empty"),
        (lambda d: d.update(fields=[]), "'fields' must be an object, got array"),
        (lambda d: d["fields"].update(status="open"), "'fields.status' must be an object"),
        (lambda d: d["fields"]["status"].pop("value"), r"'fields\.status\.value' is missing"),
        (lambda d: d["fields"]["status"].pop("version"), r"'fields\.status\.version' is missing"),
        (
            lambda d: d["fields"]["status"].update(version="3"),
            r"'fields\.status\.version' must be an integer, got string",
        ),
        (
            lambda d: d["fields"]["status"].update(type=None),
            r"'fields\.status\.type' must be a string, got null",
        ),
        (lambda d: d.update(updated_at="yesterday"), "'updated_at' must be an RFC 3339"),
    ],
)
def test_item_member_errors(mutate: Any, message: str) -> None:
    doc = item_json()
    doc["fields"] = json.loads(json.dumps(doc["fields"]))
    mutate(doc)
    with pytest.raises(RemoteProtocolError, match=message) as info:
        parse_item(doc)
    assert info.value.status_hint == 422


def test_item_value_must_be_plain_json() -> None:
    with pytest.raises(LocalProtocolError, match="not JSON"):
        ExportedField({1, 2}, 1, "text")
    with pytest.raises(LocalProtocolError, match="finite"):
        ExportedField([float("inf")], 1, "number")
    with pytest.raises(LocalProtocolError, match="non-string key"):
        ExportedField({1: "x"}, 1, "text")
    with pytest.raises(LocalProtocolError, match="ExportedField"):
        ExportedItem(TOPIC, 1, "bugs", 1, {"a": {"value": 1}}, WHEN)  # type: ignore[dict-item]


# ------------------------------------------------------------------------------ ETag


def test_etag_is_strong_and_tracks_content() -> None:
    doc = parse_item(item_json())
    tag = etag(doc)
    assert tag.startswith('"') and tag.endswith('"') and not tag.startswith("W/")
    reordered = dict(reversed(list(item_json().items())))
    assert etag(parse_item(reordered)) == tag
    changed = item_json()
    changed["fields"] = {
        **changed["fields"],
        "status": {"value": "closed", "version": 4, "type": "dropdown"},
    }
    assert etag(parse_item(changed)) != tag


def test_etag_matches() -> None:
    tag = etag(parse_item(item_json()))
    assert etag_matches(tag, tag)
    assert etag_matches(f'"other", {tag}', tag)
    assert etag_matches(f"W/{tag}", tag)  # If-None-Match uses weak comparison
    assert etag_matches("*", tag)
    assert not etag_matches('"other"', tag)
    assert not etag_matches(None, tag)


def test_dumps_is_utf8_not_escaped() -> None:
    doc = item_json()
    doc["fields"] = {"title": {"value": "Grüße ✓", "version": 1, "type": "text"}}
    assert "Grüße ✓".encode() in dumps(parse_item(doc))
    with pytest.raises(LocalProtocolError):
        dumps({"when": WHEN})


# ------------------------------------------------------------------------ properties

names = st.from_regex(r"[a-z][a-z0-9_]{0,15}", fullmatch=True)
json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4),
    max_leaves=10,
)
moments = st.datetimes(
    min_value=datetime(1970, 1, 1), max_value=datetime(9999, 1, 1), timezones=st.just(UTC)
)
notifications = st.builds(
    Notification,
    topic=st.builds(
        lambda p: f"https://a.example/{p}", st.from_regex(r"[a-z0-9/]{0,20}", fullmatch=True)
    ),
    item=st.integers(min_value=1, max_value=2**63),
    fields=st.lists(names, unique=True, max_size=5).map(tuple),
    version=st.integers(min_value=0, max_value=2**63),
    event=st.integers(min_value=1, max_value=2**63),
    sent_at=moments,
)
items = st.builds(
    ExportedItem,
    topic=st.just(TOPIC),
    item=st.integers(min_value=1, max_value=2**40),
    tracker=names,
    version=st.integers(min_value=0, max_value=2**40),
    fields=st.dictionaries(
        names,
        st.builds(ExportedField, value=json_values, version=st.integers(0, 2**40), type=names),
        max_size=5,
    ),
    updated_at=moments,
)


@given(notifications)
def test_notification_round_trip_property(doc: Notification) -> None:
    assert parse_notification(dumps(doc)) == doc
    assert dumps(parse_notification(dumps(doc))) == dumps(doc)


@given(items)
def test_item_round_trip_property(doc: ExportedItem) -> None:
    again = parse_item(dumps(doc))
    assert dict(again.fields) == dict(doc.fields)
    assert dumps(again) == dumps(doc)
    assert etag(again) == etag(doc)


WRONG_TYPES: dict[str, list[Any]] = {
    # For each required member, values of every JSON type it must not have.
    "topic": [1, None, [], {}, True],
    "item": ["1", None, 1.5, [], True],
    "tracker": [1, None, [], {}],
    "version": ["1", None, 1.5, {}, False],
    "event": ["1", None, 2.5, []],
    "fields": ["a", 1, None],
    "sent_at": [1, None, []],
    "updated_at": [1, None, {}],
}


@given(data=st.data(), doc=notifications)
def test_any_mutation_of_a_required_notification_member_is_rejected(
    data: st.DataObject, doc: Notification
) -> None:
    raw = json.loads(dumps(doc))
    member = data.draw(st.sampled_from(["topic", "item", "fields", "version", "event", "sent_at"]))
    if data.draw(st.booleans()):
        del raw[member]
        expected = f"'{member}' is missing"
    else:
        raw[member] = data.draw(st.sampled_from(WRONG_TYPES[member]))
        expected = f"'{member}'"
    with pytest.raises(RemoteProtocolError, match=expected) as info:
        parse_notification(json.dumps(raw).encode())
    assert info.value.status_hint == 422


@given(data=st.data(), doc=items)
def test_any_mutation_of_a_required_item_member_is_rejected(
    data: st.DataObject, doc: ExportedItem
) -> None:
    raw = json.loads(dumps(doc))
    member = data.draw(
        st.sampled_from(["topic", "item", "tracker", "version", "fields", "updated_at"])
    )
    if data.draw(st.booleans()):
        del raw[member]
        expected = f"'{member}' is missing"
    else:
        choices = WRONG_TYPES[member] if member != "fields" else ["a", 1, None, []]
        raw[member] = data.draw(st.sampled_from(choices))
        expected = f"'{member}'"
    with pytest.raises(RemoteProtocolError, match=expected):
        parse_item(json.dumps(raw).encode())


@given(data=st.data(), doc=items.filter(lambda d: len(d.fields) > 0))
def test_any_mutation_inside_a_field_entry_is_rejected(
    data: st.DataObject, doc: ExportedItem
) -> None:
    raw = json.loads(dumps(doc))
    name = data.draw(st.sampled_from(sorted(raw["fields"])))
    member = data.draw(st.sampled_from(["value", "version", "type"]))
    if member == "value" or data.draw(st.booleans()):
        del raw["fields"][name][member]  # any JSON is a valid value, so only removal is wrong
        expected = "is missing"
    else:
        wrong = ["3", None, 1.5, [], {}, True] if member == "version" else [3, None, [], {}, True]
        raw["fields"][name][member] = data.draw(st.sampled_from(wrong))
        expected = "must be"
    with pytest.raises(RemoteProtocolError, match=expected) as info:
        parse_item(json.dumps(raw).encode())
    assert f"fields.{name}.{member}" in info.value.message
