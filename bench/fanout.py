"""Live fan-out: field updates delivered per second to N WebSocket clients, beside a bare
Quart + Hypercorn broadcast measured in the same run.

fieldcast: a real `fieldcast serve` (SQLite, one process). N clients, in a separate
process, are logged in as ten users, two of whom may not read the field "secret", and
all subscribe to one item. A writer saves field changes through the HTTP API
(PATCH /api/items/ID/fields/NAME), alternating "title" (everyone reads it) and "secret",
so the per-field filter is exercised.
Baseline: a tiny Quart app in its own Hypercorn process: a queue per connection, no
database, no filtering; each POST /publish puts the message on every queue and each
connection's task sends from its own queue.

Each row runs for a warm-up, then counts for --seconds. Every written value carries its
send time (time.time(): the processes share a clock); clients record receipt, so latency
is write-to-receipt. The hub batches updates into frames (and keeps only the newest value
of a field for a socket whose backlog passes its bound), so updates and frames are
counted apart, and "deliv%" is the share of (write x reader) pairs that arrived.
Modes: "sat" (--writers concurrent writers, as fast as the server answers) and a fixed
write rate (--rate; by default the rate that would deliver half the baseline's updates/s,
the issue's latency bar). Each client count is run with permessage-deflate off and on
(--deflate; the websockets client offers it or not; both servers accept it: fieldcast
runs with live_deflate = true here, its default being off). CPU% is per process,
100 = one core. Last, the fieldcast server is profiled with py-spy (if installed) during
one more saturation phase at the largest client count.

    python bench/fanout.py [--clients 100,1000] [--seconds 3] [--rate R] [--writers 8]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import random
import re
import resource
import shutil
import statistics
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from hub.hub import HubConfig
from tests.harness import RunningInstance, free_port

USERS = [f"reader{n}" for n in range(10)]
STAFF = 8  # reader0..reader7 are in Staff and read "secret"; reader8 and reader9 do not
PASSWORD = "bench password 1"
FIELDS = ("title", "secret")
STAMP = re.compile(r"t=(\d+\.\d+)")
SAMPLED_SOCKETS = 50  # sockets whose every update's latency is recorded
MAX_LATENCIES = 20000  # per row, sent back over a pipe
DEFLATE = {"off": (False,), "on": (True,), "both": (False, True)}


# ---- the client process --------------------------------------------------------------

async def run_clients(spec: dict[str, Any]) -> None:
    """Open N sockets, then count between "start" and "stop" lines on stdin until "quit"."""
    from websockets.asyncio.client import ClientConnection, connect

    n, cookies = spec["clients"], spec["cookies"]
    # Whole blocks of len(cookies) sockets, so every user is among the sampled ones.
    every = max(1, n // SAMPLED_SOCKETS)
    state = {"counting": False, "updates": 0, "frames": 0, "closed": 0}
    latencies: list[float] = []
    gate = asyncio.Semaphore(50)  # Hypercorn's listen backlog is 100

    async def open_one(i: int) -> ClientConnection:
        async with gate:
            ws = await connect(
                spec["url"], additional_headers={"Cookie": cookies[i % len(cookies)]},
                compression="deflate" if spec["deflate"] else None,
                ping_interval=None, max_queue=None, open_timeout=60)
            if spec["subscribe"]:
                await ws.recv()  # hello
                await ws.send(json.dumps({"type": "subscribe", "items": [spec["item"]]}))
                while json.loads(await ws.recv())["type"] != "subscribed":
                    pass
            return ws

    async def read(i: int, ws: ClientConnection) -> None:
        sampled = (i // len(cookies)) % every == 0
        try:
            async for raw in ws:
                assert isinstance(raw, str)
                if raw.startswith('{"type":"ping"'):
                    await ws.send('{"type":"pong"}')
                    continue
                if not state["counting"]:
                    continue
                now = time.time()
                state["frames"] += 1
                # Parsing every frame would make this process the bottleneck: updates are
                # counted by their marker, stamps read by a regex on sampled sockets only.
                state["updates"] += raw.count('"field":')
                if sampled:
                    latencies.extend(now - float(t) for t in STAMP.findall(raw))
        finally:
            state["closed"] += 1  # the server closed it (too slow?) or we did

    sockets = await asyncio.gather(*(open_one(i) for i in range(n)))
    readers = [asyncio.create_task(read(i, ws)) for i, ws in enumerate(sockets)]
    print("ready", flush=True)
    loop = asyncio.get_running_loop()
    started = 0.0
    while (line := (await loop.run_in_executor(None, sys.stdin.readline)).strip()) != "quit":
        if line == "start":
            state.update(updates=0, frames=0)
            latencies.clear()
            state["counting"], started = True, time.time()
        elif line == "stop":
            state["counting"] = False
            sample = latencies if len(latencies) <= MAX_LATENCIES else random.sample(
                latencies, MAX_LATENCIES)
            print(json.dumps({"updates": state["updates"], "frames": state["frames"],
                              "seconds": time.time() - started, "closed": state["closed"],
                              "latencies": sample}), flush=True)
        elif not line:
            break  # the driver went away
    for task in readers:
        task.cancel()
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(asyncio.gather(*(ws.close() for ws in sockets),
                                              return_exceptions=True), 10)


# ---- the baseline server -------------------------------------------------------------

def baseline_app() -> Any:
    from quart import Quart, request, websocket

    app = Quart("baseline")
    queues: set[asyncio.Queue[str]] = set()

    @app.post("/publish")
    async def publish() -> str:
        message = (await request.get_data()).decode()
        for q in queues:
            q.put_nowait(message)
        return ""

    @app.websocket("/ws")
    async def ws() -> None:
        q: asyncio.Queue[str] = asyncio.Queue()
        await websocket.accept()  # Quart would accept only on the first send
        queues.add(q)
        try:
            while True:
                await websocket.send(await q.get())
        finally:
            queues.discard(q)

    return app


def serve_baseline(port: int) -> None:
    from hypercorn.asyncio import serve
    from hypercorn.config import Config

    config = Config()
    config.bind = [f"127.0.0.1:{port}"]
    config.errorlog = None
    asyncio.run(serve(baseline_app(), config))


# ---- the driver ----------------------------------------------------------------------

def cpu_seconds(pid: int) -> float:
    """User + system CPU of one process so far (from /proc; 0 where there is none)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def machine_cpu() -> tuple[float, float]:
    """(busy, total) CPU seconds of the whole machine, summed over cores (/proc/stat)."""
    with open("/proc/stat") as f:
        ticks = [int(x) for x in f.readline().split()[1:]]
    idle = ticks[3] + ticks[4]  # idle + iowait
    hz = os.sysconf("SC_CLK_TCK")
    return (sum(ticks[:8]) - idle) / hz, sum(ticks[:8]) / hz


