"""Federation delivery: fan-out latency to K partner instances, and the cost of signing.

**Fan-out latency.** One host, a real `fieldcast serve` (SQLite, one process). K
subscriber "instances" are callbacks served by --procs other processes (a raw ASGI app
on Hypercorn, one loopback port per process, each with its own Ed25519 key published at
`/.well-known/fieldcast`). Each callback subscribes to one item through the host's hub
with a signed request, so the host sends it thin signed pings; on a ping naming a version
it does not hold yet, the callback fetches the topic with a signed GET (the project's
`protocol.signatures.sign_request`) and records when it holds the new version. A save's
latency is from its 200 on the host to the moment the last of the K subscribers holds
the new version (time.time(): the processes share a clock). Saves are spaced (the next
one only after all K hold the previous version) so they never coalesce. Aim: K = 100
within 2 s at p99.

**Subscriber side (the full path).** K real fieldcast B instances (``create_app``, each
with its own SQLite database, keys and data directory, served by Hypercorn on its own
loopback port), --instance-procs worker processes each running K/P of them. Each B has a
tracker with a remote field mirroring A's ``title``, an item linked to A's item through
``PUT /api/items/ID/link`` (admin), and one ``/live`` WebSocket subscribed to that item.
A save on A travels: A's projector -> A's signed ping -> B's callback -> B's signed GET
of the topic -> B's change log -> B's hub -> the socket. Measured from A's 200 to (a)
the value visible in B's API (one probe B per worker polls ``GET /api/items/ID`` every
10 ms, so the polling stays cheap) and (b) the ``/live`` frame carrying the value,
on every B (the row's figure is the last of the K, like the fan-out above).

**Signed vs unsigned.** --gens generator processes, each with the host's own HTTP client
(`hub.outbound.Outbound`, 16 requests at once, like the delivery worker), POST
notification bodies to --sinks sink processes (a minimal asyncio HTTP/1.1 server that
answers 202) for --seconds: signed (`sign_request`, rfc9421-ed25519, per request) or
unsigned (the same body and other headers), alternated in the same run. Printed: requests
per second, the generators' CPU per request, and the ratio. Aim: signed >= 0.8x unsigned.

**Profile.** A cProfile of the host's delivery path in this process (the app on SQLite:
claim, compose + sign, POST to a sink, finish) for --profile-pings pings, summed by area.

    python bench/federation.py [--subscribers 10,100] [--saves 15] [--procs 4]
                               [--instances 10,100] [--instance-procs 4]
                               [--seconds 3] [--gens 2] [--sinks 2] [--no-profile]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import cProfile
import json
import os
import pstats
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlencode

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.harness import RunningInstance, free_port

CALLBACK_ENV = {"FIELDCAST_ALLOW_PRIVATE_CALLBACKS": "true",
                "FIELDCAST_ALLOW_HTTP_CALLBACKS": "true"}
FORM = "application/x-www-form-urlencoded"
BODY = json.dumps({"event": 1234, "fieldcast": 1, "fields": ["title"], "item": 42,
                   "sent_at": "2024-05-01T12:00:00Z",
                   "topic": "https://a.example/federation/items/42", "type": "notification",
                   "version": 1234}, separators=(",", ":"), sort_keys=True).encode()


def cpu_seconds(pid: int) -> float:
    """User + system CPU of one process so far (from /proc; 0 where there is none)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def pct(values: list[float], p: int) -> float:
    if not values:
        return float("nan")
    if len(values) < 2:
        return values[0]
    return statistics.quantiles(values, n=100, method="inclusive")[p - 1]


async def read_body(receive: Callable[[], Awaitable[dict[str, Any]]]) -> bytes:
    body = b""
    for _ in range(10_000):  # bounded: a request body is a few hundred bytes here
        message = await receive()
        body += message.get("body", b"")
        if not message.get("more_body"):
            break
    return body


async def respond(send: Callable[[dict[str, Any]], Awaitable[None]], status: int,
                  body: bytes = b"", ctype: str = "text/plain") -> None:
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", ctype.encode())]})
    await send({"type": "http.response.body", "body": body})


# ---- a subscriber process: K/P partner callbacks on one port --------------------------

