"""`fieldcast demo`: two federated instances on loopback, with sample data, until Ctrl-C.

Each instance is what a user would run: `fieldcast init` then `fieldcast serve`, each in
a process group of its own, with its own data directory, SQLite database, keys and
config. The sample data goes in through the HTTP API, as an admin would put it there,
and B links its items to A's with `PUT /api/items/ID/link`, so the demo exercises the
federation path end to end: A's save → change log → delivery queue → signed ping to B's
callback → B's signed fetch of the topic → B's change log → B's open pages.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import IO, Any

import httpx

from instance.cli.common import CliError, Subcommands

HOST = "127.0.0.1"
DEFAULT_PORT = 8000
#: How long an instance may take to answer /healthz after `serve` starts.
START_TIMEOUT = 60.0
#: How long `serve` has to stop on SIGTERM (Hypercorn's graceful_timeout is 5 s).
STOP_TIMEOUT = 15.0

# Settings the demo chooses for each instance; the same names in the caller's environment
# would otherwise override them (FIELDCAST_<NAME> beats the config file).
_DEMO_CHOSEN = frozenset({
    "FIELDCAST_DATA_DIR", "FIELDCAST_CONFIG", "FIELDCAST_DATABASE_URL", "FIELDCAST_BASE_URL",
    "FIELDCAST_BIND", "FIELDCAST_WORKERS", "FIELDCAST_INSTANCE_NAME", "FIELDCAST_BROKER_URL",
    "FIELDCAST_ALLOW_PRIVATE_CALLBACKS", "FIELDCAST_ALLOW_HTTP_CALLBACKS",
})
# Both instances are on loopback over plain http: the hub's verification GETs and
# pings, and the subscriber's key and topic fetches, would be refused otherwise.
_LOOPBACK_FEDERATION = {
    "FIELDCAST_ALLOW_PRIVATE_CALLBACKS": "true",
    "FIELDCAST_ALLOW_HTTP_CALLBACKS": "true",
}

BUGS = [
    {"title": "Login page times out on slow networks", "status": "open",
     "priority": "high", "notes": "Seen by two customers; proxy in front of them?"},
    {"title": "Export to CSV drops the last row", "status": "in progress",
     "priority": "normal", "notes": "Off by one in the paginator."},
    {"title": "Typo on the settings page", "status": "open", "priority": "low"},
]
# (B's ticket, index of the A bug it is linked to)
TICKETS = [
    ({"subject": "Cannot log in from the branch office", "customer": "Northwind"}, 0),
    ({"subject": "Monthly report is missing a line", "customer": "Contoso"}, 1),
]


def _cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "instance.cli", *args]


def _password() -> str:
    return secrets.token_urlsafe(12)


def check_port_free(port: int) -> None:
    """Raise CliError (one line, exit 2) when something listens on HOST:port already."""
    if not 1 <= port <= 65535:
        raise CliError(f"port {port} is not a TCP port (1-65535); choose another with --port")
    with socket.socket() as s:
        # As Hypercorn binds: a port held only by TIME_WAIT connections counts as free.
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((HOST, port))
        except OSError as exc:
            raise CliError(f"port {port} on {HOST} is taken ({exc.strerror}); "
                           "choose others with --port P (the demo uses P and P+1)") from None


@dataclass
class DemoInstance:
    label: str  # "A" or "B"
    port: int
    data_dir: Path
    env: dict[str, str]
    admin_password: str = field(default_factory=_password)
    process: subprocess.Popen[bytes] | None = None
    log: IO[bytes] | None = None

    @property
    def base_url(self) -> str:
        return f"http://{HOST}:{self.port}"

    @property
    def log_path(self) -> Path:
        return self.data_dir / "serve.log"

    def init(self) -> None:
        # Our own interpreter and fixed arguments: nothing here comes from outside.
        out = subprocess.run(  # noqa: S603
            _cli("init", "--data-dir", str(self.data_dir), "--base-url", self.base_url,
                 "--bind", f"{HOST}:{self.port}", "--instance-name", f"demo-{self.label}",
                 "--password-stdin"),
            input=(self.admin_password + "\n").encode(), env={**self.env, **_LOOPBACK_FEDERATION},
            capture_output=True, check=False)
        if out.returncode != 0:
            raise CliError(f"fieldcast init of {self.label} failed: "
                           f"{out.stderr.decode(errors='replace').strip()}")

    def start(self) -> None:
        self.log = self.log_path.open("ab")
        # A session (process group) of its own: Ctrl-C in the terminal reaches only the
        # demo, which stops the instances itself, in order and without tracebacks.
        self.process = subprocess.Popen(  # noqa: S603
            _cli("serve", "--data-dir", str(self.data_dir)), env=self.env,
            stdin=subprocess.DEVNULL, stdout=self.log, stderr=subprocess.STDOUT,
            start_new_session=True)

    def wait_ready(self) -> None:
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            self.check_running()
            try:
                if httpx.get(self.base_url + "/healthz", timeout=1).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        raise CliError(f"{self.label} did not answer within {START_TIMEOUT:.0f} s; "
                       f"its log:\n{self.log_tail()}")

    def check_running(self) -> None:
        if self.process is not None and self.process.poll() is not None:
            raise CliError(f"{self.label} ({self.base_url}) stopped with exit status "
                           f"{self.process.returncode}; its log:\n{self.log_tail()}")

    def log_tail(self, lines: int = 20) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return "(no log)"
        return "\n".join(text.splitlines()[-lines:])

    def signal(self) -> None:
        if self.process is not None and self.process.poll() is None:
            # The whole group: whatever serve started goes too.
            os.killpg(self.process.pid, signal.SIGTERM)

    def wait_stopped(self) -> int | None:
        if self.process is None:
            return None
        try:
            code = self.process.wait(timeout=STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            code = self.process.wait()
        if self.log is not None:
            self.log.close()
        return code

    def admin(self) -> httpx.Client:
        client = httpx.Client(base_url=self.base_url, timeout=30)
        _ok(client.post("/api/login", json={"username": "admin",
                                            "password": self.admin_password}))
        return client


def _ok(response: httpx.Response) -> Any:
    if response.status_code >= 300:
        raise CliError(f"setting up the sample data: {response.request.method} "
                       f"{response.request.url} answered {response.status_code}: {response.text}")
    return response.json() if response.content else None


@dataclass
class SampleData:
    logins: list[tuple[DemoInstance, str, str, str]]  # (instance, user, password, role)
    pairs: list[tuple[str, str, str]]  # (A item URL, B item URL, what it is)


def set_up_sample_data(a: DemoInstance, b: DemoInstance) -> SampleData:
    alice, bob = _password(), _password()
    with contextlib.closing(a.admin()) as api:
        _ok(api.post("/api/groups", json={"name": "Staff"}))
        _ok(api.post("/api/users", json={"username": "alice", "password": alice,
                                         "display_name": "Alice", "groups": ["Staff"]}))
        _ok(api.post("/api/trackers", json={"slug": "bugs", "name": "Bugs"}))
        a_fields: list[dict[str, Any]] = [
            {"name": "title", "label": "Title", "export": {"mode": "public"}},
            {"name": "status", "label": "Status", "type": "dropdown",
             "options": {"choices": ["open", "in progress", "fixed", "closed"]},
             "export": {"mode": "partners", "partners": [b.base_url]}},
            {"name": "priority", "label": "Priority", "type": "dropdown",
             "options": {"choices": ["low", "normal", "high"]}},
            {"name": "notes", "label": "Notes (Staff only)", "type": "textarea",
             "read_groups": ["Staff"], "edit_groups": ["Staff"]},
        ]
        for data in a_fields:
            _ok(api.post("/api/trackers/bugs/fields", json=data))
        bug_ids = [int(_ok(api.post("/api/trackers/bugs/items", json={"fields": bug}))["id"])
                   for bug in BUGS]
    with contextlib.closing(b.admin()) as api:
        _ok(api.post("/api/users", json={"username": "bob", "password": bob,
                                         "display_name": "Bob"}))
        _ok(api.post("/api/trackers", json={"slug": "support", "name": "Support"}))
        b_fields: list[dict[str, Any]] = [
            {"name": "subject", "label": "Subject"},
            {"name": "customer", "label": "Customer"},
            {"name": "bug_title", "label": "Bug title (from A)", "type": "remote",
             "options": {"source": {"instance": a.base_url, "tracker": "bugs",
                                    "field": "title"}}},
            {"name": "bug_status", "label": "Bug status (from A)", "type": "remote",
             "options": {"source": {"instance": a.base_url, "tracker": "bugs",
                                    "field": "status"}}},
        ]
        for data in b_fields:
            _ok(api.post("/api/trackers/support/fields", json=data))
        pairs = []
        for ticket, bug in TICKETS:
            ticket_id = int(_ok(api.post("/api/trackers/support/items",
                                         json={"fields": ticket}))["id"])
            a_url = f"{a.base_url}/items/{bug_ids[bug]}"
            _ok(api.put(f"/api/items/{ticket_id}/link", json={"url": a_url}))
            pairs.append((a_url, f"{b.base_url}/items/{ticket_id}", ticket["subject"]))
    return SampleData(
        logins=[(a, "admin", a.admin_password, "admin of A"),
                (a, "alice", alice, "Staff on A: also sees and edits the notes"),
                (b, "admin", b.admin_password, "admin of B"),
                (b, "bob", bob, "user on B: sees A's title and status, read-only")],
        pairs=pairs)


def _instance_env(environ: Mapping[str, str]) -> dict[str, str]:
    env = {k: v for k, v in environ.items() if k not in _DEMO_CHOSEN}
    # Children print to log files; keep their Python unbuffered so a log is current.
    env["PYTHONUNBUFFERED"] = "1"
    return env


def _say(text: str = "") -> None:
    print(text, flush=True)


class _StopOnSignal:
    """SIGINT and SIGTERM end the demo as Ctrl-C does: the first one raises
    KeyboardInterrupt wherever the demo is; any later one (Ctrl-C twice, or a SIGTERM on
    top of it) is ignored so that it cannot cut the clean-up short."""

    def __init__(self) -> None:
        self.stopping = False
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, self._handle)

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        if not self.stopping:
            self.stopping = True
            raise KeyboardInterrupt


def cmd_demo(args: argparse.Namespace, environ: Mapping[str, str]) -> None:
    port = args.port
    check_port_free(port)
    check_port_free(port + 1)
    given = getattr(args, "data_dir", None)
    if given:
        root = Path(given).resolve()
        for sub in ("a", "b"):
            if (root / sub).exists() and any((root / sub).iterdir()):
                raise CliError(
                    f"{root / sub} is not empty: the demo sets up new instances; give a new "
                    f"--data-dir (to restart a kept demo: fieldcast serve --data-dir "
                    f"{root / sub})")
        root.mkdir(parents=True, exist_ok=True)
    else:
        root = Path(tempfile.mkdtemp(prefix="fieldcast-demo-"))
    env = _instance_env(environ)
    a = DemoInstance("A", port, root / "a", env)
    b = DemoInstance("B", port + 1, root / "b", env)
    instances = (a, b)
    stop = _StopOnSignal()
    codes: list[int | None] = []
    try:
        for inst in instances:
            _say(f"setting up {inst.label} in {inst.data_dir} …")
            inst.init()
        for inst in instances:
            inst.start()
        for inst in instances:
            inst.wait_ready()
            _say(f"{inst.label} is serving {inst.base_url}")
        _say("adding sample data and linking B's tickets to A's bugs …")
        try:
            data = set_up_sample_data(a, b)
        except httpx.HTTPError as exc:
            raise CliError(f"setting up the sample data: {exc}") from None
        _print_ready(a, b, data, root, kept=bool(given))
        while True:
            for inst in instances:
                inst.check_running()
            time.sleep(0.5)
    except KeyboardInterrupt:
        _say("\nstopping A and B …")
    finally:
        stop.stopping = True
        for inst in instances:
            inst.signal()
        codes = [inst.wait_stopped() for inst in instances]
        if not given:
            shutil.rmtree(root, ignore_errors=True)
    failed = [f"{inst.label} exited with status {code}"
              for inst, code in zip(instances, codes, strict=True) if code not in (0, None)]
    if failed:
        raise CliError("; ".join(failed))
    _say("stopped; " + (f"the data stays in {root}" if given else f"removed {root}"))


def _print_ready(a: DemoInstance, b: DemoInstance, data: SampleData, root: Path, *,
                 kept: bool) -> None:
    _say()
    _say("fieldcast demo: two federated instances")
    _say(f"  A  {a.base_url}   tracker Bugs: title (public), status (exported to B), "
         "priority, notes (Staff only)")
    _say(f"  B  {b.base_url}   tracker Support: its own fields, plus A's title and status")
    _say()
    _say("Open side by side (A's bug, B's ticket that follows it):")
    for a_url, b_url, what in data.pairs:
        _say(f"  A {a_url}   B {b_url}   {what}")
    _say()
    _say("Log in (the passwords are shown only now):")
    for inst, user, password, role in data.logins:
        _say(f"  {inst.base_url}/login   {user} / {password}   {role}")
    _say()
    _say("Then change a bug's status on A: B's ticket shows it within a second or two.")
    _say(f"Logs: {a.log_path} and {b.log_path}"
         + ("" if kept else f" (removed with {root} on exit)"))
    _say("Press Ctrl-C to stop both instances.")


def register(sub: Subcommands, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser(
        "demo",
        help="run two federated instances on this machine with sample data",
        description="Start two fieldcast instances on 127.0.0.1, ports P and P+1, set up "
        "users, rights and trackers, link B's items to A's, print the URLs and log-ins, "
        "and run until Ctrl-C.",
    )
    p.add_argument("--port", type=int, default=DEFAULT_PORT,
                   help=f"A's port; B gets the next one (default {DEFAULT_PORT})")
    p.add_argument("--data-dir", default=argparse.SUPPRESS,
                   help="keep the two instances in DIR/a and DIR/b (default: a temporary "
                   "directory, removed on exit)")
    p.set_defaults(func=cmd_demo, creates_instance=True)
