"""One real instance: a `fieldcast serve` process on a free loopback port.

Each instance gets its own data directory and database, is set up with `fieldcast init`
and served with `fieldcast serve` (Hypercorn), exactly as a user would run it, and is
driven over real HTTP with httpx. Its process runs in a process group of its own, so
stopping or killing it reaches Hypercorn's workers too; every instance started is
killed when the test process exits, whatever happened.
"""

from __future__ import annotations

import asyncio
import atexit
import json
import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

ADMIN_PASSWORD = "harness admin password"
# Cheap Argon2 so that logging in many users does not dominate the tests.
FAST_ENV = {
    "FIELDCAST_ARGON2_TIME_COST": "1",
    "FIELDCAST_ARGON2_MEMORY_KIB": "8",
    "FIELDCAST_ARGON2_PARALLELISM": "1",
    # An answer that drifts from /openapi.json fails the test that made it.
    "FIELDCAST_TEST_STRICT_ANSWERS": "1",
}
# What federating instances on loopback need: plain http to 127.0.0.1, the test-only
# fault switch (a file in the data directory, off while it does not exist), and key
# documents re-fetched within a second of a rotation instead of a minute.
FAULTS_FILE = "test-faults.json"
FEDERATION_ENV = {
    "FIELDCAST_ALLOW_PRIVATE_CALLBACKS": "true",
    "FIELDCAST_ALLOW_HTTP_CALLBACKS": "true",
    "FIELDCAST_TEST_FAULTS_FILE": FAULTS_FILE,
    "FIELDCAST_KEY_REFETCH_SECONDS": "1",
}

#: Every instance whose process this test run started and has not seen end.
RUNNING: dict[int, RunningInstance] = {}
#: Every instance started and not yet forgotten (Cluster.close): whose logs a failed
#: test's report shows, killed ones included.
STARTED: dict[Path, RunningInstance] = {}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "instance.cli", *args]


