"""The multi-instance harness: real `fieldcast` processes on loopback ports.

Each instance gets its own data directory and database, is set up with `fieldcast init`
and served with `fieldcast serve` (Hypercorn), exactly as a user would run it, and is
driven over real HTTP with httpx.
"""

from __future__ import annotations

import asyncio
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
}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


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

    def start(self, timeout: float = 30.0) -> None:
        log = self.log_path.open("ab")
        self.process = subprocess.Popen(
            _cli("serve", "--data-dir", str(self.data_dir)), env=self.env,
            stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"{self.name} exited: {self.log_path.read_text()}")
            try:
                if httpx.get(self.base_url + "/healthz", timeout=1).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        raise RuntimeError(f"{self.name} did not answer in {timeout}s: {self.log_path.read_text()}")

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        # The whole process group: with several workers Hypercorn has children.
        os.killpg(self.process.pid, signal.SIGTERM)
        try:
            self.process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()

    def cli(self, *args: str, input: str | None = None) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            _cli(*args, "--data-dir", str(self.data_dir)), env=self.env, input=input,
            capture_output=True, text=True,
        )

    async def client(self, username: str = "admin", password: str = ADMIN_PASSWORD,
                     **kwargs: Any) -> httpx.AsyncClient:
        client = httpx.AsyncClient(base_url=self.base_url, timeout=30, **kwargs)
        r = await client.post("/api/login", json={"username": username, "password": password})
        r.raise_for_status()
        return client


async def gather_limited(coros: list[Any], limit: int = 50) -> list[Any]:
    sem = asyncio.Semaphore(limit)

    async def one(c: Any) -> Any:
        async with sem:
            return await c

    return await asyncio.gather(*(one(c) for c in coros))
