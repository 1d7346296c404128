"""RFC 9421 profile: Appendix B vectors, round trips, and every refusal."""

from __future__ import annotations

import base64
import hashlib
import hmac

import pytest
from cryptography.hazmat.primitives.asymmetric import ed25519, rsa
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from protocol import rfc9421
from protocol.errors import LocalProtocolError, RemoteProtocolError
from protocol.rfc9421 import HmacSecret
from protocol.verification import DEFAULT_SKEW, KeyLookup

# Appendix B.2 test request.
B2_URL = "https://example.com/foo?param=Value&Pet=dog"
B2_BODY = b'{"hello": "world"}'
B2_HEADERS = {
    "Host": "example.com",
    "Date": "Tue, 20 Apr 2021 02:07:55 GMT",
    "Content-Type": "application/json",
    "Content-Digest": (
        "sha-512=:WZDPaVn/7XgHaAy8pmojAkGWoRx2UFChF41A2svX+TaPm+AbwAgBWnrIiYllu7BN"
        "NyealdVLvRwEmTHWXvJwew==:"
    ),
    "Content-Length": "18",
}
B2_CREATED = 1618884473

B26_COMPONENTS = ("date", "@method", "@path", "@authority", "content-type", "content-length")
B26_BASE = (
    '"date": Tue, 20 Apr 2021 02:07:55 GMT\n'
    '"@method": POST\n'
    '"@path": /foo\n'
    '"@authority": example.com\n'
    '"content-type": application/json\n'
    '"content-length": 18\n'
    '"@signature-params": ("date" "@method" "@path" "@authority" "content-type" '
    '"content-length");created=1618884473;keyid="test-key-ed25519"'
)
B26_INPUT = (
    'sig-b26=("date" "@method" "@path" "@authority" "content-type" "content-length")'
    ';created=1618884473;keyid="test-key-ed25519"'
)
B26_SIGNATURE = (
    "wqcAqbmYJ2ji2glfAMaRy4gruYYnx2nEFN2HN6jrnDnQCK1u02Gb04v9EDgwUPiu4A0w6vuQv5lIp5WPpBKRCw=="
)

B25_SECRET = base64.b64decode(
    "uzvJfB4u3N0Jy4T7NZ75MDVcr8zSTInedJtkgcu46YW4XByzNJjxBdtjUkdJPBtbmHhIDi6pcl8jsasjlTMtDQ=="
)
B25_BASE = (
    '"date": Tue, 20 Apr 2021 02:07:55 GMT\n'
    '"@authority": example.com\n'
    '"content-type": application/json\n'
    '"@signature-params": ("date" "@authority" "content-type");created=1618884473'
    ';keyid="test-shared-secret"'
)
B25_SIGNATURE = "pxcQw6G3AjtMBQjwo8XzkZf/bws5LelbaMk5rGIGtE8="

URL = "https://hub.example/topics/items/42?fields=status"
NOW = 1_700_000_000.0
JSON = {"Content-Type": "application/json"}
BODY = b'{"topic": "https://hub.example/topics/items/42", "version": 8}'


def resolver(**keys: object) -> KeyLookup:
    return keys.get


def signed(
    key: ed25519.Ed25519PrivateKey | HmacSecret,
    *,
    method: str = "POST",
    url: str = URL,
    headers: dict[str, str] | None = None,
    body: bytes = BODY,
    key_id: str = "a",
    now: float = NOW,
) -> dict[str, str]:
    base = dict(JSON if headers is None else headers)
    return base | rfc9421.sign(method, url, base, body, key=key, key_id=key_id, now=now)


def hand_signed(
    key: ed25519.Ed25519PrivateKey,
    components: tuple[str, ...],
    *,
    headers: dict[str, str],
    key_id: str = "a",
    created: int = int(NOW),
    expires: int | None = None,
    alg: str | None = "ed25519",
    url: str = URL,
) -> dict[str, str]:
    """Sign with chosen components/params, to build requests sign() never makes."""
    base = rfc9421.signature_base(
        "POST",
        url,
        headers,
        components=components,
        created=created,
        key_id=key_id,
        alg=alg,
        expires=expires,
    )
    params = base.decode().rsplit("\n", 1)[-1].removeprefix('"@signature-params": ')
    signature = base64.b64encode(key.sign(base)).decode()
    return headers | {"Signature-Input": f"s={params}", "Signature": f"s=:{signature}:"}


