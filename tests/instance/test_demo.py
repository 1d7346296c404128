"""`fieldcast demo` as a user runs it: two real instances, the printed log-ins work, an
edit on A reaches B, and Ctrl-C (or SIGTERM) stops everything cleanly."""

from __future__ import annotations

import os
import queue
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx

from tests.harness import FAST_ENV, free_port

READY = "Press Ctrl-C"


def port_free(port: int) -> bool:
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


def two_free_ports() -> int:
    for _ in range(50):
        port = free_port()
        if port < 65535 and port_free(port + 1):
            return port
    raise AssertionError("no two consecutive free ports")


class Demo:
    """A `fieldcast demo` process whose output is read line by line as it comes."""

    def __init__(self, *args: str, env: dict[str, str] | None = None) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-m", "instance.cli", "demo", *args],
            env={**os.environ, **FAST_ENV, **(env or {})}, stdout=subprocess.PIPE,
            stderr=subprocess.PIPE, text=True)
        self.lines: queue.Queue[str | None] = queue.Queue()
        self.output: list[str] = []
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self.lines.put(line)
        self.lines.put(None)

    def wait_for(self, text: str, timeout: float = 120) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                line = self.lines.get(timeout=0.5)
            except queue.Empty:
                continue
            if line is None:
                break
            self.output.append(line)
            if text in line:
                return "".join(self.output)
        self.stop()
        raise AssertionError(f"never printed {text!r}: {''.join(self.output)}"
                             f"{self.stderr()}")

    def finish(self, timeout: float = 30) -> tuple[int, str, str]:
        code = self.process.wait(timeout=timeout)
        while (line := self.lines.get(timeout=5)) is not None:
            self.output.append(line)
        return code, "".join(self.output), self.stderr()

    def stderr(self) -> str:
        if self.process.poll() is None or self.process.stderr is None:
            return ""
        return self.process.stderr.read()

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()


def test_demo_federates_and_stops_cleanly_on_ctrl_c(tmp_path: Path) -> None:
    port = two_free_ports()
    a_base, b_base = f"http://127.0.0.1:{port}", f"http://127.0.0.1:{port + 1}"
    demo = Demo("--port", str(port), "--data-dir", str(tmp_path / "demo"))
    try:
        out = demo.wait_for(READY)
        pairs = re.findall(r"^  A (http://\S+/items/(\d+))   B (http://\S+/items/(\d+))", out,
                           re.MULTILINE)
        assert pairs and all(a.startswith(a_base) and b.startswith(b_base)
                             for a, _, b, _ in pairs), out
        logins = {(base, user): password for base, user, password
                  in re.findall(r"^  (http://\S+)/login   (\S+) / (\S+)", out, re.MULTILINE)}
        assert {user for _, user in logins} == {"admin", "alice", "bob"}, out

        alice = httpx.Client(base_url=a_base, timeout=10)
        bob = httpx.Client(base_url=b_base, timeout=10)
        for client, base, user in ((alice, a_base, "alice"), (bob, b_base, "bob")):
            r = client.post("/api/login", json={"username": user,
                                                "password": logins[(base, user)]})
            assert r.status_code == 200, r.text
        for base in (a_base, b_base):
            admin = httpx.post(f"{base}/api/login", timeout=10, json={
                "username": "admin", "password": logins[(base, "admin")]})
            assert admin.status_code == 200, admin.text

        _, a_item, _, b_item = pairs[0]
        mirrored = bob.get(f"/api/items/{b_item}").json()["fields"]
        assert mirrored["bug_status"]["remote"]["state"] == "live", mirrored
        assert mirrored["bug_title"]["value"] == \
            alice.get(f"/api/items/{a_item}").json()["fields"]["title"]["value"]
        # Staff-only on A: alice reads it, B's bob never gets it.
        assert "notes" in alice.get(f"/api/items/{a_item}").json()["fields"]
        assert not any("notes" in name for name in mirrored)

        r = alice.patch(f"/api/items/{a_item}/fields/status", json={"value": "fixed"})
        assert r.status_code == 200, r.text
        deadline = time.monotonic() + 5
        while True:
            value = bob.get(f"/api/items/{b_item}").json()["fields"]["bug_status"]["value"]
            if value == "fixed":
                break
            assert time.monotonic() < deadline, f"B still shows {value!r} after 5 s"
            time.sleep(0.1)
        alice.close()
        bob.close()
    finally:
        demo.stop()
    code, stdout, stderr = demo.finish()
    assert code == 0, (stdout, stderr)
    assert "Traceback" not in stdout + stderr
    assert "stopped" in stdout
    for name in ("a", "b"):
        log = (tmp_path / "demo" / name / "serve.log").read_text()
        assert "Traceback" not in log, log
    assert port_free(port) and port_free(port + 1)


def test_demo_without_data_dir_removes_its_directory_on_sigterm(tmp_path: Path) -> None:
    port = two_free_ports()
    demo = Demo("--port", str(port), env={"TMPDIR": str(tmp_path)})
    try:
        demo.wait_for(READY)
        made = list(tmp_path.iterdir())
        assert len(made) == 1 and (made[0] / "a" / "fieldcast.db").exists(), made
        demo.process.send_signal(signal.SIGTERM)
        code, stdout, stderr = demo.finish()
    finally:
        demo.stop()
    assert code == 0, (stdout, stderr)
    assert "Traceback" not in stdout + stderr
    assert list(tmp_path.iterdir()) == []
    assert port_free(port) and port_free(port + 1)


def test_demo_on_a_taken_port_says_so_in_one_line(tmp_path: Path) -> None:
    port = two_free_ports()
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", port + 1))
        taken.listen()
        out = subprocess.run([sys.executable, "-m", "instance.cli", "demo", "--port", str(port)],
                             capture_output=True, text=True, env={**os.environ, **FAST_ENV,
                                                                  "TMPDIR": str(tmp_path)})
    assert out.returncode == 2
    assert out.stderr == (f"fieldcast: error: port {port + 1} on 127.0.0.1 is taken "
                          "(Address already in use); choose others with --port P "
                          "(the demo uses P and P+1)\n")
    assert out.stdout == "" and list(tmp_path.iterdir()) == []
