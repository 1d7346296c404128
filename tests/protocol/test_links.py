"""RFC 8288 Link headers and WebSub discovery (REC §4)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from protocol.errors import LocalProtocolError, RemoteProtocolError
from protocol.links import build_link_header, discover, parse_link_header

TOPIC = "https://a.example/trackers/bugs/items/42"
HUB = "https://a.example/hub"

urls = st.builds(
    lambda host, path, q: f"https://{host}.example/{path}" + (f"?{q}" if q else ""),
    st.from_regex(r"[a-z][a-z0-9]{0,10}", fullmatch=True),
    st.from_regex(r"[a-z0-9/_.-]{0,20}", fullmatch=True),
    st.from_regex(r"([a-z]{1,5}=[a-z0-9]{0,5}&){0,2}", fullmatch=True),
)


def test_link_header_combines_hub_and_self() -> None:
    header = build_link_header(hub=HUB, self_url=TOPIC)
    assert header == f'<{HUB}>; rel="hub", <{TOPIC}>; rel="self"'
    found = discover(header)
    assert found.hubs == (HUB,)
    assert found.self_url == TOPIC
    two = build_link_header(hub=[HUB, "https://hub2.example/"], self_url=TOPIC)
    assert discover(two).hubs == (HUB, "https://hub2.example/")
    with pytest.raises(LocalProtocolError):
        build_link_header(hub=[], self_url=TOPIC)
    with pytest.raises(LocalProtocolError):
        build_link_header(hub=HUB, self_url="relative")


def test_parse_link_rfc8288_forms() -> None:
    values = [
        '<https://x.example/a,b>; rel="self alternate"; title="a, \\"quoted\\"; thing"',
        '<https://h.example/>;rel=hub , <https://other.example/>; rel=next; anchor="#x"',
        ' <https://h2.example/> ; REL = "HUB" ; rel="self"',
    ]
    links = parse_link_header(values)
    assert [link.target for link in links] == [
        "https://x.example/a,b",
        "https://h.example/",
        "https://other.example/",
        "https://h2.example/",
    ]
    assert links[0].rels == ("self", "alternate")
    assert links[0].param("title") == 'a, "quoted"; thing'
    assert links[1].rels == ("hub",)
    assert links[2].rels == ("next",)
    # rel is case-insensitive, and a second rel MUST be ignored (RFC 8288 §3.3).
    assert links[3].rels == ("hub",)
    found = discover(values)
    assert found.hubs == ("https://h.example/", "https://h2.example/")
    assert found.self_url == "https://x.example/a,b"


def test_parse_link_resolves_relative_targets_and_tolerates_empty_elements() -> None:
    links = parse_link_header(', </hub>; rel="hub",, <items/42>; rel=self;', base_url=TOPIC)
    assert [link.target for link in links] == [
        "https://a.example/hub",
        "https://a.example/trackers/bugs/items/items/42",
    ]


@pytest.mark.parametrize(
    "value",
    [
        'https://x.example/; rel="hub"',
        '<https://x.example/; rel="hub"',
        '<a>; rel="hub',
        "<a> b",
        "<a>; =x",
    ],
)
def test_malformed_link_header(value: str) -> None:
    with pytest.raises(RemoteProtocolError, match="malformed Link header") as info:
        parse_link_header(value)
    assert info.value.status_hint == 502


def test_discover_refuses_two_selves_and_allows_none() -> None:
    with pytest.raises(RemoteProtocolError, match="rel=self"):
        discover(['<https://a.example/1>; rel="self"', '<https://a.example/2>; rel="self"'])
    assert discover('<https://h.example/>; rel="hub"').self_url is None


@given(
    hubs=st.lists(urls, min_size=1, max_size=3),
    self_url=urls,
)
def test_link_round_trip(hubs: list[str], self_url: str) -> None:
    found = discover(build_link_header(hub=hubs, self_url=self_url))
    assert found.hubs == tuple(hubs)
    assert found.self_url == self_url