def pct(values: list[float], p: int) -> float:
    if len(values) < 2:
        return float("nan")
    return statistics.quantiles(values, n=100)[p - 1] * 1000


class Clients:
    """The client process for one (system, N, deflate): connects once, counts per phase."""

    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        self.proc = proc

    @classmethod
    async def open(cls, spec: dict[str, Any]) -> Clients:
        proc = await asyncio.create_subprocess_exec(
            sys.executable, __file__, "--client-spec", json.dumps(spec),
            stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE, limit=1 << 24)
        self = cls(proc)
        line = await self._line(120)
        if line != "ready":
            raise RuntimeError(f"clients failed to start: {line!r}")
        return self

    async def _line(self, within: float) -> str:
        assert self.proc.stdout is not None
        return (await asyncio.wait_for(self.proc.stdout.readline(), within)).decode().strip()

    async def _say(self, line: str) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(line.encode() + b"\n")
        await self.proc.stdin.drain()

    async def start(self) -> None:
        await self._say("start")

    async def stop(self) -> dict[str, Any]:
        await self._say("stop")
        result: dict[str, Any] = json.loads(await self._line(60))
        return result

    async def close(self) -> None:
        with contextlib.suppress(ConnectionError):
            await self._say("quit")
        try:
            await asyncio.wait_for(self.proc.wait(), 20)
        except TimeoutError:
            self.proc.kill()
            await self.proc.wait()


