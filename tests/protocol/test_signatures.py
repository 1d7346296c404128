"""The façade: profile detection, both profiles end to end, replay, cross-profile keys."""

from __future__ import annotations

import pytest
from cryptography.hazmat.primitives.asymmetric import ed25519, rsa
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from protocol.errors import LocalProtocolError, RemoteProtocolError
from protocol.replay import ReplayCache
from protocol.signatures import (
    CAVAGE_RSA_SHA256,
    PROFILES,
    RFC9421_ED25519,
    HmacSecret,
    SigningKey,
    VerifiedSignature,
    detect_profile,
    sign_request,
    verify_request,
)
from protocol.verification import KeyLookup

URL = "https://b.example/callback/7?topic=items%2F42"
NOW = 1_700_000_000.0
BODY = b'{"topic": "https://a.example/items/42", "version": 8, "event": "e-91"}'
JSON = {"Content-Type": "application/json"}


@pytest.fixture
def keys(
    ed25519_key: ed25519.Ed25519PrivateKey, rsa_key: rsa.RSAPrivateKey
) -> dict[str, SigningKey]:
    return {RFC9421_ED25519: ed25519_key, CAVAGE_RSA_SHA256: rsa_key}


@pytest.fixture
def resolve(ed25519_key: ed25519.Ed25519PrivateKey, rsa_key: rsa.RSAPrivateKey) -> KeyLookup:
    return {"ed": ed25519_key.public_key(), "rsa": rsa_key.public_key()}.get


KEY_IDS = {RFC9421_ED25519: "ed", CAVAGE_RSA_SHA256: "rsa"}


def signed(
    profile: str,
    keys: dict[str, SigningKey],
    *,
    method: str = "POST",
    body: bytes = BODY,
    now: float = NOW,
    key_id: str | None = None,
) -> dict[str, str]:
    base = dict(JSON) if body else {}
    added = sign_request(
        profile, method, URL, base, body, keys[profile], key_id or KEY_IDS[profile], now
    )
    return base | added


def check(
    headers: dict[str, str],
    resolve: KeyLookup,
    *,
    method: str = "POST",
    body: bytes = BODY,
    now: float = NOW,
    cache: ReplayCache | None = None,
    accepted: tuple[str, ...] = PROFILES,
) -> VerifiedSignature:
    return verify_request(
        method,
        URL,
        headers,
        body,
        resolve_key=resolve,
        now=now,
        replay_cache=cache,
        accepted_profiles=accepted,
    )


@pytest.mark.parametrize(
    ("profile", "algorithm"), [(RFC9421_ED25519, "ed25519"), (CAVAGE_RSA_SHA256, "rsa-sha256")]
)
def test_round_trip_per_profile(
    keys: dict[str, SigningKey], resolve: KeyLookup, profile: str, algorithm: str
) -> None:
    headers = signed(profile, keys)
    assert detect_profile(headers) == profile
    result = check(headers, resolve, cache=ReplayCache())
    assert result == VerifiedSignature(
        key_id=KEY_IDS[profile], profile=profile, algorithm=algorithm
    )


def test_hmac_under_the_rfc9421_profile() -> None:
    secret = HmacSecret(b"s" * 32)
    headers = JSON | sign_request(RFC9421_ED25519, "POST", URL, JSON, BODY, secret, "shared", NOW)
    result = check(headers, {"shared": secret}.get)
    assert (result.profile, result.algorithm) == (RFC9421_ED25519, "hmac-sha256")


@pytest.mark.parametrize("profile", PROFILES)
def test_replay_is_refused(keys: dict[str, SigningKey], resolve: KeyLookup, profile: str) -> None:
    cache = ReplayCache()
    headers = signed(profile, keys)
    check(headers, resolve, cache=cache)
    with pytest.raises(RemoteProtocolError, match="replayed signature") as info:
        check(headers, resolve, cache=cache, now=NOW + 5)
    assert info.value.status_hint == 401
    # Without a cache the same request passes: the cache is what refuses it.
    check(headers, resolve, now=NOW + 5)


def test_replay_cache_forgets_after_the_window(
    keys: dict[str, SigningKey], resolve: KeyLookup
) -> None:
    cache = ReplayCache()
    headers = signed(CAVAGE_RSA_SHA256, keys)
    check(headers, resolve, cache=cache)
    assert len(cache) == 1
    with pytest.raises(RemoteProtocolError, match="Date is 301 s in the past"):
        check(headers, resolve, cache=cache, now=NOW + 301)
    # The entry lived exactly as long as the Date check would accept the request.
    assert cache.expire(NOW + 300) == 0
    assert cache.expire(NOW + 301) == 1


def test_a_forged_request_does_not_use_up_a_genuine_signature(
    keys: dict[str, SigningKey], resolve: KeyLookup
) -> None:
    # Only verified signatures are recorded: a copy of the signature on a tampered
    # body is refused, and the genuine request still goes through afterwards.
    cache = ReplayCache()
    headers = signed(RFC9421_ED25519, keys)
    with pytest.raises(RemoteProtocolError):
        check(headers, resolve, cache=cache, body=BODY + b" ")
    check(headers, resolve, cache=cache)


