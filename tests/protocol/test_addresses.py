"""The address policy: URL checks before IO and the judgement of each resolved address."""

from __future__ import annotations

import ipaddress

import pytest
from hypothesis import given
from hypothesis import strategies as st

from protocol.addresses import (
    MAX_URL_LENGTH,
    AddressPolicy,
    AddressPolicyError,
    Target,
    check_address,
    check_url,
    non_public_reason,
)
from protocol.errors import LocalProtocolError

STRICT = AddressPolicy()
HTTP = AddressPolicy(allow_http=True)
OPEN = AddressPolicy(allow_private=True, allow_http=True)

REFUSED = [
    ("127.0.0.1", "loopback"),
    ("127.255.0.9", "loopback"),
    ("10.0.0.5", "private"),
    ("172.16.0.1", "private"),
    ("172.31.255.255", "private"),
    ("192.168.1.1", "private"),
    ("169.254.169.254", "link-local"),
    ("100.64.0.1", "shared address space"),
    ("100.127.255.254", "shared address space"),
    ("198.18.0.1", "benchmarking"),
    ("198.19.255.255", "benchmarking"),
    ("192.0.2.1", "documentation"),
    ("198.51.100.7", "documentation"),
    ("203.0.113.9", "documentation"),
    ("0.0.0.0", "unspecified"),
    ("0.1.2.3", "this network"),
    ("224.0.0.1", "multicast"),
    ("239.255.255.250", "multicast"),
    ("240.0.0.1", "reserved"),
    ("255.255.255.255", "broadcast"),
    ("192.0.0.8", "IETF protocol"),
    ("::1", "loopback"),
    ("::", "unspecified"),
    ("fc00::1", "unique local"),
    ("fd12:3456::1", "unique local"),
    ("fe80::1", "link-local"),
    ("fec0::1", "site-local"),
    ("ff02::1", "multicast"),
    ("2001:db8::1", "documentation"),
    ("3fff::1", "documentation"),
    ("100::1", "discard-only"),
    ("2001:2::1", "benchmarking"),
    ("64:ff9b:1::1", "local-use NAT64"),
    ("::127.0.0.1", "IPv4-compatible"),
    # IPv6 forms that lead to an IPv4 address are judged by that address.
    ("::ffff:127.0.0.1", "IPv4-mapped address that embeds 127.0.0.1, a loopback"),
    ("::ffff:10.1.2.3", "IPv4-mapped address that embeds 10.1.2.3, a private"),
    ("::ffff:169.254.169.254", "embeds 169.254.169.254, a link-local"),
    ("2002:7f00:1::1", "6to4 address that embeds 127.0.0.1"),
    ("2002:a9fe:a9fe::", "6to4 address that embeds 169.254.169.254"),
    ("64:ff9b::7f00:1", "NAT64 address that embeds 127.0.0.1"),
    ("64:ff9b::a00:5", "NAT64 address that embeds 10.0.0.5"),
    # Teredo: client 10.0.0.1, obfuscated (XOR 0xffffffff) in the last 32 bits.
    ("2001:0:4136:e378:8000:63bf:f5ff:fffe", "Teredo address that embeds 10.0.0.1"),
]

PUBLIC = [
    "93.184.216.34",
    "8.8.8.8",
    "1.1.1.1",
    "172.32.0.1",  # just past 172.16/12
    "100.128.0.1",  # just past 100.64/10
    "198.20.0.1",  # just past 198.18/15
    "2606:4700:4700::1111",
    "2a00:1450:4001:80b::200e",
    "::ffff:93.184.216.34",  # mapped public
    "2002:5db8:d822::1",  # 6to4 of 93.184.216.34
    "64:ff9b::5db8:d822",  # NAT64 of 93.184.216.34
]


@pytest.mark.parametrize(("address", "phrase"), REFUSED)
def test_non_public_addresses_are_refused_with_a_reason(address: str, phrase: str) -> None:
    with pytest.raises(AddressPolicyError) as info:
        check_address(address, STRICT, host="hooks.example")
    message = str(info.value)
    assert message.startswith(f"host hooks.example resolves to {ipaddress.ip_address(address)},")
    assert phrase in message
    assert message.endswith("; set allow_private_callbacks to allow it")
    assert info.value.status_hint == 400
    assert isinstance(info.value, LocalProtocolError)
    assert info.value.address == ipaddress.ip_address(address)


def test_the_message_reads_like_the_design_says() -> None:
    with pytest.raises(AddressPolicyError) as info:
        check_address("10.0.0.5", STRICT, host="cb.example")
    assert str(info.value) == (
        "host cb.example resolves to 10.0.0.5, a private address (RFC 1918); "
        "set allow_private_callbacks to allow it"
    )


@pytest.mark.parametrize("address", PUBLIC)
def test_public_addresses_pass(address: str) -> None:
    assert check_address(address, STRICT) == ipaddress.ip_address(address)
    assert non_public_reason(ipaddress.ip_address(address)) is None


@pytest.mark.parametrize(("address", "phrase"), REFUSED)
def test_allow_private_lets_everything_through(address: str, phrase: str) -> None:
    assert check_address(address, OPEN) == ipaddress.ip_address(address)


def test_scoped_ipv6_is_refused() -> None:
    with pytest.raises(AddressPolicyError, match="scoped"):
        check_address("2606:4700::1%eth0", STRICT)


def test_garbage_address_is_refused() -> None:
    with pytest.raises(AddressPolicyError, match="not an IP address"):
        check_address("not-an-ip", STRICT)