@dataclass
class System:
    """What differs between fieldcast and the baseline, for the driver."""

    name: str
    pid: int
    http: httpx.AsyncClient
    spec: dict[str, Any]
    write: Callable[[httpx.AsyncClient, int], Awaitable[None]]
    readers: Callable[[int, int], int]  # (write number, N) -> clients meant to get it


@dataclass
class Row:
    system: str
    clients: int
    deflate: bool
    mode: str
    writes: float = 0.0
    frames: float = 0.0
    updates: float = 0.0
    delivered: float = 0.0
    p50: float = float("nan")
    p99: float = float("nan")
    cpu: dict[str, float] = field(default_factory=dict)
    errors: int = 0
    closed: int = 0

    HEADER = (f"{'system':<10} {'clients':>7} {'deflate':>7} {'mode':>9} {'writes/s':>9} "
              f"{'frames/s':>9} {'updates/s':>10} {'upd/frm':>7} {'deliv%':>6} "
              f"{'p50 ms':>8} {'p99 ms':>8} {'srv us/upd':>10} {'cpu% srv/cli/drv/other':>22}")

    @property
    def server_us(self) -> float:
        """Server CPU per delivered update: unlike rates, barely moved by other jobs."""
        return self.cpu.get("server", 0) / 100 / self.updates * 1e6 if self.updates else 0.0

    def line(self) -> str:
        cpu = "/".join(f"{self.cpu.get(k, 0):.0f}"
                       for k in ("server", "clients", "driver", "other"))
        extra = ""
        if self.errors:
            extra += f"  {self.errors} write errors"
        if self.closed:
            extra += f"  {self.closed} sockets closed by the server"
        per_frame = self.updates / self.frames if self.frames else 0.0
        return (f"{self.system:<10} {self.clients:>7} {'on' if self.deflate else 'off':>7} "
                f"{self.mode:>9} {self.writes:>9.0f} {self.frames:>9.0f} {self.updates:>10.0f} "
                f"{per_frame:>7.2f} {self.delivered:>6.0%} {self.p50:>8.1f} {self.p99:>8.1f} "
                f"{self.server_us:>10.0f} {cpu:>22}{extra}")


