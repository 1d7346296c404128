"""The fieldcast command as a user runs it: real processes, a real server."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import httpx

from tests.harness import FAST_ENV, RunningInstance


def run(*args: str, input: str | None = None, env: dict[str, str] | None = None
        ) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "instance.cli", *args], input=input,
                          capture_output=True, text=True, env={**os.environ, **FAST_ENV,
                                                               **(env or {})})


def test_help_teaches() -> None:
    out = run("--help")
    assert out.returncode == 0
    assert "fieldcast init --data-dir ./data" in out.stdout
    out = run("field", "add", "--help")
    assert "--read" in out.stdout and "admins-only" in out.stdout


def test_init_generates_password_once_and_refuses_twice(tmp_path: Path) -> None:
    data = tmp_path / "d"
    out = run("init", "--data-dir", str(data), input="")
    assert out.returncode == 0, out.stderr
    password = next(line.split()[2] for line in out.stdout.splitlines()
                    if line.startswith("admin password:"))
    assert len(password) >= 12
    assert (data / "fieldcast.toml").exists()
    assert oct(data.stat().st_mode & 0o777) == "0o700"
    again = run("init", "--data-dir", str(data), input="")
    assert again.returncode == 2
    assert "already set up" in again.stderr
    ok = run("init", "--data-dir", str(data), "--exist-ok", input="")
    assert ok.returncode == 0 and "already set up; nothing to do" in ok.stdout


def test_admin_commands_and_their_errors(tmp_path: Path) -> None:
    data = str(tmp_path / "d")
    assert run("init", "--data-dir", data, "--password-stdin",
               input="long enough pw\n").returncode == 0
    steps = [
        ("group", "add", "Staff"),
        ("user", "add", "alice", "--group", "Staff", "--password-stdin"),
        ("tracker", "add", "bugs", "--name", "Bugs"),
        ("field", "add", "bugs", "status", "--type", "dropdown", "--choices", "open,closed"),
        ("field", "add", "bugs", "notes", "--type", "textarea", "--read", "Staff", "--edit",
         "Staff"),
        ("field", "add", "bugs", "secret", "--read"),
        ("field", "rights", "bugs", "status", "--edit", "Staff"),
    ]
    for step in steps:
        out = run(*step, "--data-dir", data, input="alice password\n")
        assert out.returncode == 0, (step, out.stderr)
    listing = run("field", "list", "bugs", "--data-dir", data).stdout
    assert "notes" in listing and "read: Staff" in listing
    assert "secret" in listing and "read: admins only" in listing
    assert "alice" in run("group", "list", "--data-dir", data).stdout
    errors = [
        (("user", "add", "alice", "--password-stdin"), "already exists"),
        (("user", "add", "bad name!", "--password-stdin"), "a username is"),
        (("field", "add", "bugs", "x", "--type", "dropdown"), "needs options.choices"),
        (("field", "add", "nope", "x"), "tracker 'nope' does not exist"),
        (("group", "delete", "Registered"), "built-in group"),
        (("group", "add-member", "Anonymous", "alice"), "implicit"),
        (("user", "set-password", "alice", "--password-stdin"), "at least 8 characters"),
    ]
    for args, message in errors:
        weak = args[1] == "set-password"
        out = run(*args, "--data-dir", data, input="short\n" if weak else "long enough pw\n")
        assert out.returncode == 2, (args, out.stdout)
        assert message in out.stderr, (args, out.stderr)
        assert "Traceback" not in out.stderr
    token = run("token", "create", "alice", "--data-dir", data).stdout.strip()
    assert token.startswith("fc_")


def test_misspelt_environment_variable_is_refused(tmp_path: Path) -> None:
    out = run("user", "list", "--data-dir", str(tmp_path / "d"),
              env={"FIELDCAST_DATABSE_URL": "postgresql+asyncpg://x/y"})
    assert out.returncode == 2
    assert out.stderr.startswith("fieldcast: error: unknown setting(s): FIELDCAST_DATABSE_URL "
                                 "(did you mean FIELDCAST_DATABASE_URL?)")
    assert out.stderr.count("\n") == 1 and "Traceback" not in out.stderr


def test_serve_and_restart_keep_data(tmp_path: Path) -> None:
    inst = RunningInstance.create(tmp_path, "a")
    inst.start()
    try:
        admin = httpx.Client(base_url=inst.base_url)
        r = admin.post("/api/login", json={"username": "admin",
                                           "password": "harness admin password"})
        assert r.status_code == 200
        admin.post("/api/trackers", json={"slug": "bugs"}).raise_for_status()
        admin.post("/api/trackers/bugs/fields", json={"name": "title"}).raise_for_status()
        item = admin.post("/api/trackers/bugs/items",
                          json={"fields": {"title": "kept"}}).json()["id"]
    finally:
        inst.stop()
    inst.start()
    try:
        r = admin.get(f"/api/items/{item}")
        assert r.status_code == 200  # the session survived the restart, too
        assert r.json()["fields"]["title"]["value"] == "kept"
    finally:
        inst.stop()