def refusal(
    headers: dict[str, str],
    keys: KeyLookup,
    *,
    body: bytes = BODY,
    url: str = URL,
    method: str = "POST",
    now: float = NOW,
    skew: int = DEFAULT_SKEW,
) -> RemoteProtocolError:
    with pytest.raises(RemoteProtocolError) as info:
        rfc9421.verify(method, url, headers, body, resolve_key=keys, now=now, skew=skew)
    return info.value


class TestAppendixB:
    def test_b26_signature_base_is_exact(self) -> None:
        base = rfc9421.signature_base(
            "POST",
            B2_URL,
            B2_HEADERS,
            components=B26_COMPONENTS,
            created=B2_CREATED,
            key_id="test-key-ed25519",
        )
        assert base.decode() == B26_BASE

    def test_b26_signing_reproduces_the_published_signature(
        self, rfc_ed25519_key: ed25519.Ed25519PrivateKey
    ) -> None:
        # Ed25519 is deterministic, so the RFC's bytes must come out again.
        signature = rfc_ed25519_key.sign(B26_BASE.encode())
        assert base64.b64encode(signature).decode() == B26_SIGNATURE

    def test_b26_verifies(self, rfc_ed25519_key: ed25519.Ed25519PrivateKey) -> None:
        headers = B2_HEADERS | {
            "Signature-Input": B26_INPUT,
            "Signature": f"sig-b26=:{B26_SIGNATURE}:",
        }
        result = rfc9421.verify(
            "POST",
            B2_URL,
            headers,
            B2_BODY,
            resolve_key=resolver(**{"test-key-ed25519": rfc_ed25519_key.public_key()}),
            now=B2_CREATED + 10,
            required=("@method", "@path", "@authority"),
        )
        assert (result.key_id, result.algorithm, result.label) == (
            "test-key-ed25519",
            "ed25519",
            "sig-b26",
        )
        assert result.signature == base64.b64decode(B26_SIGNATURE)
        assert result.valid_until == B2_CREATED + DEFAULT_SKEW

    def test_b26_is_refused_by_fieldcast_policy(
        self, rfc_ed25519_key: ed25519.Ed25519PrivateKey
    ) -> None:
        # It covers @authority + @path but not the query, so it does not pin the
        # resource; and it leaves content-digest (the body) uncovered.
        headers = B2_HEADERS | {
            "Signature-Input": B26_INPUT,
            "Signature": f"sig-b26=:{B26_SIGNATURE}:",
        }
        error = refusal(
            headers,
            resolver(**{"test-key-ed25519": rfc_ed25519_key.public_key()}),
            body=B2_BODY,
            url=B2_URL,
            now=B2_CREATED,
        )
        assert error.status_hint == 401
        assert "does not cover @target-uri" in str(error)

    def test_b25_hmac_signature_base_and_value(self) -> None:
        base = rfc9421.signature_base(
            "POST",
            B2_URL,
            B2_HEADERS,
            components=("date", "@authority", "content-type"),
            created=B2_CREATED,
            key_id="test-shared-secret",
        )
        assert base.decode() == B25_BASE
        mac = hmac.new(B25_SECRET, base, hashlib.sha256).digest()
        assert base64.b64encode(mac).decode() == B25_SIGNATURE

    def test_b25_verifies_with_an_hmac_secret(self) -> None:
        headers = B2_HEADERS | {
            "Signature-Input": 'sig-b25=("date" "@authority" "content-type")'
            ';created=1618884473;keyid="test-shared-secret"',
            "Signature": f"sig-b25=:{B25_SIGNATURE}:",
        }
        result = rfc9421.verify(
            "POST",
            B2_URL,
            headers,
            B2_BODY,
            resolve_key=resolver(**{"test-shared-secret": HmacSecret(B25_SECRET)}),
            now=B2_CREATED,
            required=("@authority",),
        )
        assert result.algorithm == "hmac-sha256"