async def run_phase(system: System, clients: Clients, n: int, deflate: bool,
                    rate: float | None, args: argparse.Namespace,
                    during: Callable[[], Awaitable[Any]] | None = None) -> Row:
    """Write for a warm-up plus --seconds; count what the clients got in the last part."""
    done: list[tuple[float, int]] = []  # (completion time, write number)
    errors = 0
    stop = asyncio.Event()
    numbers = iter(range(1 << 62))

    async def one(k: int) -> None:
        nonlocal errors
        try:
            await system.write(system.http, k)
            done.append((time.perf_counter(), k))
        except httpx.HTTPError:
            errors += 1

    async def saturate() -> None:
        async def worker() -> None:
            while not stop.is_set():
                await one(next(numbers))
        await asyncio.gather(*(worker() for _ in range(args.writers)))

    async def paced(rate: float) -> None:
        # Open loop: a write every 1/rate s whatever the answers' latency, so a slow server
        # shows as latency; a bounded number in flight keeps the run bounded.
        in_flight = asyncio.Semaphore(64)
        tasks: set[asyncio.Task[None]] = set()
        t0 = time.perf_counter()
        for k in numbers:
            if stop.is_set():
                break
            await asyncio.sleep(max(0.0, t0 + k / rate - time.perf_counter()))
            await in_flight.acquire()
            task = asyncio.create_task(one(k))
            task.add_done_callback(lambda _t: in_flight.release())
            tasks.add(task)
            task.add_done_callback(tasks.discard)
        await asyncio.gather(*tasks)

    load = asyncio.create_task(saturate() if rate is None else paced(rate))
    await asyncio.sleep(args.warmup)
    pids = {"server": system.pid, "clients": clients.proc.pid, "driver": os.getpid()}
    cpu0 = {k: cpu_seconds(p) for k, p in pids.items()}
    busy0, _ = machine_cpu()
    await clients.start()
    t0 = time.perf_counter()
    if during is not None:
        await during()
    else:
        await asyncio.sleep(args.seconds)
    result = await clients.stop()
    t1 = time.perf_counter()
    cpu = {k: (cpu_seconds(p) - cpu0[k]) / (t1 - t0) * 100 for k, p in pids.items()}
    # Whatever else ran on the machine meanwhile (other jobs share these cores).
    cpu["other"] = max(0.0, (machine_cpu()[0] - busy0) / (t1 - t0) * 100 - sum(cpu.values()))
    stop.set()
    await load
    window = [k for t, k in done if t0 <= t < t1]
    expected = sum(system.readers(k, n) for k in window)
    secs = result["seconds"]
    lat = result["latencies"]
    return Row(system.name, n, deflate, "sat" if rate is None else f"{rate:.3g} w/s",
               writes=len(window) / (t1 - t0), frames=result["frames"] / secs,
               updates=result["updates"] / secs,
               delivered=result["updates"] / expected if expected else 0.0,
               p50=pct(lat, 50), p99=pct(lat, 99), cpu=cpu, errors=errors,
               closed=result["closed"])


# ---- profile -------------------------------------------------------------------------

# Leaf frames where a thread waits rather than works (py-spy may still sample them).
IDLE_LEAVES = ("EpollSelector.select ", "_connection_worker_thread ", "Condition.wait ",
               "Thread._wait_for_tstate_lock ", "Event.wait ", "_worker ")


def summarize_profile(raw: str, top: int) -> list[str]:
    """Collapsed py-spy stacks (--threads) -> busy share per thread, self time by library
    and by function, and inclusive time of fieldcast's own functions."""
    own: Counter[str] = Counter()
    areas: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    threads: Counter[str] = Counter()
    threads_busy: Counter[str] = Counter()
    busy = 0
    frame_re = re.compile(r"^(.*) \((.*):\d+\)$")
    for line in raw.splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        thread, *frames = stack.split(";")
        thread = thread.split(": ", 1)[-1]
        thread = "aiosqlite" if "_connection_worker_thread" in stack else thread
        threads[thread] += count
        if not frames or frames[-1].startswith(IDLE_LEAVES):
            continue
        busy += count
        threads_busy[thread] += count
        parsed = [m.groups() for f in frames if (m := frame_re.match(f))]
        if not parsed:
            continue
        func, path = parsed[-1]
        own[f"{func} ({path})"] += count
        # The first path component names the library (stdlib modules included).
        areas[path.split("/")[0].removesuffix(".py")] += count
        for func, path in set(parsed):
            if path.startswith(("hub/", "instance/")) and not path.startswith("instance/cli/"):
                inclusive[f"{func} ({path})"] += count
    if not busy:
        return ["  (no busy samples)"]
    out = ["  busy share of samples per thread: " + ", ".join(
        f"{t} {threads_busy[t] / c:.0%}" for t, c in threads.most_common())]
    out.append(f"  {busy} busy samples; self time by library:")
    out += [f"    {c / busy:>6.1%}  {label}" for label, c in areas.most_common(top)]
    out.append("  self time, top functions:")
    out += [f"    {c / busy:>6.1%}  {f}" for f, c in own.most_common(top)]
    out.append("  inclusive time, fieldcast's own functions:")
    out += [f"    {c / busy:>6.1%}  {f}" for f, c in inclusive.most_common(top)]
    return out