async def run_subscriber(spec: dict[str, Any]) -> None:
    """Serve ``spec["callbacks"]`` callbacks; on each ping, fetch the topic (signed) and
    print ``held CALLBACK VERSION TIME`` when a new version is held. stdin commands:
    ``subscribe ITEM`` (signed subscribes through the host's hub), ``quit``."""
    from hypercorn.asyncio import serve
    from hypercorn.config import Config

    from keys.publish import well_known_document
    from keys.store import KeyStore
    from protocol.signatures import RFC9421_ED25519, sign_request

    port, host_base, name = spec["port"], spec["host"], spec["name"]
    base = f"http://127.0.0.1:{port}"
    keys = KeyStore(Path(spec["keys"]))
    keys.generate(time.time())
    key = keys.current("ed25519")
    kid = f"{base}/.well-known/fieldcast/keys/{key.record.kid}"
    callbacks = [f"{base}/cb/{name}-{k}" for k in range(spec["callbacks"])]
    held: dict[str, int] = {}
    fetching: dict[str, asyncio.Task[None]] = {}
    limits = httpx.Limits(max_connections=32, max_keepalive_connections=32)
    http = httpx.AsyncClient(timeout=30, limits=limits)

    def signed(method: str, url: str, headers: dict[str, str], body: bytes) -> dict[str, str]:
        return {**headers, **sign_request(RFC9421_ED25519, method, url, list(headers.items()),
                                          body, key.private, kid, time.time())}

    async def fetch(callback: str, topic: str, wanted: int) -> None:
        for _ in range(5):  # a fetch may race a newer save; bounded retries
            r = await http.get(topic, headers=signed("GET", topic, {}, b""))
            if r.status_code != 200:
                print(f"error {callback} GET {r.status_code} {r.text[:200]}", flush=True)
                return
            version = int(r.json()["version"])
            if version > held.get(callback, -1):
                held[callback] = version
                print(f"held {callback} {version} {time.time():.6f}", flush=True)
            if version >= wanted:
                return

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            while (await receive())["type"] != "lifespan.shutdown":
                await send({"type": "lifespan.startup.complete"})
            await send({"type": "lifespan.shutdown.complete"})
            return
        path, method = scope["path"], scope["method"]
        body = await read_body(receive)
        if path == "/.well-known/fieldcast":
            doc = well_known_document(keys, name=name, base_url=base, now=time.time())
            await respond(send, 200, json.dumps(doc).encode(), "application/json")
            return
        callback = base + path
        if method == "GET":  # verification of intent: echo the challenge
            query = parse_qs(scope["query_string"].decode())
            await respond(send, 200, query.get("hub.challenge", [""])[0].encode())
            return
        ping = json.loads(body)
        # A refresh signal: answer at once, fetch after (PROTOCOL.md "Notifications").
        await respond(send, 202)
        if ping["version"] > held.get(callback, -1):
            task = fetching.get(callback)
            if task is None or task.done():
                fetching[callback] = asyncio.create_task(
                    fetch(callback, ping["topic"], int(ping["version"])))

    async def subscribe(item: int) -> None:
        hub = f"{host_base}/federation/hub"
        sem = asyncio.Semaphore(8)

        async def one(callback: str) -> None:
            body = urlencode({"hub.mode": "subscribe", "hub.callback": callback,
                              "hub.topic": f"{host_base}/federation/items/{item}"}).encode()
            async with sem:
                r = await http.post(hub, content=body,
                                    headers=signed("POST", hub, {"Content-Type": FORM}, body))
            r.raise_for_status()

        await asyncio.gather(*(one(cb) for cb in callbacks))
        print("subscribed", flush=True)

    config = Config()
    config.bind = [f"127.0.0.1:{port}"]
    config.accesslog = config.errorlog = None
    config.backlog = 1024
    stop = asyncio.Event()
    server = asyncio.create_task(serve(app, config, shutdown_trigger=stop.wait))  # type: ignore[arg-type]
    await asyncio.sleep(0.3)
    print("ready", flush=True)
    loop = asyncio.get_running_loop()
    while line := (await loop.run_in_executor(None, sys.stdin.readline)).strip():
        if line == "quit":
            break
        if line.startswith("subscribe "):
            await subscribe(int(line.split()[1]))
    stop.set()
    await server
    await http.aclose()


class Child:
    """A child process of this script, talked to by lines on stdin/stdout."""

    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        self.proc = proc

    @classmethod
    async def start(cls, role: str, spec: dict[str, Any]) -> Child:
        proc = await asyncio.create_subprocess_exec(
            sys.executable, __file__, f"--{role}", json.dumps(spec),
            stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE, limit=1 << 24)
        return cls(proc)

    async def line(self, within: float = 60) -> str:
        assert self.proc.stdout is not None
        raw = await asyncio.wait_for(self.proc.stdout.readline(), within)
        if not raw:
            raise RuntimeError(f"child {self.proc.pid} exited")
        return raw.decode().strip()

    async def expect(self, word: str, within: float = 60) -> str:
        line = await self.line(within)
        if not line.startswith(word):
            raise RuntimeError(f"child said {line!r}, expected {word!r}")
        return line

    async def say(self, line: str) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(line.encode() + b"\n")
        await self.proc.stdin.drain()

    async def close(self) -> None:
        with contextlib.suppress(ConnectionError, RuntimeError):
            await self.say("quit")
        try:
            await asyncio.wait_for(self.proc.wait(), 15)
        except TimeoutError:
            self.proc.kill()
            await self.proc.wait()


