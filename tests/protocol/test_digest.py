"""Content-Digest (RFC 9530) and legacy Digest (RFC 3230) build and verify."""

from __future__ import annotations

import base64
import hashlib

import pytest
from hypothesis import given
from hypothesis import strategies as st

from protocol.digest import (
    content_digest,
    header_pairs,
    header_value,
    legacy_digest,
    verify_content_digest,
    verify_legacy_digest,
)
from protocol.errors import LocalProtocolError, RemoteProtocolError

BODY = b'{"hello": "world"}'
# draft-cavage Appendix C and RFC 9421 Appendix B.2 published these for BODY.
SHA256_B64 = "X48E9qOokqqrvdts8nOJRJN3OWDUoyWxBf7kbu9DBPE="
SHA512_B64 = (
    "WZDPaVn/7XgHaAy8pmojAkGWoRx2UFChF41A2svX+TaPm+AbwAgBWnrIiYllu7BNNyealdVLvRwEmTHWXvJwew=="
)


class TestContentDigest:
    def test_builds_published_values(self) -> None:
        assert content_digest(BODY) == f"sha-256=:{SHA256_B64}:"
        assert content_digest(BODY, "sha-512") == f"sha-512=:{SHA512_B64}:"

    def test_refuses_to_build_with_unsupported_algorithm(self) -> None:
        with pytest.raises(LocalProtocolError, match="md5"):
            content_digest(BODY, "md5")

    def test_accepts_rfc9421_vector(self) -> None:
        assert verify_content_digest(f"sha-512=:{SHA512_B64}:", BODY) == ("sha-512",)

    def test_checks_every_supported_member(self) -> None:
        both = f"sha-256=:{SHA256_B64}:, sha-512=:{SHA512_B64}:"
        assert verify_content_digest(both, BODY) == ("sha-256", "sha-512")
        wrong_512 = base64.b64encode(hashlib.sha512(b"other").digest()).decode()
        with pytest.raises(RemoteProtocolError, match="sha-512 does not match") as info:
            verify_content_digest(f"sha-256=:{SHA256_B64}:, sha-512=:{wrong_512}:", BODY)
        assert info.value.status_hint == 401

    def test_ignores_unknown_algorithm_next_to_a_supported_one(self) -> None:
        value = f"unixsum=12345, sha-256=:{SHA256_B64}:"
        assert verify_content_digest(value, BODY) == ("sha-256",)

    def test_refuses_only_unsupported_algorithms(self) -> None:
        md5 = base64.b64encode(hashlib.md5(BODY).digest()).decode()
        with pytest.raises(RemoteProtocolError, match="only unsupported algorithms") as info:
            verify_content_digest(f"md5=:{md5}:", BODY)
        assert info.value.status_hint == 400
        assert "md5" in str(info.value) and "sha-256" in str(info.value)

    def test_refuses_missing(self) -> None:
        with pytest.raises(RemoteProtocolError, match="missing") as info:
            verify_content_digest(None, BODY)
        assert info.value.status_hint == 400

    @pytest.mark.parametrize(
        "value",
        [
            f"sha-256={SHA256_B64}",  # legacy syntax in the new header
            "sha-256=:not base64!:",
            "SHA-256=:AAAA:",  # dictionary keys are lower-case
            "",
            "sha-256=:é:",
        ],
    )
    def test_refuses_malformed(self, value: str) -> None:
        with pytest.raises(RemoteProtocolError) as info:
            verify_content_digest(value, BODY)
        assert info.value.status_hint == 400

    def test_refuses_wrong_length_and_wrong_type(self) -> None:
        with pytest.raises(RemoteProtocolError, match="32 bytes"):
            verify_content_digest("sha-256=:AAAA:", BODY)
        with pytest.raises(RemoteProtocolError, match="byte sequence"):
            verify_content_digest('sha-256="text"', BODY)

    def test_refuses_duplicate_member(self) -> None:
        # A parser that keeps the last member would see a different digest than one
        # keeping the first.
        good, bad = f":{SHA256_B64}:", ":" + base64.b64encode(bytes(32)).decode() + ":"
        with pytest.raises(RemoteProtocolError, match="duplicate"):
            verify_content_digest(f"sha-256={bad}, sha-256={good}", BODY)

    @given(st.binary(min_size=1, max_size=256), st.data())
    def test_any_changed_byte_breaks_it(self, body: bytes, data: st.DataObject) -> None:
        value = content_digest(body)
        index = data.draw(st.integers(0, len(body) - 1))
        flip = data.draw(st.integers(1, 255))
        tampered = body[:index] + bytes([body[index] ^ flip]) + body[index + 1 :]
        assert verify_content_digest(value, body) == ("sha-256",)
        with pytest.raises(RemoteProtocolError, match="does not match") as info:
            verify_content_digest(value, tampered)
        assert info.value.status_hint == 401


