"""X-Hub-Signature (WebSub REC §7.1): websub.rocks hub test 100, subscriber tests 301/302."""

from __future__ import annotations

import hashlib
import hmac

import pytest
from hypothesis import given
from hypothesis import strategies as st

from protocol.errors import LocalProtocolError, RemoteProtocolError
from protocol.hubsignature import sign_body, verify_hub_signature


@pytest.mark.parametrize("method", ["sha1", "sha256", "sha384", "sha512"])
def test_signature_is_lowercase_hex_hmac_of_exact_body(method: str) -> None:
    body = '{"é": 1}\n'.encode()
    header = sign_body(body, "secret", method)
    expected = hmac.new(b"secret", body, getattr(hashlib, method)).hexdigest()
    assert header == f"{method}={expected}"
    assert header == header.lower()
    assert verify_hub_signature(header, body, "secret") == method
    assert verify_hub_signature(header.upper().replace(method.upper(), method), body, b"secret")


def test_subscriber_301_tampered_signature_is_refused() -> None:
    body = b"<p>post</p>"
    header = sign_body(body, "k")
    for bad in (header + "1234", header[:-2] + "00", sign_body(body, "other")):
        with pytest.raises(RemoteProtocolError, match=r"ignored|hexadecimal") as info:
            verify_hub_signature(bad, body, "k")
        assert info.value.status_hint == 403
    with pytest.raises(RemoteProtocolError, match="does not match"):
        verify_hub_signature(header, body + b" ", "k")


def test_subscriber_302_missing_signature_is_refused() -> None:
    for header in (None, "", "   "):
        with pytest.raises(RemoteProtocolError, match="missing") as info:
            verify_hub_signature(header, b"body", "k")
        assert info.value.status_hint == 403


@pytest.mark.parametrize("header", ["md5=abcd", "sha256", "sha256=zz", "=abcd"])
def test_malformed_signature_header(header: str) -> None:
    with pytest.raises(RemoteProtocolError):
        verify_hub_signature(header, b"body", "k")


def test_signing_needs_a_secret_and_a_known_method() -> None:
    with pytest.raises(LocalProtocolError):
        sign_body(b"x", "")
    with pytest.raises(LocalProtocolError):
        sign_body(b"x", "k", "md5")


@given(body=st.binary(max_size=300), secret=st.text(min_size=1, max_size=50))
def test_signature_round_trip(body: bytes, secret: str) -> None:
    header = sign_body(body, secret)
    assert verify_hub_signature(header, body, secret) == "sha256"
    with pytest.raises(RemoteProtocolError):
        verify_hub_signature(header, body + b"\x00", secret)