def test_identical_gets_in_one_second_are_not_replays(
    keys: dict[str, SigningKey], resolve: KeyLookup
) -> None:
    cache = ReplayCache()
    for _ in range(2):
        check(
            signed(RFC9421_ED25519, keys, method="GET", body=b""),
            resolve,
            method="GET",
            body=b"",
            cache=cache,
        )
    assert len(cache) == 2


@pytest.mark.parametrize("profile", PROFILES)
def test_profile_not_accepted(
    keys: dict[str, SigningKey], resolve: KeyLookup, profile: str
) -> None:
    other = next(p for p in PROFILES if p != profile)
    with pytest.raises(RemoteProtocolError, match=f"does not accept {profile}") as info:
        check(signed(profile, keys), resolve, accepted=(other,))
    assert info.value.status_hint == 401
    assert other in str(info.value)


def test_unknown_accepted_profile_is_a_configuration_error(
    keys: dict[str, SigningKey], resolve: KeyLookup
) -> None:
    with pytest.raises(LocalProtocolError, match="rfc9421-rsa"):
        check(signed(RFC9421_ED25519, keys), resolve, accepted=("rfc9421-rsa",))


@pytest.mark.parametrize(
    ("profile", "key_id", "fragment"),
    [
        (RFC9421_ED25519, "rsa", "is a RSA key; profile rfc9421-ed25519"),
        (CAVAGE_RSA_SHA256, "ed", "verifies RSA keys only"),
    ],
)
def test_a_key_only_verifies_its_own_profile(
    ed25519_key: ed25519.Ed25519PrivateKey,
    rsa_key: rsa.RSAPrivateKey,
    profile: str,
    key_id: str,
    fragment: str,
) -> None:
    # Sign with the right key type but publish the keyId of the other key.
    keys: dict[str, SigningKey] = {RFC9421_ED25519: ed25519_key, CAVAGE_RSA_SHA256: rsa_key}
    resolve = {"ed": ed25519_key.public_key(), "rsa": rsa_key.public_key()}.get
    headers = signed(profile, keys, key_id=key_id)
    with pytest.raises(RemoteProtocolError, match=fragment) as info:
        check(headers, resolve)
    assert info.value.status_hint == 401


def test_resolver_refusal_propagates(keys: dict[str, SigningKey]) -> None:
    def revoked(key_id: str) -> object:
        raise RemoteProtocolError(f"key {key_id} of a blocked origin", status_hint=403)

    for profile in PROFILES:
        with pytest.raises(RemoteProtocolError) as info:
            check(signed(profile, keys), revoked)
        assert info.value.status_hint == 403


class TestDetection:
    def test_unsigned_request(self) -> None:
        with pytest.raises(RemoteProtocolError, match="not signed") as info:
            detect_profile(JSON)
        assert info.value.status_hint == 401

    def test_signature_that_is_neither(self) -> None:
        with pytest.raises(RemoteProtocolError, match="neither") as info:
            detect_profile({"Signature": "sig1=:AAAA:"})
        assert info.value.status_hint == 400

    def test_signature_input_wins(self) -> None:
        both = {"Signature-Input": "sig1=()", "Signature": 'keyId="x"'}
        assert detect_profile(both) == RFC9421_ED25519
        assert detect_profile([("signature", 'keyId="x",signature="AA=="')]) == CAVAGE_RSA_SHA256


class TestSignRequest:
    @pytest.mark.parametrize(
        ("profile", "key_fixture"),
        [(RFC9421_ED25519, "rsa_key"), (CAVAGE_RSA_SHA256, "ed25519_key")],
    )
    def test_key_must_match_the_profile(
        self, request: pytest.FixtureRequest, profile: str, key_fixture: str
    ) -> None:
        key = request.getfixturevalue(key_fixture)
        with pytest.raises(LocalProtocolError, match="needs an"):
            sign_request(profile, "GET", URL, {}, b"", key, "k", NOW)

    def test_unknown_profile(self, ed25519_key: ed25519.Ed25519PrivateKey) -> None:
        with pytest.raises(LocalProtocolError, match="unknown signature profile"):
            sign_request("cavage-hmac", "GET", URL, {}, b"", ed25519_key, "k", NOW)

    def test_verified_signature_validates_its_profile(self) -> None:
        with pytest.raises(LocalProtocolError):
            VerifiedSignature(key_id="k", profile="bogus", algorithm="ed25519")


@settings(suppress_health_check=[HealthCheck.function_scoped_fixture], max_examples=40)
@given(profile=st.sampled_from(PROFILES), data=st.data())
def test_any_tampered_body_byte_or_header_is_refused(
    keys: dict[str, SigningKey], resolve: KeyLookup, profile: str, data: st.DataObject
) -> None:
    headers = signed(profile, keys)
    body = BODY
    if data.draw(st.booleans(), label="tamper body"):
        index = data.draw(st.integers(0, len(BODY) - 1))
        body = (
            BODY[:index] + bytes([BODY[index] ^ data.draw(st.integers(1, 255))]) + BODY[index + 1 :]
        )
    else:
        # Any change to the signed Content-Type value, appended visible characters
        # included, must break the signature.
        headers["Content-Type"] += data.draw(
            st.text(st.characters(min_codepoint=0x21, max_codepoint=0x7E), min_size=1, max_size=5)
        )
    with pytest.raises(RemoteProtocolError):
        check(headers, resolve, body=body)