class TestRoundTrip:
    def test_post_with_body(self, ed25519_key: ed25519.Ed25519PrivateKey) -> None:
        headers = signed(ed25519_key)
        assert headers["Content-Digest"].startswith("sha-256=:")
        assert headers["Signature-Input"].startswith(
            'sig1=("@method" "@target-uri" "content-digest" "content-type")'
            f';created={int(NOW)};keyid="a";alg="ed25519";expires={int(NOW) + 300};nonce="'
        )
        result = rfc9421.verify(
            "POST",
            URL,
            headers,
            BODY,
            resolve_key=resolver(a=ed25519_key.public_key()),
            now=NOW + 299,
        )
        assert (result.key_id, result.algorithm) == ("a", "ed25519")
        assert result.covered == (
            '"@method"',
            '"@target-uri"',
            '"content-digest"',
            '"content-type"',
        )

    def test_get_without_body_covers_no_digest(
        self, ed25519_key: ed25519.Ed25519PrivateKey
    ) -> None:
        headers = signed(ed25519_key, method="GET", headers={}, body=b"")
        assert "Content-Digest" not in headers
        assert '("@method" "@target-uri")' in headers["Signature-Input"]
        rfc9421.verify(
            "GET", URL, headers, b"", resolve_key=resolver(a=ed25519_key.public_key()), now=NOW
        )

    def test_hmac_round_trip(self) -> None:
        secret = HmacSecret(bytes(range(32)))
        headers = signed(secret)
        assert 'alg="hmac-sha256"' in headers["Signature-Input"]
        result = rfc9421.verify("POST", URL, headers, BODY, resolve_key=resolver(a=secret), now=NOW)
        assert result.algorithm == "hmac-sha256"

    def test_each_signature_carries_a_fresh_nonce(
        self, ed25519_key: ed25519.Ed25519PrivateKey
    ) -> None:
        first = signed(ed25519_key, method="GET", headers={}, body=b"")
        second = signed(ed25519_key, method="GET", headers={}, body=b"")
        assert first["Signature"] != second["Signature"]

    def test_returned_headers_replace_stale_ones(
        self, ed25519_key: ed25519.Ed25519PrivateKey
    ) -> None:
        stale = JSON | {"Content-Digest": "sha-256=:AAAA:", "Signature": "old=:AAAA:"}
        added = rfc9421.sign("POST", URL, stale, BODY, key=ed25519_key, key_id="a", now=NOW)
        rfc9421.verify(
            "POST",
            URL,
            stale | added,
            BODY,
            resolve_key=resolver(a=ed25519_key.public_key()),
            now=NOW,
        )

    def test_repeated_header_lines_are_combined(
        self, ed25519_key: ed25519.Ed25519PrivateKey
    ) -> None:
        lines = [("Content-Type", "application/json"), ("Content-Type", "charset=utf-8")]
        added = rfc9421.sign("POST", URL, lines, BODY, key=ed25519_key, key_id="a", now=NOW)
        rfc9421.verify(
            "POST",
            URL,
            [*lines, *added.items()],
            BODY,
            resolve_key=resolver(a=ed25519_key.public_key()),
            now=NOW,
        )
        error = refusal(
            [lines[0], *added.items()],
            resolver(a=ed25519_key.public_key()),  # type: ignore[arg-type]
        )
        assert "does not verify" in str(error)


