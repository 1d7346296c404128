"""WebSub messages: REC rules and websub.rocks hub/subscriber test semantics."""

from __future__ import annotations

from urllib.parse import parse_qsl, urlencode, urlsplit

import pytest
from hypothesis import given
from hypothesis import strategies as st

from protocol.errors import LocalProtocolError, RemoteProtocolError
from protocol.websub import (
    DEFAULT_LEASE,
    Denial,
    LeasePolicy,
    PublishRequest,
    SubscribeRequest,
    UnsubscribeRequest,
    VerificationRequest,
    build_denial_url,
    build_verification_url,
    check_verification_response,
    decode_form,
    new_challenge,
    parse_callback_request,
    parse_hub_request,
)

TOPIC = "https://a.example/trackers/bugs/items/42"
CALLBACK = "https://b.example/federation/callback/7"
HUB = "https://a.example/hub"


def sub(**extra: str) -> list[tuple[str, str]]:
    pairs = [("hub.mode", "subscribe"), ("hub.topic", TOPIC), ("hub.callback", CALLBACK)]
    return pairs + list(extra.items())


def query(url: str) -> list[tuple[str, str]]:
    return parse_qsl(urlsplit(url).query, keep_blank_values=True)


# --------------------------------------------------------------- hub requests (§5.1)


def test_hub_100_typical_subscribe_gets_the_default_lease() -> None:
    request = parse_hub_request(sub())
    assert request == SubscribeRequest(TOPIC, CALLBACK, DEFAULT_LEASE.default)
    assert request.secret is None
    assert request.mode == "subscribe"


def test_hub_101_secret_is_kept_and_not_shown_in_repr() -> None:
    request = parse_hub_request(sub(**{"hub.secret": "s3cr3t-twenty-chars"}))
    assert isinstance(request, SubscribeRequest)
    assert request.secret == "s3cr3t-twenty-chars"
    assert "s3cr3t" not in repr(request)


def test_hub_102_additional_parameters_are_ignored_even_repeated() -> None:
    pairs = [*sub(), ("foo", "bar"), ("hub.foo", "hub.bar"), ("hub.foo", "again")]
    assert parse_hub_request(pairs) == parse_hub_request(sub())


def test_hub_103_resubscribe_parses_to_the_same_request() -> None:
    # The hub keys state by (topic, callback); two equal requests must compare equal.
    assert parse_hub_request(sub()) == parse_hub_request(list(reversed(sub())))


def test_hub_104_unsubscribe_ignores_lease_and_secret() -> None:
    pairs = [
        ("hub.mode", "unsubscribe"),
        ("hub.topic", TOPIC),
        ("hub.callback", CALLBACK),
        ("hub.lease_seconds", "not-even-a-number"),
        ("hub.secret", "x" * 500),
    ]
    assert parse_hub_request(pairs) == UnsubscribeRequest(TOPIC, CALLBACK)


@pytest.mark.parametrize("mode", ["subscribe", "unsubscribe"])
def test_hub_105_106_any_topic_content_type_is_just_a_url(mode: str) -> None:
    for topic in ("https://a.example/feed.txt", "http://a.example:8080/feed.json?x=1"):
        pairs = [("hub.mode", mode), ("hub.topic", topic), ("hub.callback", CALLBACK)]
        assert parse_hub_request(pairs).topic == topic


def test_accepts_multidict_dict_of_lists_and_plain_dict() -> None:
    class MultiDict(dict[str, list[str]]):
        def __iter__(self):  # type: ignore[no-untyped-def]
            return iter(self.keys())

        def getlist(self, key: str) -> list[str]:
            return self[key]

    expected = parse_hub_request(sub())
    as_lists = {k: [v] for k, v in sub()}
    assert parse_hub_request(as_lists) == expected
    assert parse_hub_request(MultiDict(as_lists)) == expected
    assert parse_hub_request(dict(sub())) == expected
    twice = MultiDict({**as_lists, "hub.topic": [TOPIC, TOPIC]})
    with pytest.raises(RemoteProtocolError, match=r"hub\.topic is given more than once"):
        parse_hub_request(twice)


@pytest.mark.parametrize(
    ("lease", "expected"),
    [
        ("1", 60),
        ("60", 60),
        ("3600", 3600),
        ("2678400", 2678400),
        ("99999999", 2678400),
        ("", 864000),
    ],
)
def test_lease_is_clamped_to_policy(lease: str, expected: int) -> None:
    request = parse_hub_request(sub(**{"hub.lease_seconds": lease}))
    assert isinstance(request, SubscribeRequest)
    assert request.lease_seconds == expected