async def fanout(host: RunningInstance, admin: httpx.AsyncClient, k: int,
                 args: argparse.Namespace, root: Path) -> dict[str, Any]:
    procs = max(1, min(args.procs, k))
    r = await admin.post("/api/trackers/bench/items", json={"fields": {"title": "v0"}})
    r.raise_for_status()
    item = int(r.json()["id"])
    children = []
    for p in range(procs):
        n = k // procs + (1 if p < k % procs else 0)
        children.append(await Child.start("subscriber", {
            "port": free_port(), "host": host.base_url, "name": f"k{k}p{p}", "callbacks": n,
            "keys": str(root / f"sub-k{k}-p{p}")}))
    held: dict[str, tuple[int, float]] = {}
    errors: list[str] = []
    try:
        for c in children:
            await c.expect("ready")
        for c in children:
            await c.say(f"subscribe {item}")
        for c in children:
            await c.expect("subscribed")
        deadline = time.monotonic() + 60
        while True:
            subs = (await admin.get("/api/federation/subscriptions")).json()["subscriptions"]
            mine = [s for s in subs if s["item"] == item]
            if len(mine) == k and all(s["state"] == "active" for s in mine):
                break
            if time.monotonic() > deadline:
                raise RuntimeError(f"{k} subscriptions not active in 60 s")
            await asyncio.sleep(0.1)

        async def listen(c: Child) -> None:
            while True:
                line = await c.line(3600)
                if line.startswith("held "):
                    _, cb, version, at = line.split()
                    held[cb] = (int(version), float(at))
                elif line.startswith("error"):
                    errors.append(line)

        listeners = [asyncio.create_task(listen(c)) for c in children]
        cpu0 = {"host": cpu_seconds(host.process.pid) if host.process else 0.0}
        latencies: list[float] = []
        timeouts = 0
        t_start = time.monotonic()
        for n in range(args.saves + 1):  # the first save warms connections and key caches
            r = await admin.patch(f"/api/items/{item}/fields/title", json={"value": f"v{n + 1}"})
            r.raise_for_status()
            t0, version = time.time(), int(r.json()["event"])  # the topic's version after it
            for _ in range(5000):  # at most 10 s
                if len(held) == k and min(v for v, _ in held.values()) >= version:
                    break
                await asyncio.sleep(0.002)
            if len(held) < k or min(v for v, _ in held.values()) < version:
                timeouts += 1
            elif n:
                latencies.append(max(t for _, t in held.values()) - t0)
            await asyncio.sleep(args.gap)
        elapsed = time.monotonic() - t_start
        host_cpu = ((cpu_seconds(host.process.pid) if host.process else 0.0) - cpu0["host"])
        for task in listeners:
            task.cancel()
    finally:
        for c in children:
            await c.close()
    return {"k": k, "procs": procs, "latencies": latencies, "timeouts": timeouts,
            "errors": errors, "host_cpu_per_save": host_cpu / (args.saves + 1),
            "elapsed": elapsed}


# ---- the subscriber side: real B instances, their API and their /live sockets ----------

