"""The instance's own key pairs: generated once, kept as 0600 PEM files, rotated with an
overlap window during which the previous key still verifies.

Layout in ``{data_dir}/keys/``: one ``{kid}.pem`` (PKCS#8, unencrypted) per live key and
``keys.json``, the manifest (id, algorithm, creation, state, end of validity).
"""

from __future__ import annotations

import json
import os
import secrets
import stat
from dataclasses import asdict, dataclass, replace
from enum import StrEnum
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519, rsa

ALGORITHMS = ("ed25519", "rsa")
MANIFEST = "keys.json"
DEFAULT_OVERLAP = 7 * 24 * 3600  # a week: peers re-fetch well within it

PrivateKey = ed25519.Ed25519PrivateKey | rsa.RSAPrivateKey
PublicKey = ed25519.Ed25519PublicKey | rsa.RSAPublicKey


class KeyState(StrEnum):
    """Where a key is in its rotation; the value is what ``keys.json`` and the published
    key documents say."""

    #: Signs, and verifies.
    CURRENT = "current"
    #: Replaced by a new current key; still verifies until ``valid_until`` (the overlap).
    PREVIOUS = "previous"
    #: Past its overlap: neither published nor accepted, its private key file deleted.
    RETIRED = "retired"


class KeyStoreError(Exception):
    """The key files are missing, unreadable or unsafe; the message says how to fix it."""


@dataclass(frozen=True)
class KeyRecord:
    kid: str
    alg: str  # "ed25519" or "rsa"
    created: float
    state: KeyState
    valid_until: float | None = None  # for PREVIOUS: when it stops verifying


@dataclass(frozen=True)
class LiveKey:
    record: KeyRecord
    private: PrivateKey

    @property
    def public(self) -> PublicKey:
        return self.private.public_key()

    def public_pem(self) -> str:
        return self.public.public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        ).decode()


def _new_private(alg: str) -> PrivateKey:
    if alg == "ed25519":
        return ed25519.Ed25519PrivateKey.generate()
    if alg == "rsa":
        return rsa.generate_private_key(public_exponent=65537, key_size=2048)
    raise KeyStoreError(f"unknown key algorithm {alg!r}; known: {', '.join(ALGORITHMS)}")