def test_lease_policy_given_by_caller() -> None:
    policy = LeasePolicy(minimum=10, default=20, maximum=30)
    assert parse_hub_request(sub(), lease=policy).lease_seconds == 20  # type: ignore[union-attr]
    clamped = parse_hub_request(sub(**{"hub.lease_seconds": "5"}), lease=policy)
    assert clamped.lease_seconds == 10  # type: ignore[union-attr]
    with pytest.raises(LocalProtocolError):
        LeasePolicy(minimum=10, default=5, maximum=30)


@pytest.mark.parametrize("lease", ["0", "-5", "+5", " 5", "5.0", "1e3", "٣", "ten", "9" * 21])
def test_bad_lease_is_refused(lease: str) -> None:
    with pytest.raises(RemoteProtocolError, match=r"hub\.lease_seconds") as info:
        parse_hub_request(sub(**{"hub.lease_seconds": lease}))
    assert info.value.status_hint == 400


def test_secret_must_be_less_than_200_bytes() -> None:
    ok = parse_hub_request(sub(**{"hub.secret": "x" * 199}))
    assert ok.secret == "x" * 199  # type: ignore[union-attr]
    # websub.rocks' own hub lets exactly 200 through; the REC says "less than 200".
    with pytest.raises(RemoteProtocolError, match="200 bytes") as info:
        parse_hub_request(sub(**{"hub.secret": "x" * 200}))
    assert info.value.status_hint == 400
    # Bytes, not characters: 100 two-byte characters are 200 bytes.
    with pytest.raises(RemoteProtocolError, match="200 bytes"):
        parse_hub_request(sub(**{"hub.secret": "é" * 100}))


def test_empty_secret_means_no_secret() -> None:
    assert parse_hub_request(sub(**{"hub.secret": ""})).secret is None  # type: ignore[union-attr]


@pytest.mark.parametrize(
    "name", ["hub.mode", "hub.topic", "hub.callback", "hub.lease_seconds", "hub.secret"]
)
def test_duplicated_hub_parameter_is_refused(name: str) -> None:
    pairs = [
        *sub(**{"hub.lease_seconds": "100", "hub.secret": "s"}),
        (name, dict(sub()).get(name, "1")),
    ]
    with pytest.raises(RemoteProtocolError, match=f"{name} is given more than once"):
        parse_hub_request(pairs)


@pytest.mark.parametrize("missing", ["hub.mode", "hub.topic", "hub.callback"])
def test_missing_required_parameter(missing: str) -> None:
    pairs = [(k, v) for k, v in sub() if k != missing]
    with pytest.raises(RemoteProtocolError, match=missing.replace(".", r"\.")) as info:
        parse_hub_request(pairs)
    assert info.value.status_hint == 400


@pytest.mark.parametrize(
    "callback",
    [
        "/relative/callback",
        "ftp://b.example/cb",
        "https://b.example/cb#frag",
        "https:///nohost",
        "https://b.example:99999/cb",
        "https://b.example/c b",
        "",
        "javascript:alert(1)",
    ],
)
def test_bad_callback_is_refused(callback: str) -> None:
    pairs = [("hub.mode", "subscribe"), ("hub.topic", TOPIC), ("hub.callback", callback)]
    with pytest.raises(RemoteProtocolError, match=r"hub\.callback") as info:
        parse_hub_request(pairs)
    assert info.value.status_hint == 400


def test_unknown_mode_is_refused_with_the_allowed_ones() -> None:
    with pytest.raises(RemoteProtocolError, match="subscribe, unsubscribe or publish"):
        parse_hub_request([("hub.mode", "Subscribe"), ("hub.topic", TOPIC)])


def test_publish_with_topic_or_url() -> None:
    assert parse_hub_request([("hub.mode", "publish"), ("hub.topic", TOPIC)]) == PublishRequest(
        TOPIC
    )
    assert parse_hub_request([("hub.mode", "publish"), ("hub.url", TOPIC)]) == PublishRequest(TOPIC)
    both = [("hub.mode", "publish"), ("hub.url", TOPIC), ("hub.topic", TOPIC)]
    assert parse_hub_request(both) == PublishRequest(TOPIC)
    with pytest.raises(RemoteProtocolError, match="two different topics"):
        parse_hub_request([("hub.mode", "publish"), ("hub.url", TOPIC), ("hub.topic", HUB)])
    with pytest.raises(RemoteProtocolError, match=r"hub\.topic \(or hub\.url\)"):
        parse_hub_request([("hub.mode", "publish")])
    with pytest.raises(RemoteProtocolError, match=r"hub\.url"):
        parse_hub_request([("hub.mode", "publish"), ("hub.url", "not a url")])