class TestRefusals:
    def test_wrong_key(
        self, ed25519_key: ed25519.Ed25519PrivateKey, other_ed25519_key: ed25519.Ed25519PrivateKey
    ) -> None:
        error = refusal(signed(ed25519_key), resolver(a=other_ed25519_key.public_key()))
        assert error.status_hint == 401
        assert "does not verify" in str(error)

    def test_tampered_body(self, ed25519_key: ed25519.Ed25519PrivateKey) -> None:
        error = refusal(signed(ed25519_key), resolver(a=ed25519_key.public_key()), body=BODY + b" ")
        assert error.status_hint == 401
        assert "Content-Digest sha-256 does not match" in str(error)

    def test_tampered_header(self, ed25519_key: ed25519.Ed25519PrivateKey) -> None:
        headers = signed(ed25519_key) | {"Content-Type": "text/plain"}
        assert "does not verify" in str(refusal(headers, resolver(a=ed25519_key.public_key())))

    @pytest.mark.parametrize(
        ("method", "url"),
        [("PUT", URL), ("POST", URL.replace("42", "43")), ("POST", URL.replace("https", "http"))],
    )
    def test_tampered_target(
        self, ed25519_key: ed25519.Ed25519PrivateKey, method: str, url: str
    ) -> None:
        error = refusal(
            signed(ed25519_key), resolver(a=ed25519_key.public_key()), method=method, url=url
        )
        assert "does not verify" in str(error)

    def test_content_digest_not_covered(self, ed25519_key: ed25519.Ed25519PrivateKey) -> None:
        from protocol.digest import content_digest

        headers = JSON | {"Content-Digest": content_digest(BODY)}
        request = hand_signed(
            ed25519_key, ("@method", "@target-uri", "content-type"), headers=headers
        )
        error = refusal(request, resolver(a=ed25519_key.public_key()))
        assert error.status_hint == 401
        assert "signature does not cover content-digest" in str(error)

    def test_content_type_not_covered(self, ed25519_key: ed25519.Ed25519PrivateKey) -> None:
        from protocol.digest import content_digest

        headers = JSON | {"Content-Digest": content_digest(BODY)}
        request = hand_signed(
            ed25519_key, ("@method", "@target-uri", "content-digest"), headers=headers
        )
        assert "does not cover content-type" in str(
            refusal(request, resolver(a=ed25519_key.public_key()))
        )

    def test_digest_member_is_not_the_field(self, ed25519_key: ed25519.Ed25519PrivateKey) -> None:
        from protocol.digest import content_digest

        headers = JSON | {"Content-Digest": content_digest(BODY)}
        components = ("@method", "@target-uri", '"content-digest";key="sha-256"', "content-type")
        request = hand_signed(ed25519_key, components, headers=headers)
        assert "does not cover content-digest" in str(
            refusal(request, resolver(a=ed25519_key.public_key()))
        )

    def test_body_without_any_digest(self, ed25519_key: ed25519.Ed25519PrivateKey) -> None:
        request = hand_signed(ed25519_key, ("@method", "@target-uri", "content-type"), headers=JSON)
        assert "does not cover content-digest" in str(
            refusal(request, resolver(a=ed25519_key.public_key()))
        )

    def test_old_signature(self, ed25519_key: ed25519.Ed25519PrivateKey) -> None:
        error = refusal(signed(ed25519_key, now=NOW - 3712), resolver(a=ed25519_key.public_key()))
        assert error.status_hint == 401
        assert str(error).startswith("signature was created 3712 s ago; allowed skew is 300 s")

    def test_wider_skew_is_configurable(self, ed25519_key: ed25519.Ed25519PrivateKey) -> None:
        headers = hand_signed(
            ed25519_key, ("@method", "@target-uri"), headers={}, created=int(NOW) - 3000
        )
        rfc9421.verify(
            "POST",
            URL,
            headers,
            b"",
            resolve_key=resolver(a=ed25519_key.public_key()),
            now=NOW,
            skew=3600,
        )

    def test_future_signature(self, ed25519_key: ed25519.Ed25519PrivateKey) -> None:
        error = refusal(signed(ed25519_key, now=NOW + 301), resolver(a=ed25519_key.public_key()))
        assert "301 s in the future; allowed skew is 300 s" in str(error)

    def test_expired_signature(self, ed25519_key: ed25519.Ed25519PrivateKey) -> None:
        headers = hand_signed(
            ed25519_key,
            ("@method", "@target-uri"),
            headers={},
            expires=int(NOW) - 40,
            created=int(NOW) - 100,
        )
        keys = resolver(a=ed25519_key.public_key())
        error = refusal(headers, keys, body=b"")
        assert (error.status_hint, "signature expired 40 s ago" in str(error)) == (401, True)
        result = rfc9421.verify("POST", URL, headers, b"", resolve_key=keys, now=NOW - 40)
        assert result.valid_until == NOW - 40  # expires, earlier than created + skew

    def test_unknown_key(self, ed25519_key: ed25519.Ed25519PrivateKey) -> None:
        error = refusal(signed(ed25519_key, key_id="nobody"), resolver(a=ed25519_key.public_key()))
        assert (error.status_hint, str(error).split(":")[0]) == (401, "unknown key 'nobody'")

    def test_resolver_may_bar_a_key_with_403(self, ed25519_key: ed25519.Ed25519PrivateKey) -> None:
        def barred(key_id: str) -> object:
            raise RemoteProtocolError(f"key {key_id} was revoked", status_hint=403)

        assert refusal(signed(ed25519_key), barred).status_hint == 403

    def test_algorithm_confusion_hmac_with_the_public_key(
        self, ed25519_key: ed25519.Ed25519PrivateKey
    ) -> None:
        # Whoever knows the public key could "sign" if the verifier took alg from the
        # request: HMAC keyed with the public key bytes.
        public = ed25519_key.public_key()
        raw = public.public_bytes(Encoding.Raw, PublicFormat.Raw)
        forged = signed(HmacSecret(raw + raw))
        error = refusal(forged, resolver(a=public))
        assert error.status_hint == 401
        assert "claims alg=hmac-sha256 but key 'a' is a ed25519 key" in str(error)
        # Without the alg parameter the pinned Ed25519 check still fails.
        no_alg = forged | {
            "Signature-Input": forged["Signature-Input"].replace(';alg="hmac-sha256"', "")
        }
        assert "does not verify" in str(refusal(no_alg, resolver(a=public)))

    def test_rsa_key_is_not_this_profile(
        self, ed25519_key: ed25519.Ed25519PrivateKey, rsa_key: rsa.RSAPrivateKey
    ) -> None:
        error = refusal(signed(ed25519_key), resolver(a=rsa_key.public_key()))
        assert "is a RSA key; profile rfc9421-ed25519 verifies ed25519" in str(error)

    def test_resolver_returning_raw_bytes_is_a_local_bug(
        self, ed25519_key: ed25519.Ed25519PrivateKey
    ) -> None:
        with pytest.raises(LocalProtocolError, match="HmacSecret"):
            rfc9421.verify(
                "POST",
                URL,
                signed(ed25519_key),
                BODY,
                resolve_key=resolver(a=b"-----BEGIN"),
                now=NOW,
            )

    @pytest.mark.parametrize(
        ("change", "status", "fragment"),
        [
            ({"Signature-Input": None}, 401, "Signature-Input header is missing"),
            ({"Signature": None}, 401, "Signature header is missing"),
            ({"Signature-Input": "sig1=(((("}, 400, "not a valid structured-field"),
            ({"Signature": "other=:AAAA:"}, 400, "differ from Signature labels"),
            ({"Signature": "sig1=:AAAA:, sig1=:AAAA:"}, 400, "duplicate"),
            ({"Signature": 'sig1="text"'}, 400, "must be a byte sequence"),
            ({"Signature-Input": 'sig1="@method";created=1;keyid="a"'}, 400, "inner list"),
        ],
    )
    def test_malformed_headers(
        self,
        ed25519_key: ed25519.Ed25519PrivateKey,
        change: dict[str, str | None],
        status: int,
        fragment: str,
    ) -> None:
        headers = signed(ed25519_key)
        for name, value in change.items():
            headers.pop(name)
            if value is not None:
                headers[name] = value
        error = refusal(headers, resolver(a=ed25519_key.public_key()))
        assert (error.status_hint, fragment in str(error)) == (status, True), str(error)

    @pytest.mark.parametrize(
        ("old", "new", "status", "fragment"),
        [
            (';keyid="a"', "", 401, "no keyid"),
            (f";created={int(NOW)}", "", 401, "no integer created"),
            (f";created={int(NOW)}", f';created="{int(NOW)}"', 401, "no integer created"),
            (';alg="ed25519"', ';alg="ed25519";color="red"', 400, "unknown parameters"),
            (f";expires={int(NOW) + 300}", f";expires={int(NOW) - 1}", 400, "before it was"),
        ],
    )
    def test_malformed_parameters(
        self,
        ed25519_key: ed25519.Ed25519PrivateKey,
        old: str,
        new: str,
        status: int,
        fragment: str,
    ) -> None:
        headers = signed(ed25519_key)
        assert old in headers["Signature-Input"]
        headers["Signature-Input"] = headers["Signature-Input"].replace(old, new)
        error = refusal(headers, resolver(a=ed25519_key.public_key()))
        assert (error.status_hint, fragment in str(error)) == (status, True), str(error)

    def test_two_signatures_are_refused(self, ed25519_key: ed25519.Ed25519PrivateKey) -> None:
        headers = signed(ed25519_key)
        label_input = headers["Signature-Input"].removeprefix("sig1=")
        label_sig = headers["Signature"].removeprefix("sig1=")
        headers["Signature-Input"] += f", proxy={label_input}"
        headers["Signature"] += f", proxy={label_sig}"
        error = refusal(headers, resolver(a=ed25519_key.public_key()))
        assert (error.status_hint, "send exactly one" in str(error)) == (400, True)

    @settings(suppress_health_check=[HealthCheck.function_scoped_fixture], max_examples=60)
    @given(data=st.data())
    def test_any_tampered_byte_is_refused(
        self, ed25519_key: ed25519.Ed25519PrivateKey, data: st.DataObject
    ) -> None:
        headers = signed(ed25519_key)
        keys = resolver(a=ed25519_key.public_key())
        target = data.draw(st.sampled_from(["body", "Content-Type", "Content-Digest", "Signature"]))
        flip = data.draw(st.integers(1, 255))
        body = BODY
        if target == "body":
            body = _flip(BODY, data.draw(st.integers(0, len(BODY) - 1)), flip)
        elif target == "Content-Type":
            value = headers[target].encode()
            index = data.draw(st.integers(0, len(value) - 1))
            headers[target] = _flip(value, index, flip).decode("latin-1")
        else:
            # Flip a decoded byte: editing base64 text can leave the bytes unchanged
            # (unused low bits of the last character).
            name, _, rest = headers[target].partition("=:")
            raw = base64.b64decode(rest.rstrip(":"))
            index = data.draw(st.integers(0, len(raw) - 1))
            tampered = base64.b64encode(_flip(raw, index, flip)).decode()
            headers[target] = f"{name}=:{tampered}:"
        refusal(headers, keys, body=body)


