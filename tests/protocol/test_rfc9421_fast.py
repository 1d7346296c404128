"""rfc9421.sign builds its signature base without the package (the fast path): prove it
writes exactly the bytes the package's ``_prepare`` writes, and that the package's
verifier accepts what it signs. The precedent is protocol/cavage.py and its tests."""

from __future__ import annotations

import base64

import pytest
from cryptography.hazmat.primitives.asymmetric import ed25519
from http_message_signatures import algorithms
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from protocol import rfc9421
from protocol.digest import content_digest

ED = algorithms.ED25519
URL_CHARS = "abcXYZ019._~!$&'()*+,;=:@/-%?#[] é\\\"\t"
VALUE_CHARS = st.characters(min_codepoint=0, max_codepoint=0x10F) | st.sampled_from(
    [" ", "\t", "\r", "\n", '"', "\\", "%"])


def library(method: str, url: str, pairs: list[tuple[str, str]], components: tuple[str, ...],
            created: int, key_id: str, expires: int, nonce: str, label: str) -> object:
    try:
        return rfc9421._prepare(method, url, pairs, algorithm=ED, components=components,
                                created=created, key_id=key_id, include_alg=True,
                                expires=expires, nonce=nonce, label=label)
    except Exception as exc:  # what the package refuses, the fast path must not accept
        return type(exc)


urls = st.one_of(
    st.builds(lambda scheme, host, port, path, query: f"{scheme}://{host}{port}{path}{query}",
              st.sampled_from(["http", "https", "HTTP", "ftp"]),
              st.sampled_from(["a.example", "127.0.0.1", "B.Example", "[::1]", "x%41y",
                               "u@h.example", "h_1.example"]),
              st.sampled_from(["", ":", ":8080", ":0443", ":x"]),
              st.text(URL_CHARS, max_size=12).map(lambda t: "/" + t if t[:1] != "/" else t)
              | st.just(""),
              st.text(URL_CHARS, max_size=12).map(lambda t: "?" + t) | st.just("")),
    st.text(URL_CHARS, max_size=30).map(lambda t: "https://" + t),
)
values = st.text(VALUE_CHARS, max_size=20) | st.sampled_from(
    ["application/json", " text/plain ; q=1\t", "a\r\n b", "", "\t"])
headers = st.lists(st.tuples(st.sampled_from(["Content-Type", "content-type", "X-Other",
                                              "CONTENT-TYPE", "link"]), values), max_size=4)
sf_text = st.text(st.characters(min_codepoint=0, max_codepoint=0x80), max_size=24)


@settings(max_examples=3000, deadline=None)
@given(method=st.sampled_from(["POST", "GET", "PUT", "OPTIONS", "DELETE"]), url=urls,
       pairs=headers, body=st.binary(max_size=8), created=st.integers(-10, 2**40),
       validity=st.integers(-5, 10**6), key_id=sf_text | st.just("https://a.example/k/1"),
       nonce=sf_text, label=st.sampled_from(["sig1", "a-b.c*_9", "Sig", "1x", "*", ""]))
@example(method="POST", url="https://b.example/cb/1?token=t", pairs=[
    ("Content-Type", "application/json")], body=b"{}", created=1700000000, validity=300,
    key_id='a"b\\c', nonce="n", label="sig1")
@example(method="POST", url="http://b.example", pairs=[], body=b"", created=1, validity=-1,
         key_id="k", nonce="n", label="sig1")
def test_fast_path_is_byte_identical_to_the_package(
        method: str, url: str, pairs: list[tuple[str, str]], body: bytes, created: int,
        validity: int, key_id: str, nonce: str, label: str) -> None:
    if body:
        pairs = [*pairs, ("Content-Digest", content_digest(body))]
    components = rfc9421.required_components(pairs, body)
    expires = created + validity
    fast = rfc9421._fast_prepare(method, url, pairs, algorithm=ED, components=components,
                                 created=created, key_id=key_id, expires=expires, nonce=nonce,
                                 label=label)
    if fast is None:
        return  # sign() hands these to the package itself
    assert fast == library(method, url, pairs, components, created, key_id, expires, nonce,
                           label)


def test_the_usual_requests_take_the_fast_path() -> None:
    for url in ("https://b.example/cb/1?token=t1", "http://127.0.0.1:8001/federation/items/3",
                "https://b.example", "https://b.example/a%20b?x=1&y=/?"):
        pairs = [("content-type", "application/json"), ("Content-Digest", content_digest(b"x"))]
        components = rfc9421.required_components(pairs, b"x")
        assert rfc9421._fast_prepare("POST", url, pairs, algorithm=ED, components=components,
                                     created=1700000000, key_id="https://a.example/k/1",
                                     expires=1700000300, nonce="abc", label="sig1")


@settings(suppress_health_check=[HealthCheck.function_scoped_fixture], max_examples=200,
          deadline=None)
@given(url=urls, body=st.binary(max_size=64), ctype=values,
       key_id=sf_text)
def test_what_sign_makes_verifies_with_the_package(
        ed25519_key: ed25519.Ed25519PrivateKey, url: str, body: bytes, ctype: str,
        key_id: str) -> None:
    try:
        added = rfc9421.sign("POST", url, [("Content-Type", ctype)], body, key=ed25519_key,
                             key_id=key_id or "k", now=1700000000)
    except Exception:
        return  # refused inputs are the package's business, tested in test_rfc9421
    headers = [("Content-Type", ctype), *added.items()]
    result = rfc9421.verify("POST", url, headers, body, now=1700000010,
                            resolve_key={key_id or "k": ed25519_key.public_key()}.get)
    assert result.key_id == (key_id or "k")


@pytest.mark.parametrize("url", ["https://b.example/cb/1?token=t1", "http://b.example"])
def test_sign_output_is_the_package_output(ed25519_key: ed25519.Ed25519PrivateKey,
                                           url: str) -> None:
    pairs = [("Content-Type", "application/json")]
    added = rfc9421.sign("POST", url, pairs, b"{}", key=ed25519_key, key_id="k",
                         now=1700000000, nonce="fixed")
    full = [*pairs, ("Content-Digest", added["Content-Digest"])]
    prepared = rfc9421._prepare("POST", url, full, algorithm=ED,
                                components=rfc9421.required_components(full, b"{}"),
                                created=1700000000, key_id="k", include_alg=True,
                                expires=1700000300, nonce="fixed", label="sig1")
    assert added["Signature-Input"] == f"sig1={prepared.signature_params}"
    assert ed25519_key.sign(prepared.signature_base) == base64.b64decode(
        added["Signature"][len("sig1=:"):-1])