class KeyStore:
    def __init__(self, directory: Path) -> None:
        self.directory = Path(directory)
        self._records: list[KeyRecord] = []
        self._private: dict[str, PrivateKey] = {}
        # The manifest file as last read or written: (inode, size, mtime in ns).
        self._stamp: tuple[int, int, int] | None = None

    # ---- files ---------------------------------------------------------------------------

    @property
    def manifest_path(self) -> Path:
        return self.directory / MANIFEST

    def exists(self) -> bool:
        return self.manifest_path.is_file()

    def _write_private(self, kid: str, key: PrivateKey) -> None:
        pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption())
        path = self.directory / f"{kid}.pem"
        # Created 0600 from the start: a chmod after writing leaves a window.
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as fh:
            fh.write(pem)

    def _save_manifest(self) -> None:
        tmp = self.manifest_path.with_suffix(".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as fh:
            json.dump({"keys": [asdict(r) for r in self._records]}, fh, indent=2)
        os.replace(tmp, self.manifest_path)
        self._stamp = self._manifest_stamp()

    def _manifest_stamp(self) -> tuple[int, int, int] | None:
        try:
            st = os.stat(self.manifest_path)
        except OSError:
            return None
        return (st.st_ino, st.st_size, st.st_mtime_ns)

    def generate(self, now: float) -> None:
        """Create one current key per algorithm (``fieldcast init``)."""
        if self.exists():
            raise KeyStoreError(f"{self.directory} already holds keys; use `fieldcast keys "
                                "rotate` to replace them")
        self.directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        for alg in ALGORITHMS:
            self._add(alg, now)
        self._save_manifest()

    def _add(self, alg: str, now: float) -> LiveKey:
        kid = f"{alg}-{secrets.token_hex(6)}"
        key = _new_private(alg)
        self._write_private(kid, key)
        record = KeyRecord(kid=kid, alg=alg, created=now, state=KeyState.CURRENT)
        self._records.append(record)
        self._private[kid] = key
        return LiveKey(record, key)

    def load(self) -> KeyStore:
        """Read the manifest and every live private key, refusing unsafe permissions."""
        if not self.exists():
            raise KeyStoreError(f"no keys in {self.directory}: run `fieldcast init`")
        stamp = self._manifest_stamp()
        try:
            data = json.loads(self.manifest_path.read_text())
            # KeyState() refuses a state this code does not know (ValueError, below).
            self._records = [KeyRecord(**{**r, "state": KeyState(r["state"])})
                             for r in data["keys"]]
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise KeyStoreError(f"{self.manifest_path} is unreadable: {exc}") from None
        self._private = {}
        for record in self._records:
            if record.state == KeyState.RETIRED:
                continue
            path = self.directory / f"{record.kid}.pem"
            try:
                # The mode is checked on the descriptor we read from, not on the path: a
                # file swapped between a stat() and an open() cannot slip through, and
                # O_NOFOLLOW refuses a symlink pointing at some other file.
                fd = os.open(path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0))
            except OSError as exc:
                raise KeyStoreError(f"key file {path} cannot be opened: {exc}") from None
            with os.fdopen(fd, "rb") as fh:
                mode = os.fstat(fh.fileno()).st_mode
                if not stat.S_ISREG(mode):
                    raise KeyStoreError(f"key file {path} is not a regular file")
                if mode & (stat.S_IRWXG | stat.S_IRWXO):
                    raise KeyStoreError(
                        f"key file {path} has mode {stat.S_IMODE(mode):04o}: others may read "
                        f"it. Fix it with `chmod 600 {path}` (and consider rotating the key)"
                    )
                pem = fh.read()
            try:
                key = serialization.load_pem_private_key(pem, password=None)
            except (ValueError, TypeError) as exc:
                raise KeyStoreError(
                    f"{path} is not an unencrypted PEM private key: {exc}"
                ) from None
            if not isinstance(key, ed25519.Ed25519PrivateKey | rsa.RSAPrivateKey):
                raise KeyStoreError(f"{path} holds an unsupported key type")
            self._private[record.kid] = key
        self._stamp = stamp
        return self

    def reload_if_changed(self) -> bool:
        """Read the keys again if the manifest changed since (``fieldcast keys rotate`` in
        another process, while this one serves). One ``stat`` when nothing changed, so
        it is cheap enough to call before every signature. The manifest is replaced
        atomically and written after the new key file, so what it names exists. On a
        failure the keys held so far stay in use, and the error is raised."""
        if self._manifest_stamp() == self._stamp:
            return False
        fresh = KeyStore(self.directory).load()
        self._records, self._private, self._stamp = fresh._records, fresh._private, fresh._stamp
        return True

    # ---- use -----------------------------------------------------------------------------

    def current(self, alg: str) -> LiveKey:
        for record in self._records:
            if record.alg == alg and record.state == KeyState.CURRENT:
                return LiveKey(record, self._private[record.kid])
        raise KeyStoreError(f"no current {alg} key in {self.directory}")

    def verification_keys(self, now: float) -> list[LiveKey]:
        """Keys that still verify: the current ones and previous ones inside the overlap."""
        return [LiveKey(r, self._private[r.kid]) for r in self._records
                if r.state == KeyState.CURRENT
                or (r.state == KeyState.PREVIOUS and r.valid_until is not None
                    and r.valid_until > now)]

    def get(self, kid: str, now: float) -> LiveKey | None:
        return next((k for k in self.verification_keys(now) if k.record.kid == kid), None)

    def rotate(self, alg: str, now: float, overlap: float = DEFAULT_OVERLAP) -> LiveKey:
        """A new current key; the old one verifies for ``overlap`` seconds more."""
        self.retire_expired(now, save=False)
        old = self.current(alg)
        self._records = [replace(r, state=KeyState.PREVIOUS, valid_until=now + overlap)
                         if r.kid == old.record.kid else r for r in self._records]
        new = self._add(alg, now)
        self._save_manifest()
        return new

    def retire_expired(self, now: float, *, save: bool = True) -> list[str]:
        """Previous keys past their overlap: no longer published or accepted, and their
        private key files are deleted."""
        retired = []
        for i, r in enumerate(self._records):
            if r.state == KeyState.PREVIOUS and r.valid_until is not None and r.valid_until <= now:
                self._records[i] = replace(r, state=KeyState.RETIRED)
                self._private.pop(r.kid, None)
                (self.directory / f"{r.kid}.pem").unlink(missing_ok=True)
                retired.append(r.kid)
        if retired and save:
            self._save_manifest()
        return retired

    def records(self) -> list[KeyRecord]:
        return list(self._records)


def key_url(base_url: str, kid: str) -> str:
    """The keyId of a key: the URL that publishes it."""
    return f"{base_url.rstrip('/')}/.well-known/fieldcast/keys/{kid}"


def describe(record: KeyRecord) -> dict[str, Any]:
    return asdict(record)