class TestLegacyDigest:
    def test_builds_appendix_c_value(self) -> None:
        assert legacy_digest(BODY) == f"SHA-256={SHA256_B64}"
        assert legacy_digest(BODY, "sha-512") == f"SHA-512={SHA512_B64}"

    def test_refuses_to_build_with_unsupported_algorithm(self) -> None:
        with pytest.raises(LocalProtocolError):
            legacy_digest(BODY, "MD5")

    def test_accepts_any_case_and_several_members(self) -> None:
        assert verify_legacy_digest(f"sha-256={SHA256_B64}", BODY) == ("sha-256",)
        both = f"SHA-256={SHA256_B64}, SHA-512={SHA512_B64}"
        assert verify_legacy_digest(both, BODY) == ("sha-256", "sha-512")
        assert verify_legacy_digest(f"UNIXsum=1, SHA-256={SHA256_B64}", BODY) == ("sha-256",)

    def test_refuses_mismatch(self) -> None:
        with pytest.raises(RemoteProtocolError, match="does not match") as info:
            verify_legacy_digest(f"SHA-256={SHA256_B64}", BODY + b" ")
        assert info.value.status_hint == 401

    @pytest.mark.parametrize(
        ("value", "fragment"),
        [
            ("SHA-256", "malformed"),
            ("", "malformed"),
            ("SHA-256=", "malformed"),
            ("SHA-256=%%%%", "not base64"),
            ("SHA-256=AAAA", "3 bytes; expected 32"),
            (f"SHA-256={SHA256_B64}, sha-256={SHA256_B64}", "twice"),
            ("MD5=XrY7u+Ae7tCTyyK7j1rNww==", "only unsupported"),
        ],
    )
    def test_refuses_malformed(self, value: str, fragment: str) -> None:
        with pytest.raises(RemoteProtocolError, match=fragment) as info:
            verify_legacy_digest(value, BODY)
        assert info.value.status_hint == 400

    def test_refuses_missing(self) -> None:
        with pytest.raises(RemoteProtocolError, match="missing") as info:
            verify_legacy_digest(None, BODY)
        assert info.value.status_hint == 400

    @given(st.binary(min_size=1, max_size=256), st.data())
    def test_any_changed_byte_breaks_it(self, body: bytes, data: st.DataObject) -> None:
        value = legacy_digest(body)
        index = data.draw(st.integers(0, len(body) - 1))
        tampered = body[:index] + bytes([body[index] ^ 0x01]) + body[index + 1 :]
        with pytest.raises(RemoteProtocolError, match="does not match"):
            verify_legacy_digest(value, tampered)


class TestHeaderHelpers:
    def test_value_is_case_insensitive_trimmed_and_joined(self) -> None:
        pairs = [("Accept", " a "), ("X-Other", "x"), ("accept", "b\t")]
        assert header_value(pairs, "ACCEPT") == "a, b"
        assert header_value(pairs, "missing") is None

    def test_pairs_from_mapping_and_from_lines(self) -> None:
        assert header_pairs({"A": "1"}) == [("A", "1")]
        assert header_pairs([("A", "1"), ("A", "2")]) == [("A", "1"), ("A", "2")]

    def test_pairs_refuse_bytes(self) -> None:
        with pytest.raises(LocalProtocolError):
            header_pairs([(b"A", b"1")])  # type: ignore[list-item]