async def run_bworker(spec: dict[str, Any]) -> None:
    """Run ``spec["count"]`` B instances linked to A's item, one /live socket each.

    stdout: ``ready``, then ``frame INDEX VALUE TIME`` for each /live update of the
    mirrored field and ``api INDEX VALUE TIME`` when the probe B's API shows a value.
    stdin: ``expect VALUE`` (the probe polls its API for it), ``quit``.
    """
    import shutil

    import websockets
    from hypercorn.asyncio import serve
    from hypercorn.config import Config

    from instance import accounts
    from instance.app import create_app
    from instance.config import Settings
    from instance.db import Database, make_engine, migrate
    from keys.store import KeyStore

    root, host, name = Path(spec["root"]), spec["host"], spec["name"]
    os.makedirs(root, exist_ok=True)
    template = root / f"{name}-template.db"
    engine = make_engine(f"sqlite+aiosqlite:///{template}")
    await migrate(engine)  # once; every B starts from a copy
    await engine.dispose()
    stops: list[asyncio.Event] = []
    servers: list[asyncio.Task[None]] = []
    clients: list[httpx.AsyncClient] = []
    b_items: list[int] = []
    sockets: list[Any] = []
    password = "bench b password"

    async def frames(index: int, ws: Any) -> None:
        with contextlib.suppress(websockets.ConnectionClosed):
            async for raw in ws:
                at = time.time()
                msg = json.loads(raw)
                if msg.get("type") == "ping":  # hub/LIVE.md: silent sockets are closed
                    await ws.send('{"type": "pong"}')
                if msg.get("type") != "updates":
                    continue
                for u in msg["updates"]:
                    if u.get("field") == "their_title" and ready.is_set():
                        print(f"frame {index} {u['value']} {at:.6f}", flush=True)

    # Each socket is read (and answers the hub's pings) from the moment it subscribes:
    # setting up many Bs takes longer than the hub waits for a silent socket.
    ready = asyncio.Event()
    readers: list[asyncio.Task[None]] = []

    async def start_one(i: int) -> None:
        port = free_port()
        base = f"http://127.0.0.1:{port}"
        data = root / f"{name}-{i}"
        data.mkdir(parents=True)
        shutil.copy(template, data / "fieldcast.db")
        settings = Settings(
            data_dir=data, database_url=f"sqlite+aiosqlite:///{data / 'fieldcast.db'}",
            base_url=base, instance_name=f"{name}-{i}", allow_private_callbacks=True,
            allow_http_callbacks=True, remote_lease_seconds=600, argon2_time_cost=1,
            argon2_memory_kib=8, argon2_parallelism=1).replace()
        KeyStore(data / "keys").generate(time.time())
        app = create_app(settings, database=Database(settings.effective_database_url))
        config = Config()
        config.bind = [f"127.0.0.1:{port}"]
        config.accesslog = config.errorlog = None
        stop = asyncio.Event()
        stops.append(stop)
        servers.append(asyncio.create_task(
            serve(app, config, shutdown_trigger=stop.wait)))  # type: ignore[arg-type]
        c = httpx.AsyncClient(base_url=base, timeout=30)
        for _ in range(500):
            with contextlib.suppress(httpx.HTTPError):
                if (await c.get("/healthz")).status_code == 200:
                    break
            await asyncio.sleep(0.02)
        state = app.extensions["fieldcast"]
        async with state.change_log.write() as session:
            await accounts.create_user(session, state.passwords, username="admin",
                                       password=password, is_admin=True, groups=[])
        (await c.post("/api/login", json={"username": "admin", "password": password})
         ).raise_for_status()
        (await c.post("/api/trackers", json={"slug": "mirror"})).raise_for_status()
        (await c.post("/api/trackers/mirror/fields", json={
            "name": "their_title", "label": "their title", "type": "remote",
            "options": {"source": {"instance": host, "tracker": "bench",
                                   "field": "title"}}})).raise_for_status()
        r = await c.post("/api/trackers/mirror/items", json={"fields": {}})
        r.raise_for_status()
        item = int(r.json()["id"])
        r = await c.put(f"/api/items/{item}/link",
                        json={"url": f"{host}/federation/items/{spec['a_item']}"})
        if r.status_code != 200:
            raise RuntimeError(f"link failed: {r.status_code} {r.text[:300]}")
        for _ in range(1000):  # the subscription is verified by A asynchronously
            subs = (await c.get("/api/federation/outgoing")).json()["subscriptions"]
            if subs and subs[0]["state"] == "active":
                break
            await asyncio.sleep(0.05)
        else:
            raise RuntimeError(f"{name}-{i}: subscription never active")
        cookie = "; ".join(f"{k}={v}" for k, v in c.cookies.items())
        ws = await websockets.connect(f"ws://127.0.0.1:{port}/live",
                                      additional_headers={"Cookie": cookie},
                                      max_size=1 << 20)
        json.loads(await ws.recv())  # hello
        await ws.send(json.dumps({"type": "subscribe", "items": [item]}))
        while json.loads(await ws.recv())["type"] != "subscribed":
            pass
        clients.append(c)
        b_items.append(item)
        sockets.append(ws)
        readers.append(asyncio.create_task(frames(i, ws)))

    for i in range(spec["count"]):  # one at a time: A verifies each subscription
        await start_one(i)

    async def probe(value: str) -> None:
        for _ in range(1500):  # at most ~15 s
            r = await clients[0].get(f"/api/items/{b_items[0]}")
            if r.json()["fields"]["their_title"]["value"] == value:
                print(f"api 0 {value} {time.time():.6f}", flush=True)
                return
            await asyncio.sleep(0.01)

    probes: set[asyncio.Task[None]] = set()
    ready.set()
    print("ready", flush=True)
    loop = asyncio.get_running_loop()
    while line := (await loop.run_in_executor(None, sys.stdin.readline)).strip():
        if line == "quit":
            break
        if line.startswith("expect "):
            task = asyncio.create_task(probe(line.split()[1]))
            probes.add(task)
            task.add_done_callback(probes.discard)
    for task in (*readers, *probes):
        task.cancel()
    for ws in sockets:
        await ws.close()
    for c in clients:
        await c.aclose()
    for stop in stops:
        stop.set()
    await asyncio.gather(*servers, return_exceptions=True)