@dataclass
class RunningInstance:
    name: str
    data_dir: Path
    base_url: str
    env: dict[str, str]
    process: subprocess.Popen[bytes] | None = None
    log_path: Path = field(init=False)

    def __post_init__(self) -> None:
        self.log_path = self.data_dir / "serve.log"

    @classmethod
    def create(cls, root: Path, name: str, *, database_url: str | None = None,
               workers: int = 1, extra_env: dict[str, str] | None = None) -> RunningInstance:
        data_dir = root / name
        port = free_port()
        base_url = f"http://127.0.0.1:{port}"
        env = {**os.environ, **FAST_ENV, **(extra_env or {})}
        env.pop("FIELDCAST_DATA_DIR", None)
        env.pop("FIELDCAST_CONFIG", None)
        if database_url:
            env["FIELDCAST_DATABASE_URL"] = database_url
        env["FIELDCAST_WORKERS"] = str(workers)
        subprocess.run(
            _cli("init", "--data-dir", str(data_dir), "--base-url", base_url,
                 "--bind", f"127.0.0.1:{port}", "--instance-name", name, "--password-stdin",
                 "--exist-ok"),
            input=ADMIN_PASSWORD.encode() + b"\n", env=env, check=True, capture_output=True,
        )
        return cls(name=name, data_dir=data_dir, base_url=base_url, env=env)

    # ---- the process ---------------------------------------------------------------------

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def start(self, timeout: float = 60.0) -> None:
        with self.log_path.open("ab") as log:
            log.write(f"---- harness: starting {self.name} at {time.strftime('%X')}\n".encode())
            log.flush()
            self.process = subprocess.Popen(
                _cli("serve", "--data-dir", str(self.data_dir)), env=self.env,
                stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
            )
        RUNNING[self.process.pid] = self
        STARTED[self.data_dir] = self
        self.wait_healthy(timeout)

    def wait_healthy(self, timeout: float = 60.0) -> None:
        assert self.process is not None
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"{self.name} exited: {self.log_tail()}")
            try:
                if httpx.get(self.base_url + "/healthz", timeout=1).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.05)
        raise RuntimeError(f"{self.name} did not answer in {timeout}s: {self.log_tail()}")

    def stop(self) -> None:
        """A clean shutdown (SIGTERM to the process group), SIGKILL after 15 s."""
        if not self.running:
            return
        assert self.process is not None
        # The whole process group: with several workers Hypercorn has children.
        os.killpg(self.process.pid, signal.SIGTERM)
        try:
            self.process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()
        RUNNING.pop(self.process.pid, None)

    def kill(self) -> None:
        """``kill -9`` of the process group: no shutdown code runs; the data stays."""
        if not self.running:
            return
        assert self.process is not None
        os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait()
        RUNNING.pop(self.process.pid, None)

    def restart(self, *, env: dict[str, str] | None = None, kill: bool = False) -> None:
        """Stop (or kill) and start again on the same port, data dir and database, with
        ``env`` changed (a value of "" removes the variable)."""
        self.kill() if kill else self.stop()
        for name, value in (env or {}).items():
            if value == "":
                self.env.pop(name, None)
            else:
                self.env[name] = value
        self.start()

    def log_tail(self, limit: int = 20_000) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return "(no log)"
        return text[-limit:]

    # ---- faults (test-only settings; FEDERATION_ENV turns the switch on) ----------------

    @property
    def _faults_path(self) -> Path:
        return self.data_dir / self.env.get("FIELDCAST_TEST_FAULTS_FILE", FAULTS_FILE)

    def callback_fault(self, mode: str | None, seconds: float = 0, *, record: bool = True
                       ) -> None:
        """Make this instance's federation callback answer 500 (``"error"``) or wait
        ``seconds`` before answering (``"hang"``); None: behave again. With ``record``
        (the default) every callback request is also written down (`callback_requests`).
        Read by the running server on every callback request."""
        path = self._faults_path
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps({"callback": mode, "seconds": seconds, "record": record}))
        os.replace(tmp, path)

    def callback_requests(self) -> list[dict[str, Any]]:
        """Every request the callback recorded: method, path (with query) and body."""
        path = self._faults_path.with_name(self._faults_path.name + ".requests")
        if not path.exists():
            return []
        return [json.loads(line) for line in path.read_text().splitlines() if line]

    def shift_clock(self, seconds: int) -> None:
        """Restart with the clock it signs and checks signatures with moved by
        ``seconds`` (0: the true time again)."""
        self.restart(env={"FIELDCAST_TEST_CLOCK_OFFSET_SECONDS": str(seconds) if seconds
                          else ""})

    # ---- driving it ----------------------------------------------------------------------

    def cli(self, *args: str, input: str | None = None) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            _cli(*args, "--data-dir", str(self.data_dir)), env=self.env, input=input,
            capture_output=True, text=True,
        )

    def key_store(self) -> Any:
        """This instance's keys as its files hold them now (``keys.store.KeyStore``): to
        sign requests as it would, e.g. a ping with a key it has since replaced."""
        from keys.store import KeyStore
        return KeyStore(self.data_dir / "keys").load()

    def database_url(self) -> str:
        return self.env.get("FIELDCAST_DATABASE_URL") or (
            f"sqlite+aiosqlite:///{(self.data_dir / 'fieldcast.db').resolve()}")

    def edit_offline(self, item: int, field_name: str, value: Any) -> None:
        """Save a field straight into the database, through the change log as the API
        would (as the admin), while the server may be down: ``tests/harness/offline.py``."""
        subprocess.run(
            [sys.executable, "-m", "tests.harness.offline", self.database_url(), str(item),
             field_name, json.dumps(value)],
            env=self.env, check=True, capture_output=True,
        )

    async def client(self, username: str = "admin", password: str = ADMIN_PASSWORD,
                     **kwargs: Any) -> httpx.AsyncClient:
        client = httpx.AsyncClient(base_url=self.base_url, timeout=30, **kwargs)
        r = await client.post("/api/login", json={"username": username, "password": password})
        r.raise_for_status()
        return client


def _kill_all() -> None:
    for pid in list(RUNNING):
        try:
            os.killpg(pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
    RUNNING.clear()


# Whatever happened to the run (an error in a fixture, Ctrl-C), no server outlives it.
atexit.register(_kill_all)


async def gather_limited(coros: list[Any], limit: int = 50) -> list[Any]:
    sem = asyncio.Semaphore(limit)

    async def one(c: Any) -> Any:
        async with sem:
            return await c

    return await asyncio.gather(*(one(c) for c in coros))