async def profiled(pid: int, seconds: float, out: Path) -> Callable[[], Awaitable[str]]:
    """A `during` for run_phase that records the server with py-spy for `seconds`."""

    async def record() -> str:
        proc = await asyncio.create_subprocess_exec(
            "py-spy", "record", "--pid", str(pid), "--duration", str(max(1, int(seconds))),
            # --nonblocking: pausing the server to sample would look like idle time to
            # the hub's pacer (it measures the loop thread's CPU) and change what is profiled.
            "--rate", "200", "--threads", "--nonblocking", "--format", "raw", "-o", str(out),
            stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE)
        _, err = await proc.communicate()
        if proc.returncode != 0:
            return f"py-spy failed: {err.decode()[-300:]}"
        return await asyncio.to_thread(out.read_text)

    return record


# ---- set-up and main -----------------------------------------------------------------

async def setup_fieldcast(root: Path, frame_percent: int | None
                          ) -> tuple[RunningInstance, int, list[str], httpx.AsyncClient]:
    # live_deflate on, so that the client's offer decides, as it does for the baseline.
    # As served, not as tested: no check of every answer against its OpenAPI model.
    env = {"FIELDCAST_LIVE_DEFLATE": "true", "FIELDCAST_TEST_STRICT_ANSWERS": "false"}
    if frame_percent is not None:
        env["FIELDCAST_LIVE_FRAME_PERCENT"] = str(frame_percent)
    inst = RunningInstance.create(root, "bench", extra_env=env)
    inst.start()
    admin = await inst.client(limits=httpx.Limits(max_connections=64))
    (await admin.post("/api/groups", json={"name": "Staff"})).raise_for_status()
    for n, name in enumerate(USERS):
        groups = ["Staff"] if n < STAFF else []
        (await admin.post("/api/users", json={"username": name, "password": PASSWORD,
                                              "groups": groups})).raise_for_status()
    (await admin.post("/api/trackers", json={"slug": "bench"})).raise_for_status()
    (await admin.post("/api/trackers/bench/fields", json={"name": "title"})).raise_for_status()
    (await admin.post("/api/trackers/bench/fields", json={
        "name": "secret", "read_groups": ["Staff"], "edit_groups": ["Staff"]})).raise_for_status()
    item = (await admin.post("/api/trackers/bench/items", json={"fields": {}})).json()["id"]
    cookies = []
    for name in USERS:
        async with httpx.AsyncClient(base_url=inst.base_url) as c:
            (await c.post("/api/login", json={"username": name, "password": PASSWORD})
             ).raise_for_status()
            cookies.append(f"fieldcast_session={c.cookies['fieldcast_session']}")
    return inst, item, cookies, admin


async def start_baseline() -> tuple[asyncio.subprocess.Process, httpx.AsyncClient]:
    port = free_port()
    proc = await asyncio.create_subprocess_exec(sys.executable, __file__, "--baseline",
                                                str(port))
    http = httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=30,
                             limits=httpx.Limits(max_connections=64))
    for _ in range(100):
        try:
            (await http.post("/publish", content=b"warm-up")).raise_for_status()
            return proc, http
        except httpx.HTTPError:
            await asyncio.sleep(0.1)
    raise RuntimeError("the baseline server did not start")


def readers_fc(k: int, n: int) -> int:
    # Client i is logged in as USERS[i % 10]; "secret" reaches only the Staff among them.
    return n if FIELDS[k % 2] == "title" else sum(1 for i in range(n) if i % len(USERS) < STAFF)