async def subscriber_side(host: RunningInstance, admin: httpx.AsyncClient, k: int,
                          args: argparse.Namespace, root: Path) -> dict[str, Any]:
    procs = max(1, min(args.instance_procs, k))
    r = await admin.post("/api/trackers/bench/items", json={"fields": {"title": "w0"}})
    r.raise_for_status()
    item = int(r.json()["id"])
    workers = []
    t_setup = time.monotonic()
    for p in range(procs):
        n = k // procs + (1 if p < k % procs else 0)
        workers.append(await Child.start("bworker", {
            "host": host.base_url, "a_item": item, "count": n, "name": f"b{k}i{item}w{p}",
            "root": str(root / f"bside-{item}-{p}")}))
    frames: dict[str, dict[tuple[int, int], float]] = {}
    api: dict[str, list[float]] = {}
    try:
        for w in workers:
            await w.expect("ready", within=60 + 10 * k)
        setup = time.monotonic() - t_setup

        async def listen(p: int, w: Child) -> None:
            while True:
                line = await w.line(3600)
                kind, index, value, at = line.split()
                if kind == "frame":
                    frames.setdefault(value, {})[(p, int(index))] = float(at)
                elif kind == "api":
                    api.setdefault(value, []).append(float(at))

        listeners = [asyncio.create_task(listen(p, w)) for p, w in enumerate(workers)]

        def workers_cpu() -> float:
            return sum(cpu_seconds(w.proc.pid) for w in workers)

        idle0 = workers_cpu()
        await asyncio.sleep(3)  # what K idle B instances cost: their timers and polls
        idle = (workers_cpu() - idle0) / 3
        cpu0 = cpu_seconds(host.process.pid) if host.process else 0.0
        bcpu0, t_saves = workers_cpu(), time.monotonic()
        last: list[float] = []
        every: list[float] = []
        api_lat: list[float] = []
        seen: list[int] = []  # for each save that timed out: how many Bs had the frame
        missing: set[tuple[int, int]] = set()  # (worker, index) of Bs that lacked one
        timeouts = 0
        for n in range(args.saves + 1):  # the first save warms connections and caches
            value = f"w{n + 1}"
            r = await admin.patch(f"/api/items/{item}/fields/title", json={"value": value})
            r.raise_for_status()
            t0 = time.time()
            for w in workers:
                await w.say(f"expect {value}")
            for _ in range(7500):  # at most 15 s
                if len(frames.get(value, {})) == k and len(api.get(value, [])) == procs:
                    break
                await asyncio.sleep(0.002)
            got = frames.get(value, {})
            if len(got) < k:
                timeouts += 1
                seen.append(len(got))
                everyone = {(p, i) for p, w in enumerate(workers)
                            for i in range(k // procs + (1 if p < k % procs else 0))}
                missing.update(everyone - set(got))
            elif n:
                last.append(max(got.values()) - t0)
                every.extend(at - t0 for at in got.values())
                api_lat.extend(at - t0 for at in api.get(value, []))
            await asyncio.sleep(args.gap)
        host_cpu = (cpu_seconds(host.process.pid) if host.process else 0.0) - cpu0
        b_cpu = workers_cpu() - bcpu0 - idle * (time.monotonic() - t_saves)
        for task in listeners:
            task.cancel()
    finally:
        for w in workers:
            await w.close()
    return {"k": k, "procs": procs, "last": last, "every": every, "api": api_lat,
            "timeouts": timeouts, "seen": seen, "missing": sorted(missing), "setup": setup,
            "b_idle": idle,
            "b_cpu_per_save": b_cpu / (args.saves + 1),
            "host_cpu_per_save": host_cpu / (args.saves + 1)}


# ---- signed vs unsigned: sinks and generators -----------------------------------------

async def run_sink(spec: dict[str, Any]) -> None:
    """A minimal keep-alive HTTP/1.1 server: reads each request and answers 202."""
    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            for _ in range(10_000_000):  # one connection's requests, bounded
                head = await reader.readuntil(b"\r\n\r\n")
                length = 0
                for line in head.split(b"\r\n"):
                    if line[:15].lower() == b"content-length:":
                        length = int(line[15:])
                if length:
                    await reader.readexactly(length)
                status = b"404 Not Found" if head.startswith(b"GET") else b"202 Accepted"
                writer.write(b"HTTP/1.1 " + status + b"\r\ncontent-length: 0\r\n\r\n")
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", spec["port"], backlog=1024)
    print("ready", flush=True)
    loop = asyncio.get_running_loop()
    await loop.run_in_executor(None, sys.stdin.readline)
    server.close()


async def run_generator(spec: dict[str, Any]) -> None:
    """On ``go MODE SECONDS``: POST BODY to the sinks with 16 at once for SECONDS, signed
    or not, with the host's HTTP client; print ``done COUNT ERRORS CPU_SECONDS``."""
    from hub.outbound import Outbound, OutboundConfig
    from keys.store import KeyStore
    from protocol.addresses import AddressPolicy
    from protocol.signatures import RFC9421_ED25519, sign_request

    keys = KeyStore(Path(spec["keys"]))
    keys.generate(time.time())
    key = keys.current("ed25519")
    kid = f"http://127.0.0.1:1/.well-known/fieldcast/keys/{key.record.kid}"
    out = Outbound(OutboundConfig(policy=AddressPolicy(allow_private=True, allow_http=True)))
    urls = [f"http://127.0.0.1:{p}/cb/{n}?token=t1" for p in spec["ports"] for n in range(8)]
    base_headers = [("link", '<http://127.0.0.1:1/federation/hub>; rel="hub", '
                     '<https://a.example/federation/items/42>; rel="self"'),
                    ("content-type", "application/json")]
    print("ready", flush=True)
    loop = asyncio.get_running_loop()
    while (line := (await loop.run_in_executor(None, sys.stdin.readline)).strip()) != "quit":
        if not line:
            break
        _, mode, seconds = line.split()
        stop_at = time.monotonic() + float(seconds)
        count = errors = 0
        cpu0 = time.process_time()

        async def worker(w: int, mode: str = mode, stop_at: float = stop_at) -> None:
            nonlocal count, errors
            i = w
            while time.monotonic() < stop_at:
                url = urls[i % len(urls)]
                i += 16
                headers = list(base_headers)
                if mode == "signed":
                    headers += sign_request(RFC9421_ED25519, "POST", url, headers, BODY,
                                            key.private, kid, time.time()).items()
                r = await out.request("POST", url, headers=headers, body=BODY, max_bytes=4096)
                if r.status == 202:
                    count += 1
                else:
                    errors += 1

        await asyncio.gather(*(worker(w) for w in range(16)))
        print(f"done {count} {errors} {time.process_time() - cpu0:.4f}", flush=True)
    await out.aclose()


async def signing(args: argparse.Namespace, root: Path) -> list[dict[str, Any]]:
    ports = [free_port() for _ in range(args.sinks)]
    sinks = [await Child.start("sink", {"port": p}) for p in ports]
    gens = [await Child.start("generator", {"ports": ports, "keys": str(root / f"gen{g}")})
            for g in range(args.gens)]
    rows = []
    try:
        for c in (*sinks, *gens):
            await c.expect("ready")
        for mode in ("unsigned", "signed", "unsigned", "signed"):
            sink_cpu0 = sum(cpu_seconds(s.proc.pid) for s in sinks)
            t0 = time.monotonic()
            for g in gens:
                await g.say(f"go {mode} {args.seconds}")
            results = [(await g.expect("done", args.seconds + 60)).split()[1:] for g in gens]
            wall = time.monotonic() - t0
            count = sum(int(r[0]) for r in results)
            rows.append({"mode": mode, "rate": count / args.seconds,
                         "errors": sum(int(r[1]) for r in results),
                         "gen_us": sum(float(r[2]) for r in results) / max(count, 1) * 1e6,
                         "sink_cpu": (sum(cpu_seconds(s.proc.pid) for s in sinks) - sink_cpu0)
                         / wall * 100})
    finally:
        for c in (*gens, *sinks):
            await c.close()
    return rows


def sign_only(seconds: float = 1.0) -> float:
    """sign_request alone, per second, in this process."""
    from keys.store import KeyStore
    from protocol.signatures import RFC9421_ED25519, sign_request

    with tempfile.TemporaryDirectory() as tmp:
        keys = KeyStore(Path(tmp))
        keys.generate(time.time())
        key = keys.current("ed25519")
        headers = [("content-type", "application/json")]
        n, stop_at = 0, time.perf_counter() + seconds
        while time.perf_counter() < stop_at:
            sign_request(RFC9421_ED25519, "POST", "http://127.0.0.1:9/cb/1?token=t1", headers,
                         BODY, key.private, "http://127.0.0.1:9/k", time.time())
            n += 1
        return n / seconds


# ---- profile of the host's delivery path, in process ----------------------------------

AREAS = (("sign", ("protocol/signatures", "protocol/rfc9421", "http_message_signatures",
                   "cryptography", "protocol/digest", "http_sf")),
         ("http client", ("hub/outbound", "httpcore", "h11", "anyio", "ssl")),
         ("database", ("sqlalchemy", "aiosqlite", "sqlite3", "instance/federation/queue",
                       "instance/rights")),
         ("compose", ("instance/federation/notify", "protocol/documents", "protocol/links")),
         ("worker", ("hub/delivery", "protocol/delivery", "protocol/states")))


async def profile(args: argparse.Namespace, root: Path) -> str:
    from datetime import UTC, datetime, timedelta

    from sqlalchemy import func, select

    from instance.app import create_app
    from instance.config import Settings
    from instance.db import Database, make_engine, migrate
    from instance.federation.service import FEDERATION_KEY
    from instance.models import FederationDelivery, FederationSubscription
    from keys.store import KeyStore

    port = free_port()
    sink = await Child.start("sink", {"port": port})
    await sink.expect("ready")
    settings = Settings(data_dir=root / "prof", allow_private_callbacks=True,
                        allow_http_callbacks=True, argon2_time_cost=1, argon2_memory_kib=8,
                        argon2_parallelism=1).replace()
    settings.data_dir.mkdir(parents=True)
    KeyStore(settings.data_dir / "keys").generate(time.time())
    engine = make_engine(settings.effective_database_url)
    await migrate(engine)
    await engine.dispose()
    app = create_app(settings, database=Database(settings.effective_database_url))
    state = app.extensions["fieldcast"]
    service = app.extensions[FEDERATION_KEY]
    try:
        async with app.test_app():
            from instance import accounts
            async with state.change_log.write() as session:
                await accounts.create_user(session, state.passwords, username="admin",
                                           password="bench pw 1234", is_admin=True, groups=[])
            c = app.test_client()
            await c.post("/api/login", json={"username": "admin", "password": "bench pw 1234"})
            await c.post("/api/trackers", json={"slug": "p"})
            await c.post("/api/trackers/p/fields", json={
                "name": "title", "label": "title",
                "export": {"mode": "public", "partners": []}})
            items = []
            for i in range(10):
                r = await c.post("/api/trackers/p/items", json={"fields": {"title": f"{i}"}})
                items.append(int((await r.get_json())["id"]))
            now = datetime.now(UTC)
            per_item = max(1, args.profile_pings // len(items))
            async with state.db.write() as session:  # partner subscriptions, as verified
                for i in items:
                    for n in range(per_item):
                        session.add(FederationSubscription(
                            topic=f"{settings.base_url}/federation/items/{i}", item_id=i,
                            callback=f"http://127.0.0.1:{port}/cb/{i}-{n}?token=t1",
                            subscriber_origin=f"http://127.0.0.1:{port}", state="active",
                            lease_seconds=86400, lease_expires_at=now + timedelta(days=1),
                            created_at=now, updated_at=now, verified_at=now))
            await service.delivery.stop()  # queue first, then profile the sending alone
            for i in items:
                await c.patch(f"/api/items/{i}/fields/title", json={"value": "new"})
            total = per_item * len(items)
            for _ in range(200):
                async with state.db.read() as session:
                    queued = await session.scalar(select(func.count()).select_from(
                        FederationDelivery).where(FederationDelivery.state == "pending"))
                if queued == total:
                    break
                await asyncio.sleep(0.05)
            prof = cProfile.Profile()
            t0 = time.perf_counter()
            prof.enable()
            await service.delivery.drain()
            prof.disable()
            wall = time.perf_counter() - t0
    finally:
        await sink.close()
    stats = pstats.Stats(prof)
    own: dict[str, float] = {}
    total_tt = 0.0
    for (file, _line, _fn), (_cc, _nc, tt, _ct, _callers) in stats.stats.items():  # type: ignore[attr-defined]
        total_tt += tt
        area = next((a for a, keys in AREAS if any(k in file for k in keys)), None)
        if area is None:  # named by its package, so "other" still says where
            parts = Path(file).parts
            area = "other: " + ("/".join(parts[-2:]) if "site-packages" not in parts
                                else parts[parts.index("site-packages") + 1])
        own[area] = own.get(area, 0.0) + tt
    lines = [f"profile: {total} signed thin pings by the delivery worker (16 at once) in "
             f"{wall:.2f} s = {total / wall:.0f}/s in one process, "
             f"{total_tt / total * 1e6:.0f} us of CPU per ping (cProfile, its overhead "
             "included); own time by area:"]
    for area, tt in sorted(own.items(), key=lambda kv: -kv[1])[:10]:
        lines.append(f"  {area:<28} {tt / total_tt:>5.0%}  {tt / total * 1e6:>6.0f} us/ping")
    lines.append("  top functions by own time:")
    stats.sort_stats("tottime")
    for (file, line, fn), (_cc, nc, tt, _ct, _c) in sorted(
            stats.stats.items(), key=lambda kv: -kv[1][2])[:8]:  # type: ignore[attr-defined]
        short = "/".join(Path(file).parts[-2:])
        lines.append(f"    {tt / total_tt:>5.0%} {nc:>7} calls  {short}:{line} {fn}")
    return "\n".join(lines)


# ---- the driver ----------------------------------------------------------------------

async def main(args: argparse.Namespace) -> None:
    counts = [int(k) for k in args.subscribers.split(",") if k]
    print(f"fieldcast federation bench: {os.cpu_count()} cores shared by the host, the "
          "subscribers, the generators and this driver")
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        host = RunningInstance.create(root, "host", extra_env=CALLBACK_ENV)
        await asyncio.to_thread(host.start)
        try:
            admin = await host.client()
            (await admin.post("/api/trackers", json={"slug": "bench"})).raise_for_status()
            (await admin.post("/api/trackers/bench/fields", json={
                "name": "title", "label": "title",
                "export": {"mode": "public", "partners": []}})).raise_for_status()
            print(f"\nfan-out latency: save's 200 -> the last of K partners holds the new "
                  f"version (thin signed ping, then a signed GET of the topic); {args.saves} "
                  f"saves per row, spaced {args.gap:g} s after all hold the previous one")
            print(f"{'K':>5} {'procs':>5} {'p50 ms':>8} {'p99 ms':>8} {'max ms':>8} "
                  f"{'host CPU ms/save':>16} {'timeouts':>8}")
            results = []
            for k in counts:
                res = await fanout(host, admin, k, args, root)
                results.append(res)
                lat = [x * 1000 for x in res["latencies"]]
                print(f"{k:>5} {res['procs']:>5} {pct(lat, 50):>8.0f} {pct(lat, 99):>8.0f} "
                      f"{max(lat, default=float('nan')):>8.0f} "
                      f"{res['host_cpu_per_save'] * 1000:>16.0f} {res['timeouts']:>8}",
                      flush=True)
                for e in res["errors"][:3]:
                    print("   ", e)
            bside = []
            if args.instances:
                print(f"\nsubscriber side: save's 200 on A -> (a) the value in B's API "
                      f"(one probe B per worker process) and (b) the /live frame on B; "
                      f"K real B instances in --instance-procs processes; {args.saves} "
                      "saves per row")
                print(f"{'K':>5} {'procs':>5} {'API p50':>8} {'API p99':>8} "
                      f"{'frame p50':>9} {'frame p99':>9} {'last-of-K p50':>13} "
                      f"{'last-of-K p99':>13} {'host CPU ms/save':>16} {'timeouts':>8} "
                      f"{'setup s':>7}")
                for k in (int(x) for x in args.instances.split(",") if x):
                    res = await subscriber_side(host, admin, k, args, root)
                    bside.append(res)
                    ms = {key: [x * 1000 for x in res[key]] for key in ("api", "every", "last")}
                    print(f"{k:>5} {res['procs']:>5} {pct(ms['api'], 50):>8.0f} "
                          f"{pct(ms['api'], 99):>8.0f} {pct(ms['every'], 50):>9.0f} "
                          f"{pct(ms['every'], 99):>9.0f} {pct(ms['last'], 50):>13.0f} "
                          f"{pct(ms['last'], 99):>13.0f} "
                          f"{res['host_cpu_per_save'] * 1000:>16.0f} {res['timeouts']:>8} "
                          f"{res['setup']:>7.0f}", flush=True)
                    print(f"      B workers' CPU: idle {res['b_idle']:.0%} of a core; "
                          f"per save, above idle, {res['b_cpu_per_save'] * 1000:.0f} ms "
                          f"({res['b_cpu_per_save'] * 1000 / k:.1f} ms per B)")
                    if res["seen"]:
                        print(f"      timed out (15 s): frames seen by {res['seen']} of {k}; "
                              f"B (worker, index) ever missing one: {res['missing'][:12]}")
            await admin.aclose()
        finally:
            host.stop()
        for res in results:
            if res["k"] == 100:
                p99 = pct(res["latencies"], 99)
                print(f"aim: K = 100 within 2 s at p99: {'yes' if p99 <= 2 else 'NO'} "
                      f"({p99 * 1000:.0f} ms)")

        print(f"\nsigned vs unsigned POSTs of the same {len(BODY)}-byte notification: "
              f"{args.gens} generator process(es) x 16 at once with hub.outbound.Outbound, "
              f"{args.sinks} sink process(es), {args.seconds:g} s per row")
        print(f"{'mode':<9} {'POST/s':>8} {'gen CPU us/req':>14} {'sink CPU%':>9} {'errors':>6}")
        rows = await signing(args, root)
        for r in rows:
            print(f"{r['mode']:<9} {r['rate']:>8.0f} {r['gen_us']:>14.0f} "
                  f"{r['sink_cpu']:>9.0f} {r['errors']:>6}", flush=True)
        best = {m: max(r["rate"] for r in rows if r["mode"] == m) for m in ("signed", "unsigned")}
        cost = {m: min(r["gen_us"] for r in rows if r["mode"] == m)
                for m in ("signed", "unsigned")}
        ratio = best["signed"] / best["unsigned"]
        print(f"signed / unsigned: {ratio:.2f}x in POST/s (best of 2 each), "
              f"{cost['unsigned'] / cost['signed']:.2f}x in generator CPU per request; "
              f"sign_request alone: {sign_only():,.0f}/s in one process")
        print(f"aim: signed >= 0.8x unsigned: {'yes' if ratio >= 0.8 else 'NO'}")

        if args.profile:
            print()
            print(await profile(args, root))


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--subscribers", default="10,100",
                        help="comma-separated K values ('' to skip)")
    parser.add_argument("--saves", type=int, default=15, help="measured saves per K")
    parser.add_argument("--gap", type=float, default=0.2,
                        help="seconds between one save being held by all and the next")
    parser.add_argument("--procs", type=int, default=4, help="subscriber processes per K")
    parser.add_argument("--instances", default="10,100",
                        help="comma-separated K of real B instances ('' to skip)")
    parser.add_argument("--instance-procs", type=int, default=4,
                        help="worker processes running the B instances")
    parser.add_argument("--seconds", type=float, default=3.0, help="per signed/unsigned row")
    parser.add_argument("--gens", type=int, default=2, help="generator processes")
    parser.add_argument("--sinks", type=int, default=2, help="sink processes")
    parser.add_argument("--profile-pings", type=int, default=500)
    parser.add_argument("--no-profile", dest="profile", action="store_false")
    return parser.parse_args()


if __name__ == "__main__":
    roles = {"--subscriber": run_subscriber, "--sink": run_sink, "--generator": run_generator,
             "--bworker": run_bworker}
    if len(sys.argv) == 3 and sys.argv[1] in roles:
        asyncio.run(roles[sys.argv[1]](json.loads(sys.argv[2])))
        sys.exit(0)
    asyncio.run(main(parse_args()))