def test_decode_form() -> None:
    body = urlencode(sub(**{"hub.secret": "é&=", "foo": ""})).encode()
    request = parse_hub_request(decode_form(body))
    assert request.secret == "é&="  # type: ignore[union-attr]
    with pytest.raises(RemoteProtocolError, match="UTF-8"):
        decode_form(b"hub.secret=%ff")
    with pytest.raises(RemoteProtocolError, match="UTF-8"):
        decode_form(b"hub.secret=\xff")
    with pytest.raises(RemoteProtocolError) as info:
        decode_form(b"a=" + b"b" * 70_000)
    assert info.value.status_hint == 413


def test_dataclasses_refuse_invalid_construction() -> None:
    with pytest.raises(LocalProtocolError):
        SubscribeRequest(TOPIC, "not-a-url", 10)
    with pytest.raises(LocalProtocolError):
        SubscribeRequest(TOPIC, CALLBACK, 0)
    with pytest.raises(LocalProtocolError):
        SubscribeRequest(TOPIC, CALLBACK, 10, secret="x" * 200)
    with pytest.raises(LocalProtocolError):
        UnsubscribeRequest("relative", CALLBACK)
    with pytest.raises(LocalProtocolError):
        PublishRequest("")


urls = st.builds(
    lambda host, path, q: f"https://{host}.example/{path}" + (f"?{q}" if q else ""),
    st.from_regex(r"[a-z][a-z0-9]{0,10}", fullmatch=True),
    st.from_regex(r"[a-z0-9/_.-]{0,20}", fullmatch=True),
    st.from_regex(r"([a-z]{1,5}=[a-z0-9]{0,5}&){0,2}", fullmatch=True),
)


@given(
    topic=urls,
    callback=urls,
    lease=st.integers(min_value=1, max_value=10**12),
    secret=st.none() | st.text(min_size=1, max_size=60),
    extra=st.lists(st.tuples(st.sampled_from(["foo", "hub.foo", "hub.verify"]), st.text())),
)
def test_subscribe_form_round_trip(
    topic: str, callback: str, lease: int, secret: str | None, extra: list[tuple[str, str]]
) -> None:
    pairs = [("hub.mode", "subscribe"), ("hub.topic", topic), ("hub.callback", callback)]
    pairs.append(("hub.lease_seconds", str(lease)))
    if secret is not None:
        pairs.append(("hub.secret", secret))
    request = parse_hub_request(decode_form(urlencode(pairs + extra).encode()))
    assert isinstance(request, SubscribeRequest)
    assert (request.topic, request.callback, request.secret) == (topic, callback, secret)
    assert request.lease_seconds == DEFAULT_LEASE.clamp(lease)
    assert DEFAULT_LEASE.minimum <= request.lease_seconds <= DEFAULT_LEASE.maximum


# ---------------------------------------------------------------- verification (§5.3)


def test_verification_url_carries_mode_topic_challenge_lease() -> None:
    url = build_verification_url(
        CALLBACK, mode="subscribe", topic=TOPIC, challenge="abc", lease_seconds=3600
    )
    assert url.startswith(CALLBACK + "?")
    assert query(url) == [
        ("hub.mode", "subscribe"),
        ("hub.topic", TOPIC),
        ("hub.challenge", "abc"),
        ("hub.lease_seconds", "3600"),
    ]


def test_verification_url_preserves_the_callback_query() -> None:
    # websub.rocks' publisher test subscribes with ?token=…
    callback = "https://b.example/publisher/callback?token=abc%2Fdef&x="
    url = build_verification_url(callback, mode="unsubscribe", topic=TOPIC, challenge="c")
    assert url.startswith(callback + "&hub.mode=unsubscribe&")
    assert query(url)[:2] == [("token", "abc/def"), ("x", "")]
    assert "hub.lease_seconds" not in dict(query(url))
    dangling = build_verification_url(
        "https://b.example/cb?", mode="subscribe", topic=TOPIC, challenge="c", lease_seconds=5
    )
    assert dangling.startswith("https://b.example/cb?hub.mode=subscribe")


def test_verification_url_refuses_what_the_rec_forbids() -> None:
    with pytest.raises(LocalProtocolError, match="lease_seconds"):
        build_verification_url(CALLBACK, mode="subscribe", topic=TOPIC, challenge="c")
    with pytest.raises(LocalProtocolError, match="no lease_seconds"):
        build_verification_url(
            CALLBACK, mode="unsubscribe", topic=TOPIC, challenge="c", lease_seconds=5
        )
    with pytest.raises(LocalProtocolError, match="challenge"):
        build_verification_url(
            CALLBACK, mode="subscribe", topic=TOPIC, challenge="", lease_seconds=5
        )
    with pytest.raises(LocalProtocolError, match="mode"):
        build_verification_url(CALLBACK, mode="denied", topic=TOPIC, challenge="c")
    with pytest.raises(LocalProtocolError, match="fragment"):
        build_verification_url(CALLBACK + "#x", mode="unsubscribe", topic=TOPIC, challenge="c")