async def main(args: argparse.Namespace) -> None:
    counts = [int(c) for c in args.clients.split(",")]
    tick = HubConfig().tick
    print(f"live fan-out: {args.warmup:.0f} s warm-up + {args.seconds:.0f} s counted per row; "
          f"{os.cpu_count()} cores shared by the server, the client process and this driver "
          "(the writer); latency is write-to-receipt")
    duty = args.frame_percent / 100 if args.frame_percent else HubConfig().frame_duty
    print(f"hub: flush rounds at most every {tick * 1000:.0f} ms, frames at most "
          f"{duty:.0%} of the loop; updates arriving between rounds share one frame per socket")
    print(Row.HEADER, flush=True)
    profile_text = ""
    rows: dict[tuple[str, int, bool, str], Row] = {}
    with tempfile.TemporaryDirectory() as tmp:
        inst, item, cookies, admin = await setup_fieldcast(Path(tmp), args.frame_percent)
        base_proc, base_http = await start_baseline()
        assert inst.process is not None

        async def fc_write(http: httpx.AsyncClient, k: int) -> None:
            r = await http.patch(f"/api/items/{item}/fields/{FIELDS[k % 2]}",
                                 json={"value": f"w{k} t={time.time():.6f}"})
            r.raise_for_status()

        async def base_write(http: httpx.AsyncClient, k: int) -> None:
            # The shape of a fieldcast frame with one update: the same work per message
            # for the clients.
            msg = {"type": "updates", "updates": [{
                "item": 1, "field": "title", "value": f"w{k} t={time.time():.6f}",
                "version": k, "by": "admin", "at": "2026-01-01T00:00:00Z", "event": k,
                "epoch": "0" * 32}]}
            (await http.post("/publish", content=json.dumps(msg))).raise_for_status()

        ws_url = inst.base_url.replace("http", "ws", 1)
        fc = System("fieldcast", inst.process.pid, admin,
                    {"url": ws_url + "/live", "item": item, "cookies": cookies,
                     "subscribe": True}, fc_write, readers_fc)
        base = System("baseline", base_proc.pid, base_http,
                      {"url": str(base_http.base_url).replace("http", "ws", 1).rstrip("/")
                       + "/ws", "cookies": ["x=1"], "subscribe": False},
                      base_write, lambda _k, n: n)

        async def group(system: System, n: int, deflate: bool,
                        rate_of: Callable[[Row], float], profile: Path | None = None) -> None:
            """Saturation, then a fixed rate (from the saturation row), on one set of sockets."""
            nonlocal profile_text
            clients = await Clients.open({**system.spec, "clients": n, "deflate": deflate})
            try:
                sat = await run_phase(system, clients, n, deflate, None, args)
                rows[(system.name, n, deflate, "sat")] = sat
                print(sat.line(), flush=True)
                fixed = await run_phase(system, clients, n, deflate, rate_of(sat), args)
                rows[(system.name, n, deflate, "rate")] = fixed
                print(fixed.line(), flush=True)
                if profile is not None:
                    record = await profiled(system.pid, args.seconds, profile)
                    texts: list[str] = []

                    async def during() -> None:
                        texts.append(await record())

                    row = await run_phase(system, clients, n, deflate, None, args, during)
                    row.mode = "sat+prof"
                    print(row.line(), flush=True)
                    profile_text = texts[0]
            finally:
                await clients.close()
                await asyncio.sleep(0.5)  # let the server drop the closed sockets

        try:
            for n in counts:
                fc_readers = (readers_fc(0, n) + readers_fc(1, n)) / 2
                for deflate in DEFLATE[args.deflate]:
                    # The bar's rate: writes/s that deliver half the baseline's updates/s
                    # (the baseline is measured at half its own rate too, for reference).
                    await group(base, n, deflate, lambda sat, n=n: args.rate or sat.updates / 2 / n)
                    half = rows[("baseline", n, deflate, "sat")].updates / 2
                    use_py_spy = (n == max(counts) and not deflate and args.profile
                                  and shutil.which("py-spy") is not None)
                    await group(fc, n, deflate, lambda _sat, r=half / fc_readers: args.rate or r,
                                Path(args.profile_out) if use_py_spy else None)
        finally:
            await admin.aclose()
            await base_http.aclose()
            base_proc.terminate()
            await base_proc.wait()
            inst.stop()

    print()
    for n in counts:
        for deflate in DEFLATE[args.deflate]:
            f, b = rows.get(("fieldcast", n, deflate, "sat")), rows.get(
                ("baseline", n, deflate, "sat"))
            r = rows.get(("fieldcast", n, deflate, "rate"))
            if f is None or b is None or r is None:
                continue
            print(f"{n:>5} clients, deflate {'on ' if deflate else 'off'}: fieldcast "
                  f"{f.updates:,.0f} updates/s in {f.frames:,.0f} frames/s; baseline "
                  f"{b.updates:,.0f}/s: ratio {f.updates / b.updates:.2f} (frames "
                  f"{f.frames / b.frames:.2f}); at {r.updates:,.0f} updates/s p99 "
                  f"{r.p99:.0f} ms; server CPU per update {f.server_us:.0f} us vs "
                  f"{b.server_us:.0f} us")
    n = max(counts)
    f, r = rows.get(("fieldcast", n, False, "sat")), rows.get(("fieldcast", n, False, "rate"))
    b = rows.get(("baseline", n, False, "sat"))
    if f and b and r:
        ok_rate, ok_p99 = f.updates >= b.updates, r.p99 < 100
        print(f"bar at {n} clients (deflate off): updates/s >= baseline: "
              f"{'yes' if ok_rate else 'NO'} ({f.updates / b.updates:.2f}x); p99 < 100 ms at "
              f"half the baseline's rate: {'yes' if ok_p99 else 'NO'} ({r.p99:.0f} ms)")
    if profile_text.startswith("py-spy failed"):
        print("\n" + profile_text)
    elif profile_text:
        print(f"\nprofile of the fieldcast server, {n} clients, saturation (py-spy, 200 Hz, "
              f"raw stacks kept in {args.profile_out}):")
        print("\n".join(summarize_profile(profile_text, args.top)))
    elif args.profile:
        print("\n(no profile: py-spy not found; pip install py-spy)")


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clients", default="100,1000", help="comma-separated client counts")
    parser.add_argument("--seconds", type=float, default=3.0, help="counted time per row")
    parser.add_argument("--warmup", type=float, default=1.0, help="uncounted time per row")
    parser.add_argument("--rate", type=float, default=0.0,
                        help="fixed write rate (writes/s) for the fixed-rate rows; default: "
                        "the rate that delivers half the baseline's updates/s")
    parser.add_argument("--writers", type=int, default=8,
                        help="concurrent writers at saturation")
    parser.add_argument("--deflate", choices=sorted(DEFLATE), default="both",
                        help="rows with permessage-deflate off, on, or both")
    parser.add_argument("--frame-percent", type=int, default=None,
                        help="the server's live_frame_percent (default: its own default)")
    parser.add_argument("--no-profile", dest="profile", action="store_false",
                        help="skip the py-spy profile of the server")
    parser.add_argument("--profile-out", default="/tmp/fanout-profile.txt",
                        help="where py-spy's raw stacks are kept (for a flame graph)")
    parser.add_argument("--top", type=int, default=15, help="functions listed in the profile")
    return parser.parse_args()


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "--client-spec":
        asyncio.run(run_clients(json.loads(sys.argv[2])))
        sys.exit(0)
    if len(sys.argv) == 3 and sys.argv[1] == "--baseline":
        serve_baseline(int(sys.argv[2]))
        sys.exit(0)
    # 1000 sockets on each side of loopback, plus the HTTP writers.
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, min(hard, 20000)), hard))
    asyncio.run(main(parse_args()))
