"""draft-cavage profile: Appendix C and httpsig vectors, byte identity with httpsig,
each known httpsig 1.3.0 hazard, strict parsing, and every refusal."""

from __future__ import annotations

import base64
import email.utils
import sys

import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ed25519, padding, rsa
from cryptography.hazmat.primitives.serialization import (
    Encoding,
    NoEncryption,
    PrivateFormat,
    PublicFormat,
)
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from protocol import cavage
from protocol.digest import legacy_digest
from protocol.errors import LocalProtocolError, RemoteProtocolError
from tests.protocol.conftest import CAVAGE_RSA_PEM

# Appendix C test request (draft-cavage-http-signatures-12).
C_URL = "https://example.com/foo?param=value&pet=dog"
C_BODY = b'{"hello": "world"}'
C_DATE = "Sun, 05 Jan 2014 21:31:40 GMT"
C_NOW = email.utils.parsedate_to_datetime(C_DATE).timestamp()
C_HEADERS = {
    "Host": "example.com",
    "Date": C_DATE,
    "Content-Type": "application/json",
    "Digest": "SHA-256=X48E9qOokqqrvdts8nOJRJN3OWDUoyWxBf7kbu9DBPE=",
    "Content-Length": "18",
}
BASIC = ("(request-target)", "host", "date")
ALL = (*BASIC, "content-type", "digest", "content-length")
C1 = (
    "SjWJWbWN7i0wzBvtPl8rbASWz5xQW6mcJmn+ibttBqtifLN7Sazz6m79cNfwwb8DMJ5cou1s7uEGKKCs+FLEEaDV5lp7"
    "q25WqS+lavg7T8hc0GppauB6hbgEKTwblDHYGEtbGmtdHgVCk9SuS13F0hZ8FD0k/5OxEPXe5WozsbM="
)
C2 = (
    "qdx+H7PHHDZgy4y/Ahn9Tny9V3GP6YgBPyUXMmoxWtLbHpUnXS2mg2+SbrQDMCJypxBLSPQR2aAjn7ndmw2iicw3HMbe"
    "8VfEdKFYRqzic+efkb3nndiv/x1xSHDJWeSWkx3ButlYSuBskLu6kd9Fswtemr3lgdDEmn04swr2Os0="
)
C3 = (
    "vSdrb+dS3EceC9bcwHSo4MlyKS59iFIrhgYkz8+oVLEEzmYZZvRs8rgOp+63LEM3v+MFHB32NfpB2bEKBIvB1q52LaEU"
    "HFv120V01IL+TAD48XaERZFukWgHoBTLMhYS2Gb51gWxpeIq8knRmPnYePbF5MOkR0Zkly4zKH7s1dE="
)
# httpsig's own tests sign the draft-08 date (the weekday is wrong for that day).
HTTPSIG_DATE = "Thu, 05 Jan 2014 21:31:40 GMT"
HTTPSIG_VECTORS = {
    ("date",): (
        "jKyvPcxB4JbmYY4mByyBY7cZfNl4OW9HpFQlG7N4YcJPteKTu4MWCLyk+gIr0wDgqtLWf9NLpMAMimdfsH7FSWGf"
        "bMFSrsVTHNTk0rK3usrfFnti1dxsM4jl0kYJCKTGI/UWkqiaxwNiKqGcdlEDrTcUhhsFsOIo8VhddmZTZ8w="
    ),
    BASIC: (
        "HUxc9BS3P/kPhSmJo+0pQ4IsCo007vkv6bUm4Qehrx+B1Eo4Mq5/6KylET72ZpMUS80XvjlOPjKzxfeTQj4DiKbA"
        "zwJAb4HX3qX6obQTa00/qPDXlMepD2JtTw33yNnm/0xV7fQuvILN/ys+378Ysi082+4xBQFwvhNvSoVsGv4="
    ),
    ALL: (
        "Ef7MlxLXoBovhil3AlyjtBwAL9g4TN3tibLj7uuNB3CROat/9KaeQ4hW2NiJ+pZ6HQEOx9vYZAyi+7cmIkmJszJC"
        "ut5kQLAwuX+Ms/mUFvpKlSo9StS2bMXDBNjOh4Auj774GFj4gwjS+3NhFeoqyr/MuN6HsEnkvn6zdgfE2i0="
    ),
}