def test_challenges_are_random_and_url_safe() -> None:
    challenges = {new_challenge() for _ in range(50)}
    assert len(challenges) == 50
    assert all(len(c) >= 40 and c.replace("-", "").replace("_", "").isalnum() for c in challenges)
    with pytest.raises(LocalProtocolError):
        new_challenge(8)


@pytest.mark.parametrize(
    ("status", "body", "verified", "reason"),
    [
        (200, b"abc", True, ""),
        (204, b"abc", True, ""),  # any 2xx (REC §5.3.1)
        (200, b"abc\n", False, "not the hub.challenge"),
        (200, b"", False, "not the hub.challenge"),
        (200, b"ABC", False, "not the hub.challenge"),
        (404, b"abc", False, "refused (404)"),
        (302, b"abc", False, "answered 302"),
        (500, b"abc", False, "answered 500"),
    ],
)
def test_check_verification_response(status: int, body: bytes, verified: bool, reason: str) -> None:
    outcome = check_verification_response(status, body, "abc")
    assert outcome.verified is verified
    assert reason in outcome.reason


def test_subscriber_parses_and_accepts_a_matching_verification() -> None:
    url = build_verification_url(
        CALLBACK, mode="subscribe", topic=TOPIC, challenge="xyz", lease_seconds=86400
    )
    request = parse_callback_request(query(url))
    assert request == VerificationRequest("subscribe", TOPIC, "xyz", 86400)
    assert isinstance(request, VerificationRequest)
    assert request.expect(mode="subscribe", topic=TOPIC) == "xyz"


def test_subscriber_unsubscribe_verification_has_no_lease() -> None:
    url = build_verification_url(CALLBACK, mode="unsubscribe", topic=TOPIC, challenge="q")
    request = parse_callback_request(query(url))
    assert request == VerificationRequest("unsubscribe", TOPIC, "q", None)
    with pytest.raises(RemoteProtocolError, match="waiting for 'subscribe'") as info:
        request.expect(mode="subscribe", topic=TOPIC)  # type: ignore[union-attr]
    assert info.value.status_hint == 404


def test_subscriber_205_wrong_topic_is_404() -> None:
    url = build_verification_url(
        CALLBACK, mode="subscribe", topic=TOPIC + "?invalid", challenge="c", lease_seconds=9
    )
    request = parse_callback_request(query(url))
    with pytest.raises(RemoteProtocolError, match="not the topic") as info:
        request.expect(mode="subscribe", topic=TOPIC)  # type: ignore[union-attr]
    assert info.value.status_hint == 404


@pytest.mark.parametrize(
    ("drop", "message"),
    [
        ("hub.mode", "hub.mode"),
        ("hub.topic", "hub.topic"),
        ("hub.challenge", "hub.challenge"),
        ("hub.lease_seconds", "hub.lease_seconds"),
    ],
)
def test_subscriber_refuses_incomplete_verification_with_404(drop: str, message: str) -> None:
    pairs = [
        ("hub.mode", "subscribe"),
        ("hub.topic", TOPIC),
        ("hub.challenge", "c"),
        ("hub.lease_seconds", "10"),
    ]
    with pytest.raises(RemoteProtocolError, match=message.replace(".", r"\.")) as info:
        parse_callback_request([p for p in pairs if p[0] != drop])
    assert info.value.status_hint == 404


def test_subscriber_refuses_bad_lease_and_duplicate_challenge() -> None:
    base = [("hub.mode", "subscribe"), ("hub.topic", TOPIC), ("hub.challenge", "c")]
    with pytest.raises(RemoteProtocolError) as info:
        parse_callback_request([*base, ("hub.lease_seconds", "0")])
    assert info.value.status_hint == 404
    with pytest.raises(RemoteProtocolError, match="more than once") as info:
        parse_callback_request([*base, ("hub.lease_seconds", "5"), ("hub.challenge", "d")])
    assert info.value.status_hint == 404


def test_denial_round_trip() -> None:
    url = build_denial_url(CALLBACK + "?k=v", topic=TOPIC, reason="topic not exported to you")
    assert query(url)[0] == ("k", "v")
    assert parse_callback_request(query(url)) == Denial(TOPIC, "topic not exported to you")
    bare = build_denial_url(CALLBACK, topic=TOPIC)
    assert "hub.reason" not in bare
    assert parse_callback_request(query(bare)) == Denial(TOPIC, None)
    with pytest.raises(LocalProtocolError):
        build_denial_url(CALLBACK, topic="relative")