def _flip(data: bytes, index: int, mask: int) -> bytes:
    return data[:index] + bytes([data[index] ^ mask]) + data[index + 1 :]


class TestConstruction:
    def test_hmac_secret_is_long_enough_and_not_printed(self) -> None:
        with pytest.raises(LocalProtocolError, match="at least 32"):
            HmacSecret(b"short")
        assert "0123" not in repr(HmacSecret(b"0123" * 8))

    def test_sign_refuses_wrong_key_type(self, rsa_key: rsa.RSAPrivateKey) -> None:
        with pytest.raises(LocalProtocolError, match="Ed25519PrivateKey"):
            rfc9421.sign("GET", URL, {}, b"", key=rsa_key, key_id="a", now=NOW)  # type: ignore[arg-type]

    @pytest.mark.parametrize(("method", "url"), [("post", URL), ("POST", "/relative")])
    def test_sign_refuses_bad_method_or_url(
        self, ed25519_key: ed25519.Ed25519PrivateKey, method: str, url: str
    ) -> None:
        with pytest.raises(LocalProtocolError):
            rfc9421.sign(method, url, {}, b"", key=ed25519_key, key_id="a", now=NOW)

    def test_verify_refuses_relative_url(self, ed25519_key: ed25519.Ed25519PrivateKey) -> None:
        error = refusal(signed(ed25519_key), resolver(a=ed25519_key.public_key()), url="/topics")
        assert error.status_hint == 400