URL = "https://b.example/inbox?x=1"
NOW = 1_700_000_000.0
BODY = b'{"type": "Update", "object": "https://a.example/items/42"}'
KEY_ID = "https://a.example/actor#main-key"


def rsa_sign(key: rsa.RSAPrivateKey, message: bytes) -> str:
    return base64.b64encode(key.sign(message, padding.PKCS1v15(), hashes.SHA256())).decode()


def public_pem(key: rsa.RSAPrivateKey) -> bytes:
    return key.public_key().public_bytes(Encoding.PEM, PublicFormat.SubjectPublicKeyInfo)


def signed(
    key: rsa.RSAPrivateKey,
    *,
    method: str = "POST",
    url: str = URL,
    body: bytes = BODY,
    now: float = NOW,
    key_id: str = KEY_ID,
    headers: dict[str, str] | None = None,
    backend: cavage.Backend = "cryptography",
) -> dict[str, str]:
    base = {"Content-Type": "application/activity+json"} if headers is None else headers
    added = cavage.sign(method, url, base, body, key=key, key_id=key_id, now=now, backend=backend)
    return base | added


def refusal(
    headers: dict[str, str],
    key: object,
    *,
    method: str = "POST",
    url: str = URL,
    body: bytes = BODY,
    now: float = NOW,
    key_id: str = KEY_ID,
) -> RemoteProtocolError:
    with pytest.raises(RemoteProtocolError) as info:
        cavage.verify(method, url, headers, body, resolve_key={key_id: key}.get, now=now)
    return info.value


