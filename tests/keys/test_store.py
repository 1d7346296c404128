"""Key files: 0600 from the start, refused when others may read them; rotation."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from keys.publish import parse_well_known, well_known_document
from keys.store import KeyStore, KeyStoreError


def test_generate_writes_private_files_0600(tmp_path: Path) -> None:
    store = KeyStore(tmp_path / "keys")
    store.generate(now=1000.0)
    files = sorted(p.name for p in store.directory.iterdir())
    assert len([f for f in files if f.endswith(".pem")]) == 2 and "keys.json" in files
    for path in store.directory.iterdir():
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, path
    assert stat.S_IMODE(store.directory.stat().st_mode) == 0o700
    loaded = KeyStore(tmp_path / "keys").load()
    assert {k.record.alg for k in loaded.verification_keys(1000.0)} == {"ed25519", "rsa"}
    assert loaded.current("rsa").private.key_size == 2048
    with pytest.raises(KeyStoreError, match="already holds keys"):
        store.generate(now=1001.0)


@pytest.mark.parametrize("mode", [0o644, 0o640, 0o604, 0o660])
def test_load_refuses_keys_others_may_read(tmp_path: Path, mode: int) -> None:
    store = KeyStore(tmp_path / "keys")
    store.generate(now=0.0)
    victim = next(store.directory.glob("rsa-*.pem"))
    os.chmod(victim, mode)
    with pytest.raises(KeyStoreError, match=f"chmod 600 {victim}"):
        KeyStore(tmp_path / "keys").load()


def test_missing_keys_say_what_to_run(tmp_path: Path) -> None:
    with pytest.raises(KeyStoreError, match="fieldcast init"):
        KeyStore(tmp_path / "nothing").load()


def test_rotation_overlap_then_retirement(tmp_path: Path) -> None:
    store = KeyStore(tmp_path / "keys")
    store.generate(now=0.0)
    old = store.current("ed25519")
    new = store.rotate("ed25519", now=100.0, overlap=50.0)
    assert store.current("ed25519").record.kid == new.record.kid != old.record.kid
    # Inside the overlap both verify and both are published; the rotation survives a reload.
    reloaded = KeyStore(tmp_path / "keys").load()
    live = {k.record.kid for k in reloaded.verification_keys(now=149.0)}
    assert {old.record.kid, new.record.kid} <= live
    doc = well_known_document(reloaded, name="a", base_url="https://a.example", now=149.0)
    assert any(k["id"].endswith(old.record.kid) and k["state"] == "previous" for k in doc["keys"])
    # After it, the old key neither verifies nor is published; retiring deletes its file.
    assert reloaded.get(old.record.kid, now=150.0) is None
    doc = well_known_document(reloaded, name="a", base_url="https://a.example", now=150.0)
    assert not any(k["id"].endswith(old.record.kid) for k in doc["keys"])
    assert reloaded.retire_expired(now=150.0) == [old.record.kid]
    assert not (store.directory / f"{old.record.kid}.pem").exists()
    assert KeyStore(tmp_path / "keys").load().get(old.record.kid, now=150.0) is None
    parsed = parse_well_known(doc)
    assert {k.algorithm for k in parsed.keys} == {"ed25519", "rsa"}


def test_a_rotation_by_another_process_is_picked_up(tmp_path: Path) -> None:
    import time as _time

    serving = KeyStore(tmp_path / "keys")
    serving.generate(_time.time())
    before = serving.current("ed25519").record.kid
    assert serving.reload_if_changed() is False  # one stat, nothing to do
    # `fieldcast keys rotate` is another process with its own store over the same files.
    KeyStore(tmp_path / "keys").load().rotate("ed25519", _time.time(), overlap=60)
    assert serving.reload_if_changed() is True
    after = serving.current("ed25519").record.kid
    assert after != before
    assert {k.record.kid for k in serving.verification_keys(_time.time())} >= {before, after}
