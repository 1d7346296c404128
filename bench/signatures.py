"""Signatures per second: each profile against the raw primitive it is built on.

    python bench/signatures.py [--seconds 0.5]

Each row runs for about ``--seconds`` (default 0.5 s; the whole run stays well under
30 s). "raw" rows are bare ``cryptography`` calls over a ~300-byte message, so the
ratio column is what the profile's header building, parsing and policy checks cost on
top of the public-key operation.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ed25519, padding, rsa

from protocol import cavage
from protocol.signatures import (
    CAVAGE_RSA_SHA256,
    RFC9421_ED25519,
    sign_request,
    verify_request,
)

URL = "https://b.example/callback/7?topic=items%2F42"
BODY = b'{"topic": "https://a.example/items/42", "item": 42, "fields": ["status"], "version": 8}'
HEADERS = {"Content-Type": "application/json"}
NOW = 1_700_000_000.0
MESSAGE = b"x" * 300  # about the size of a signing string / signature base


def rate(operation: Callable[[], object], seconds: float) -> float:
    """Operations per second, measured over about *seconds* after one warm-up call."""
    operation()
    count, start = 0, time.perf_counter()
    deadline = start + seconds
    while True:
        for _ in range(10):
            operation()
        count += 10
        now = time.perf_counter()
        if now >= deadline:
            return count / (now - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=0.5, help="time per row")
    seconds = parser.parse_args().seconds

    ed_key = ed25519.Ed25519PrivateKey.generate()
    rsa_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    ed_public, rsa_public = ed_key.public_key(), rsa_key.public_key()
    resolve = {"ed": ed_public, "rsa": rsa_public}.get
    keys = {RFC9421_ED25519: (ed_key, "ed"), CAVAGE_RSA_SHA256: (rsa_key, "rsa")}

    rows: list[tuple[str, float, str]] = []

    def row(name: str, ops: float, against: tuple[str, float] | None = None) -> float:
        """Record a measurement; *against* = (label, ops/s) of what to compare it with."""
        ratio = "" if against is None else f"{ops / against[1]:.2f}x {against[0]}"
        rows.append((name, ops, ratio))
        print(f"  measured {name}", flush=True)
        return ops

    ed_sig = ed_key.sign(MESSAGE)
    rsa_sig = rsa_key.sign(MESSAGE, padding.PKCS1v15(), hashes.SHA256())
    raw = {
        "ed sign": row(
            "raw cryptography Ed25519 sign", rate(lambda: ed_key.sign(MESSAGE), seconds)
        ),
        "ed verify": row(
            "raw cryptography Ed25519 verify",
            rate(lambda: ed_public.verify(ed_sig, MESSAGE), seconds),
        ),
        "rsa sign": row(
            "raw cryptography RSA-2048 sign",
            rate(lambda: rsa_key.sign(MESSAGE, padding.PKCS1v15(), hashes.SHA256()), seconds),
        ),
        "rsa verify": row(
            "raw cryptography RSA-2048 verify",
            rate(
                lambda: rsa_public.verify(rsa_sig, MESSAGE, padding.PKCS1v15(), hashes.SHA256()),
                seconds,
            ),
        ),
    }

    for profile, prefix in ((RFC9421_ED25519, "ed"), (CAVAGE_RSA_SHA256, "rsa")):
        key, key_id = keys[profile]
        signed = HEADERS | sign_request(profile, "POST", URL, HEADERS, BODY, key, key_id, NOW)

        def sign(profile: str = profile, key: object = key, key_id: str = key_id) -> object:
            return sign_request(profile, "POST", URL, HEADERS, BODY, key, key_id, NOW)  # type: ignore[arg-type]

        def verify(signed: dict[str, str] = signed) -> object:
            return verify_request(
                "POST", URL, signed, BODY, resolve_key=resolve, now=NOW, replay_cache=None
            )

        row(f"{profile} sign_request", rate(sign, seconds), ("of raw", raw[f"{prefix} sign"]))
        row(
            f"{profile} verify_request",
            rate(verify, seconds),
            ("of raw", raw[f"{prefix} verify"]),
        )

    # httpsig (pycryptodome) against our cryptography signer, same output bytes.
    ours = row(
        "cavage sign, cryptography backend",
        rate(
            lambda: cavage.sign("POST", URL, HEADERS, BODY, key=rsa_key, key_id="rsa", now=NOW),
            seconds,
        ),
    )
    row(
        "cavage sign, httpsig backend (new signer)",
        rate(
            lambda: cavage.sign(
                "POST", URL, HEADERS, BODY, key=rsa_key, key_id="rsa", now=NOW, backend="httpsig"
            ),
            seconds,
        ),
        ("of cryptography backend", ours),
    )
    httpsig = cavage.load_httpsig()
    pem = rsa_key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.TraditionalOpenSSL,
        serialization.NoEncryption(),
    )
    reused = httpsig.HeaderSigner(
        "rsa",
        pem,
        algorithm="rsa-sha256",
        headers=["(request-target)", "host", "date"],
        sign_header="signature",
    )
    plain = {"host": "b.example", "date": "Tue, 14 Nov 2023 22:13:20 GMT"}
    row(
        "httpsig HeaderSigner reused (pycryptodome)",
        rate(lambda: reused.sign(plain, method="POST", path="/callback/7"), seconds),
        ("of cryptography backend", ours),
    )

    print()
    print(f"{'operation':<46} {'ops/s':>10} {'us/op':>9}  ratio")
    print("-" * 96)
    for name, ops, ratio in rows:
        print(f"{name:<46} {ops:>10,.0f} {1e6 / ops:>9.1f}  {ratio}")


if __name__ == "__main__":
    main()