class TestHttpsigImport:
    def test_httpsig_imports_with_the_pinned_setuptools(self) -> None:
        module = cavage.load_httpsig()
        assert hasattr(module, "HeaderSigner") and hasattr(module, "HeaderVerifier")

    def test_missing_pkg_resources_gives_a_clear_error(
        self, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        # What setuptools >= 82 (or a bare Python 3.12 venv) does to httpsig 1.3.0.
        monkeypatch.setitem(sys.modules, "pkg_resources", None)
        monkeypatch.delitem(sys.modules, "httpsig")
        with pytest.raises(LocalProtocolError, match=r"setuptools<82"):
            cavage.load_httpsig()

    def test_the_default_path_needs_no_httpsig(
        self, monkeypatch: pytest.MonkeyPatch, rsa_key: rsa.RSAPrivateKey
    ) -> None:
        monkeypatch.setitem(sys.modules, "httpsig", None)
        headers = signed(rsa_key)
        cavage.verify(
            "POST", URL, headers, BODY, resolve_key=lambda _: rsa_key.public_key(), now=NOW
        )


class TestAppendixC:
    def test_signing_strings(self) -> None:
        assert cavage.signing_string(("date",), method="POST", url=C_URL, headers=C_HEADERS) == (
            b"date: Sun, 05 Jan 2014 21:31:40 GMT"
        )
        assert cavage.signing_string(BASIC, method="POST", url=C_URL, headers=C_HEADERS) == (
            b"(request-target): post /foo?param=value&pet=dog\n"
            b"host: example.com\n"
            b"date: Sun, 05 Jan 2014 21:31:40 GMT"
        )
        assert cavage.signing_string(ALL, method="POST", url=C_URL, headers=C_HEADERS).endswith(
            b"\ncontent-type: application/json"
            b"\ndigest: SHA-256=X48E9qOokqqrvdts8nOJRJN3OWDUoyWxBf7kbu9DBPE="
            b"\ncontent-length: 18"
        )

    @pytest.mark.parametrize(("names", "expected"), [(("date",), C1), (BASIC, C2), (ALL, C3)])
    def test_we_reproduce_the_published_signatures(
        self, cavage_c_key: rsa.RSAPrivateKey, names: tuple[str, ...], expected: str
    ) -> None:
        message = cavage.signing_string(names, method="POST", url=C_URL, headers=C_HEADERS)
        assert rsa_sign(cavage_c_key, message) == expected

    @pytest.mark.parametrize(
        ("header", "required"),
        [
            (f'keyId="Test",algorithm="rsa-sha256",signature="{C1}"', ("date",)),
            (
                f'keyId="Test",algorithm="rsa-sha256",headers="{" ".join(BASIC)}",signature="{C2}"',
                BASIC,
            ),
            # C.3 as it really verifies: without the (created)/(expires) it prints.
            (
                f'keyId="Test",algorithm="rsa-sha256",headers="{" ".join(ALL)}",signature="{C3}"',
                ALL,
            ),
        ],
    )
    def test_published_signatures_verify(
        self, cavage_c_key: rsa.RSAPrivateKey, header: str, required: tuple[str, ...]
    ) -> None:
        result = cavage.verify(
            "POST",
            C_URL,
            C_HEADERS | {"Signature": header},
            C_BODY,
            resolve_key={"Test": cavage_c_key.public_key()}.get,
            now=C_NOW + 1,
            required=required,
            min_rsa_bits=1024,
        )
        assert (result.key_id, result.algorithm, result.date) == ("Test", "rsa-sha256", C_NOW)

    def test_c3_as_printed_is_refused(self) -> None:
        # The draft prints (created)/(expires) with rsa-sha256, which its own section
        # 2.3 forbids; the printed signature only verifies over the six plain lines.
        printed = (
            'keyId="Test",algorithm="rsa-sha256",created=1402170695,expires=1402170699,'
            'headers="(request-target) (created) (expires) host date content-type digest '
            f'content-length",signature="{C3}"'
        )
        with pytest.raises(RemoteProtocolError, match=r"section 2\.3") as info:
            cavage.parse_signature_header(printed)
        assert info.value.status_hint == 400

    def test_default_policy_and_key_size_refuse_the_appendix_request(
        self, cavage_c_key: rsa.RSAPrivateKey
    ) -> None:
        headers = C_HEADERS | {
            "Signature": f'keyId="Test",algorithm="rsa-sha256",headers="{" ".join(ALL)}",'
            f'signature="{C3}"'
        }
        keys = {"Test": cavage_c_key.public_key()}.get
        with pytest.raises(RemoteProtocolError, match="1024-bit RSA") as info:
            cavage.verify("POST", C_URL, headers, C_BODY, resolve_key=keys, now=C_NOW)
        assert info.value.status_hint == 403
        with pytest.raises(RemoteProtocolError, match="does not cover digest"):
            cavage.verify(
                "POST",
                C_URL,
                headers | {"Signature": f'keyId="Test",algorithm="rsa-sha256",signature="{C1}"'},
                C_BODY,
                resolve_key=keys,
                now=C_NOW,
                required=("date", "digest"),
                min_rsa_bits=1024,
            )


class TestHttpsigVectors:
    @pytest.mark.parametrize(("names", "expected"), list(HTTPSIG_VECTORS.items()))
    def test_upstream_vectors(
        self, cavage_c_key: rsa.RSAPrivateKey, names: tuple[str, ...], expected: str
    ) -> None:
        headers = C_HEADERS | {"Date": HTTPSIG_DATE}
        message = cavage.signing_string(names, method="POST", url=C_URL, headers=headers)
        assert rsa_sign(cavage_c_key, message) == expected
        result = cavage.verify(
            "POST",
            C_URL,
            headers | {"Signature": cavage.signature_header("Test", "rsa-sha256", expected, names)},
            C_BODY,
            resolve_key={"Test": cavage_c_key.public_key()}.get,
            now=C_NOW,
            required=names,
            min_rsa_bits=1024,
        )
        assert result.covered == names

    @pytest.mark.parametrize("names", list(HTTPSIG_VECTORS))
    def test_our_header_is_byte_identical_to_httpsig(
        self, cavage_c_key: rsa.RSAPrivateKey, names: tuple[str, ...]
    ) -> None:
        httpsig = cavage.load_httpsig()
        headers = C_HEADERS | {"Date": HTTPSIG_DATE}
        theirs = httpsig.HeaderSigner(
            "Test",
            CAVAGE_RSA_PEM,
            algorithm="rsa-sha256",
            headers=list(names),
            sign_header="signature",
        ).sign(headers, method="POST", path="/foo?param=value&pet=dog")["signature"]
        message = cavage.signing_string(names, method="POST", url=C_URL, headers=headers)
        ours = cavage.signature_header("Test", "rsa-sha256", rsa_sign(cavage_c_key, message), names)
        assert ours == theirs


class TestInteropWithHttpsig:
    def test_sign_is_byte_identical_on_both_backends(self, rsa_key: rsa.RSAPrivateKey) -> None:
        base = {"Content-Type": "application/activity+json"}
        ours = cavage.sign("POST", URL, base, BODY, key=rsa_key, key_id=KEY_ID, now=NOW)
        theirs = cavage.sign(
            "POST", URL, base, BODY, key=rsa_key, key_id=KEY_ID, now=NOW, backend="httpsig"
        )
        assert ours == theirs
        assert ours["Signature"].startswith(f'keyId="{KEY_ID}",algorithm="rsa-sha256",signature="')
        assert ours["Signature"].endswith(
            '",headers="(request-target) host date digest content-type"'
        )
        assert ours["Date"] == "Tue, 14 Nov 2023 22:13:20 GMT"

    def test_httpsig_header_verifier_accepts_ours(self, rsa_key: rsa.RSAPrivateKey) -> None:
        httpsig = cavage.load_httpsig()
        headers = signed(rsa_key)
        verifier = httpsig.HeaderVerifier(
            headers,
            public_pem(rsa_key),
            required_headers=["(request-target)", "host", "date", "digest"],
            method="POST",
            path="/inbox?x=1",
            sign_header="signature",
        )
        assert verifier.verify() is True

    def test_we_accept_what_httpsig_signs(self, rsa_key: rsa.RSAPrivateKey) -> None:
        httpsig = cavage.load_httpsig()
        headers = {
            "Host": "b.example",
            "Date": email.utils.formatdate(NOW, usegmt=True),
            "Digest": legacy_digest(BODY),
        }
        pem = rsa_key.private_bytes(
            Encoding.PEM,
            PrivateFormat.PKCS8,
            NoEncryption(),
        )
        signed_headers = httpsig.HeaderSigner(
            KEY_ID,
            pem,
            algorithm="rsa-sha256",
            headers=["(request-target)", "host", "date", "digest"],
            sign_header="signature",
        ).sign(headers, method="POST", path="/inbox?x=1")
        result = cavage.verify(
            "POST",
            URL,
            dict(signed_headers),
            BODY,
            resolve_key={KEY_ID: rsa_key.public_key()}.get,
            now=NOW,
        )
        assert result.key_id == KEY_ID


class TestHttpsigHazards:
    def test_algorithm_confusion_is_refused(self, rsa_key: rsa.RSAPrivateKey) -> None:
        """A forged hmac-sha256 signature keyed with the public key PEM."""
        httpsig = cavage.load_httpsig()
        pem = public_pem(rsa_key)
        headers = {
            "Host": "b.example",
            "Date": email.utils.formatdate(NOW, usegmt=True),
            "Digest": legacy_digest(BODY),
        }
        names = ["(request-target)", "host", "date", "digest"]
        forged = httpsig.HeaderSigner(
            KEY_ID, pem, algorithm="hmac-sha256", headers=names, sign_header="signature"
        ).sign(headers, method="POST", path="/inbox?x=1")
        # The hazard is real: httpsig's verifier, given our RSA public key, accepts it.
        assert httpsig.HeaderVerifier(
            forged, pem, method="POST", path="/inbox?x=1", sign_header="signature"
        ).verify()
        error = refusal(dict(forged), rsa_key.public_key())
        assert error.status_hint == 401
        assert "algorithm hmac-sha256 is not accepted" in str(error)
        # Dropping the algorithm parameter makes it "derive from the key": RSA, fails.
        no_alg = dict(forged) | {
            "signature": forged["signature"].replace('algorithm="hmac-sha256",', "")
        }
        assert "does not verify" in str(refusal(no_alg, rsa_key.public_key()))

    def test_stale_date_and_wrong_digest_are_refused(self, rsa_key: rsa.RSAPrivateKey) -> None:
        httpsig = cavage.load_httpsig()
        headers = signed(rsa_key, now=NOW - 3712)
        # httpsig checks neither: an hour-old request passes its verifier, which takes
        # no body at all, so it cannot compare Digest with anything.
        assert httpsig.HeaderVerifier(
            headers, public_pem(rsa_key), method="POST", path="/inbox?x=1", sign_header="signature"
        ).verify()
        error = refusal(headers, rsa_key.public_key())
        assert (error.status_hint, str(error).split(" (")[0]) == (
            401,
            "Date is 3712 s in the past; allowed skew is 300 s",
        )
        fresh = signed(rsa_key)
        error = refusal(fresh, rsa_key.public_key(), body=b"something else")
        assert (error.status_hint, "Digest SHA-256 does not match" in str(error)) == (401, True)

    def test_percent_in_key_id(self, rsa_key: rsa.RSAPrivateKey) -> None:
        httpsig = cavage.load_httpsig()
        key_id = "https://a.example/users/j%C3%B6rg#main-key"
        pem = rsa_key.private_bytes(Encoding.PEM, PrivateFormat.PKCS8, NoEncryption())
        with pytest.raises(ValueError, match="unsupported format character"):
            httpsig.HeaderSigner(key_id, pem, algorithm="rsa-sha256", sign_header="signature").sign(
                {"Date": "x"}
            )
        both = [signed(rsa_key, key_id=key_id, backend=b) for b in ("cryptography", "httpsig")]
        assert both[0] == both[1]
        for headers in both:
            assert f'keyId="{key_id}"' in headers["Signature"]
            result = cavage.verify(
                "POST", URL, headers, BODY, resolve_key={key_id: rsa_key.public_key()}.get, now=NOW
            )
            assert result.key_id == key_id
        assert httpsig.HeaderVerifier(
            headers, public_pem(rsa_key), method="POST", path="/inbox?x=1", sign_header="signature"
        ).verify()


class TestParsing:
    SIG = base64.b64encode(b"\x01" * 256).decode()

    def test_parses_all_parameters(self) -> None:
        params = cavage.parse_signature_header(
            f'keyId="k",algorithm="hs2019",created=1,expires="2",'
            f'headers="(request-target) (created) date",signature="{self.SIG}"'
        )
        assert params == cavage.SignatureParams(
            key_id="k",
            signature=b"\x01" * 256,
            headers=("(request-target)", "(created)", "date"),
            algorithm="hs2019",
            created=1,
            expires=2,
        )

    def test_defaults_and_unknown_parameters(self) -> None:
        params = cavage.parse_signature_header(f'keyId="k", signature="{self.SIG}", color="red"')
        assert (params.headers, params.algorithm, params.effective_algorithm) == (
            ("date",),
            None,
            "hs2019",
        )

    @pytest.mark.parametrize(
        ("value", "fragment"),
        [
            ('keyId="a",keyId="b",signature="AAAA"', "appears twice"),
            ('keyId="a",keyid="b",signature="AAAA"', "appears twice"),
            ('keyId="a",signature="AAAA",signature="AAAA"', "appears twice"),
            ('signature="AAAA"', "no keyId"),
            ('keyId="a"', "no signature"),
            ('keyId="",signature="AAAA"', "no keyId"),
            ('keyId="a",signature="AAAA",algorithm="rot13"', "not a draft-cavage algorithm"),
            ('keyId="a",signature="not base64!"', "not base64"),
            ('keyId="a",signature="AAAA",', "malformed"),
            ('Signature keyId="a",signature="AAAA"', "malformed"),
            ('keyId="a" signature="AAAA"', "expected ','"),
            ('keyId=a,signature="AAAA"', "malformed"),
            ('keyId="a",signature="AAAA",headers=""', "headers parameter is empty"),
            ('keyId="a",signature="AAAA",headers="date  host"', "headers parameter is empty"),
            ('keyId="a",signature="AAAA",headers="date date"', "lists a header twice"),
            ('keyId="a",signature="AAAA",headers="(created)"', "no created parameter"),
            ('keyId="a\\"b",signature="AAAA"', "malformed"),
        ],
    )
    def test_refuses_malformed(self, value: str, fragment: str) -> None:
        with pytest.raises(RemoteProtocolError, match=fragment) as info:
            cavage.parse_signature_header(value)
        assert info.value.status_hint == 400


class TestRefusals:
    def test_round_trip_and_result(self, rsa_key: rsa.RSAPrivateKey) -> None:
        headers = signed(rsa_key)
        assert headers["Host"] == "b.example" and headers["Digest"].startswith("SHA-256=")
        result = cavage.verify(
            "POST",
            URL,
            headers,
            BODY,
            resolve_key={KEY_ID: rsa_key.public_key()}.get,
            now=NOW + 300,
        )
        assert result == cavage.VerifiedCavage(
            key_id=KEY_ID,
            algorithm="rsa-sha256",
            signature=base64.b64decode(headers["Signature"].split('signature="')[1].split('"')[0]),
            covered=("(request-target)", "host", "date", "digest", "content-type"),
            date=NOW,
            valid_until=NOW + 300,
        )

    def test_get_signs_no_digest_and_keeps_a_given_host(self, rsa_key: rsa.RSAPrivateKey) -> None:
        headers = signed(rsa_key, method="GET", body=b"", headers={"Host": "b.example:8443"})
        assert "Digest" not in headers
        assert headers["Host"] == "b.example:8443"
        assert headers["Signature"].endswith('headers="(request-target) host date"')
        cavage.verify(
            "GET", URL, headers, b"", resolve_key={KEY_ID: rsa_key.public_key()}.get, now=NOW
        )
        error = refusal(
            headers | {"Host": "b.example"}, rsa_key.public_key(), method="GET", body=b""
        )
        assert "does not verify" in str(error)

    def test_empty_post_still_signs_a_digest(self, rsa_key: rsa.RSAPrivateKey) -> None:
        # Mastodon refuses a POST whose signature does not cover digest.
        headers = signed(rsa_key, body=b"", headers={})
        assert "digest" in headers["Signature"].split('headers="')[1]

    def test_hs2019_and_absent_algorithm_verify_as_rsa(self, rsa_key: rsa.RSAPrivateKey) -> None:
        headers = signed(rsa_key)
        keys = {KEY_ID: rsa_key.public_key()}.get
        for replacement in ('algorithm="hs2019",', ""):
            variant = headers | {
                "Signature": headers["Signature"].replace('algorithm="rsa-sha256",', replacement)
            }
            result = cavage.verify("POST", URL, variant, BODY, resolve_key=keys, now=NOW)
            assert result.algorithm == "hs2019"

    def test_wrong_key(self, rsa_key: rsa.RSAPrivateKey, other_rsa_key: rsa.RSAPrivateKey) -> None:
        error = refusal(signed(rsa_key), other_rsa_key.public_key())
        assert (error.status_hint, "does not verify" in str(error)) == (401, True)

    def test_tampered_body(self, rsa_key: rsa.RSAPrivateKey) -> None:
        error = refusal(signed(rsa_key), rsa_key.public_key(), body=BODY.replace(b"42", b"43"))
        assert (error.status_hint, "Digest SHA-256 does not match" in str(error)) == (401, True)

    @pytest.mark.parametrize(
        "change",
        [
            {"Content-Type": "text/plain"},
            {"Host": "evil.example"},
            {"Date": email.utils.formatdate(NOW + 1, usegmt=True)},
        ],
    )
    def test_tampered_header(self, rsa_key: rsa.RSAPrivateKey, change: dict[str, str]) -> None:
        error = refusal(signed(rsa_key) | change, rsa_key.public_key())
        assert (error.status_hint, "does not verify" in str(error)) == (401, True)

    @pytest.mark.parametrize(("method", "url"), [("PUT", URL), ("POST", URL.replace("x=1", "x=2"))])
    def test_tampered_request_target(
        self, rsa_key: rsa.RSAPrivateKey, method: str, url: str
    ) -> None:
        error = refusal(signed(rsa_key), rsa_key.public_key(), method=method, url=url)
        assert "does not verify" in str(error)

    @pytest.mark.parametrize(
        ("names", "missing"),
        [
            ("(request-target) host date content-type", "digest"),
            ("host date digest", "(request-target)"),
            ("(request-target) date digest", "host"),
            ("(request-target) host digest", "date"),
        ],
    )
    def test_header_not_covered(self, rsa_key: rsa.RSAPrivateKey, names: str, missing: str) -> None:
        headers = signed(rsa_key)
        message = cavage.signing_string(names.split(), method="POST", url=URL, headers=headers)
        headers["Signature"] = cavage.signature_header(
            KEY_ID, "rsa-sha256", rsa_sign(rsa_key, message), names.split()
        )
        error = refusal(headers, rsa_key.public_key())
        assert error.status_hint == 401
        assert str(error).startswith(f"signature does not cover {missing};")

    def test_future_date(self, rsa_key: rsa.RSAPrivateKey) -> None:
        error = refusal(signed(rsa_key, now=NOW + 400), rsa_key.public_key())
        assert str(error).startswith("Date is 400 s in the future; allowed skew is 300 s")

    def test_skew_is_configurable(self, rsa_key: rsa.RSAPrivateKey) -> None:
        headers = signed(rsa_key, now=NOW - 3000)
        keys = {KEY_ID: rsa_key.public_key()}.get
        result = cavage.verify("POST", URL, headers, BODY, resolve_key=keys, now=NOW, skew=3600)
        assert result.valid_until == NOW - 3000 + 3600

    @pytest.mark.parametrize(
        ("date", "status", "fragment"),
        [(None, 401, "Date header is missing"), ("yesterday", 400, "not an HTTP date")],
    )
    def test_missing_or_bad_date(
        self, rsa_key: rsa.RSAPrivateKey, date: str | None, status: int, fragment: str
    ) -> None:
        headers = signed(rsa_key)
        del headers["Date"]
        if date is not None:
            headers["Date"] = date
        error = refusal(headers, rsa_key.public_key())
        assert (error.status_hint, fragment in str(error)) == (status, True)

    def test_unknown_key(self, rsa_key: rsa.RSAPrivateKey) -> None:
        with pytest.raises(RemoteProtocolError, match="unknown key") as info:
            cavage.verify("POST", URL, signed(rsa_key), BODY, resolve_key=lambda _: None, now=NOW)
        assert info.value.status_hint == 401

    def test_non_rsa_key(self, rsa_key: rsa.RSAPrivateKey) -> None:
        error = refusal(signed(rsa_key), ed25519.Ed25519PrivateKey.generate().public_key())
        assert "verifies RSA keys only" in str(error)

    def test_raw_bytes_from_the_resolver_are_a_local_bug(self, rsa_key: rsa.RSAPrivateKey) -> None:
        with pytest.raises(LocalProtocolError):
            cavage.verify(
                "POST",
                URL,
                signed(rsa_key),
                BODY,
                resolve_key=lambda _: public_pem(rsa_key),
                now=NOW,
            )

    @pytest.mark.parametrize("algorithm", ["rsa-sha512", "rsa-sha1", "hmac-sha256", "ed25519"])
    def test_known_but_unpinned_algorithms(
        self, rsa_key: rsa.RSAPrivateKey, algorithm: str
    ) -> None:
        headers = signed(rsa_key)
        headers["Signature"] = headers["Signature"].replace("rsa-sha256", algorithm)
        error = refusal(headers, rsa_key.public_key())
        assert (error.status_hint, f"algorithm {algorithm} is not accepted" in str(error)) == (
            401,
            True,
        )

    def test_no_signature_header(self, rsa_key: rsa.RSAPrivateKey) -> None:
        headers = signed(rsa_key)
        value = headers.pop("Signature")
        error = refusal(headers | {"Authorization": f"Signature {value}"}, rsa_key.public_key())
        assert error.status_hint == 401
        assert "not Authorization" in str(error)

    def test_created_and_expires_with_hs2019(self, rsa_key: rsa.RSAPrivateKey) -> None:
        headers = signed(rsa_key)
        names = ("(request-target)", "(created)", "(expires)", "host", "date", "digest")
        created, expires = int(NOW), int(NOW) + 60
        message = cavage.signing_string(
            names, method="POST", url=URL, headers=headers, created=created, expires=expires
        )
        assert b"\n(created): 1700000000\n(expires): 1700000060\n" in message
        headers["Signature"] = (
            f'keyId="{KEY_ID}",algorithm="hs2019",created={created},expires={expires},'
            f'headers="{" ".join(names)}",signature="{rsa_sign(rsa_key, message)}"'
        )
        keys = {KEY_ID: rsa_key.public_key()}.get
        result = cavage.verify("POST", URL, headers, BODY, resolve_key=keys, now=NOW + 60)
        assert result.valid_until == expires
        error = refusal(headers, rsa_key.public_key(), now=NOW + 61)
        assert "signature expired 1 s ago" in str(error)

    @settings(suppress_health_check=[HealthCheck.function_scoped_fixture], max_examples=30)
    @given(data=st.data())
    def test_any_tampered_byte_is_refused(
        self, rsa_key: rsa.RSAPrivateKey, data: st.DataObject
    ) -> None:
        headers = signed(rsa_key)
        body = BODY
        mask = data.draw(st.integers(1, 255))
        if data.draw(st.booleans()):
            index = data.draw(st.integers(0, len(BODY) - 1))
            body = BODY[:index] + bytes([BODY[index] ^ mask]) + BODY[index + 1 :]
        else:
            prefix, rest = headers["Signature"].split('signature="')
            raw = bytearray(base64.b64decode(rest.split('"')[0]))
            raw[data.draw(st.integers(0, len(raw) - 1))] ^= mask
            suffix = rest.split('"', 1)[1]
            headers["Signature"] = f'{prefix}signature="{base64.b64encode(raw).decode()}"{suffix}'
        refusal(headers, rsa_key.public_key(), body=body)


class TestSigningInputs:
    @pytest.mark.parametrize("key_id", ['a"b', "a\\b", "", "caf\u00e9", "a b"])
    def test_key_id_must_fit_a_quoted_string(self, rsa_key: rsa.RSAPrivateKey, key_id: str) -> None:
        with pytest.raises(LocalProtocolError, match="keyId"):
            cavage.sign("GET", URL, {}, b"", key=rsa_key, key_id=key_id, now=NOW)

    def test_wrong_key_type(self) -> None:
        with pytest.raises(LocalProtocolError, match="RSAPrivateKey"):
            cavage.sign(
                "GET",
                URL,
                {},
                b"",
                key=ed25519.Ed25519PrivateKey.generate(),
                key_id="k",
                now=NOW,  # type: ignore[arg-type]
            )

    def test_line_break_in_a_signed_value_is_refused(self) -> None:
        headers = {"Host": "b.example", "Date": "x\ndigest: SHA-256=forged"}
        with pytest.raises(RemoteProtocolError, match="line break") as info:
            cavage.signing_string(("host", "date"), method="GET", url=URL, headers=headers)
        assert info.value.status_hint == 400

    def test_non_ascii_header_cannot_be_signed(self, rsa_key: rsa.RSAPrivateKey) -> None:
        with pytest.raises(LocalProtocolError, match="not ASCII"):
            cavage.sign(
                "POST",
                URL,
                {"Content-Type": "text/plain; name=\u00e9"},
                BODY,
                key=rsa_key,
                key_id="k",
                now=NOW,
            )