@given(st.integers(min_value=0, max_value=2**32 - 1))
def test_mapped_form_is_judged_like_the_ipv4_address(n: int) -> None:
    v4 = ipaddress.IPv4Address(n)
    mapped = ipaddress.IPv6Address((0xFFFF << 32) | n)
    assert (non_public_reason(v4) is None) == (non_public_reason(mapped) is None)
    nat64 = ipaddress.IPv6Address(int(ipaddress.IPv6Address("64:ff9b::")) | n)
    assert (non_public_reason(v4) is None) == (non_public_reason(nat64) is None)


@given(st.integers(min_value=0, max_value=2**32 - 1))
def test_every_ipv4_the_table_passes_is_global(n: int) -> None:
    ip = ipaddress.IPv4Address(n)
    if non_public_reason(ip) is None:
        assert ip.is_global and not ip.is_private and not ip.is_multicast


# --------------------------------------------------------------------------- URLs


def test_https_url_is_split_once() -> None:
    target = check_url("https://Hooks.Example:8443/cb/1?x=1&y=2#frag", STRICT)
    assert target == Target(scheme="https", host="hooks.example", port=8443,
                            target="/cb/1?x=1&y=2", ip=None)
    assert target.host_header == "hooks.example:8443"


def test_default_port_and_path() -> None:
    target = check_url("https://hooks.example", STRICT)
    assert (target.port, target.target, target.host_header) == (443, "/", "hooks.example")
    assert check_url("http://hooks.example?q", HTTP).target == "/?q"


def test_ip_literals_are_judged_directly() -> None:
    assert check_url("https://93.184.216.34/x", STRICT).ip == ipaddress.ip_address(
        "93.184.216.34")
    target = check_url("https://[2606:4700::1]:444/", STRICT)
    assert target.host == "2606:4700::1"
    assert target.host_header == "[2606:4700::1]:444"
    for url, ip in [
        ("https://127.0.0.1/", "127.0.0.1"),
        ("https://10.1.2.3/", "10.1.2.3"),
        ("https://169.254.169.254/latest/meta-data/", "169.254.169.254"),
        ("https://[::1]/", "::1"),
        ("https://[::ffff:127.0.0.1]/", "::ffff:7f00:1"),
    ]:
        with pytest.raises(AddressPolicyError, match=f"URL names {ip},") as info:
            check_url(url, STRICT)
        assert info.value.address == ipaddress.ip_address(ip)
    assert check_url("http://127.0.0.1:8000/", OPEN).ip == ipaddress.ip_address("127.0.0.1")


@pytest.mark.parametrize(
    ("url", "phrase"),
    [
        ("http://hooks.example/", "plain http; only https is allowed (set allow_http_callbacks"),
        ("ftp://hooks.example/", "must start with https://"),
        ("file:///etc/passwd", "must start with https://"),
        ("gopher://127.0.0.1:6379/", "must start with https://"),
        ("hooks.example/cb", "must start with https://"),
        ("https://user:pw@hooks.example/", "user name or password"),
        ("https://hooks.example@10.0.0.1/", "user name or password"),
        ("https:///path", "has no host"),
        ("https://:443/", "has no host"),
        ("https://hooks.example:0/", "empty or zero port"),
        ("https://hooks.example:/", "empty or zero port"),
        ("https://hooks.example:65536/", "malformed"),
        ("https://hooks.example:99999999999/", "malformed"),
        ("https://hooks.example:-1/", "malformed"),
        ("https://hooks.example:8o/", "malformed"),
        ("https://[::1/", "malformed"),
        ("https://[hooks.example]/", "malformed"),
        ("https://[fe80::1%25eth0]/", "scoped"),
        ("https://hooks.example\\@10.0.0.1/", "backslash"),
        ("https://hooks.example /", "space"),
        ("https://hooks.example/\r\nHost: x", "control character"),
        ("https://bücher.example/", "xn--"),
        ("https://127.1/", "not a valid host name"),
        ("https://2130706433/", "not a valid host name"),
        ("https://0x7f.0.0.1/", "not a valid host name"),
        ("https://010.0.0.1/", "not a valid host name"),
        ("https://-bad.example/", "not a valid host name"),
        ("https://a..example/", "not a valid host name"),
        ("https://" + "a" * 64 + ".example/", "not a valid host name"),
    ],
)
def test_bad_urls_are_refused_before_io(url: str, phrase: str) -> None:
    with pytest.raises(AddressPolicyError) as info:
        check_url(url, STRICT)
    assert phrase in str(info.value)
    assert info.value.status_hint == 400


def test_allow_http_allows_http_only() -> None:
    assert check_url("http://hooks.example/", HTTP).scheme == "http"
    assert check_url("HTTPS://hooks.example/", STRICT).scheme == "https"
    with pytest.raises(AddressPolicyError):
        check_url("ws://hooks.example/", HTTP)


def test_length_bound() -> None:
    base = "https://hooks.example/"
    check_url(base + "a" * (MAX_URL_LENGTH - len(base)), STRICT)
    with pytest.raises(AddressPolicyError, match="characters long"):
        check_url(base + "a" * (MAX_URL_LENGTH - len(base) + 1), STRICT)


def test_trailing_dot_and_underscore_names() -> None:
    assert check_url("https://hooks.example./", STRICT).host == "hooks.example."
    assert check_url("https://_cb.hooks.example/", STRICT).host == "_cb.hooks.example"


def test_policy_and_target_validate_at_construction() -> None:
    with pytest.raises(LocalProtocolError):
        AddressPolicy(allow_private=1)  # type: ignore[arg-type]
    with pytest.raises(LocalProtocolError):
        Target(scheme="ftp", host="x", port=21, target="/")
    with pytest.raises(LocalProtocolError):
        Target(scheme="https", host="x", port=0, target="/")
    with pytest.raises(LocalProtocolError):
        Target(scheme="https", host="x", port=443, target="x")
