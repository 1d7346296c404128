"""Live fan-out: field updates delivered per second to N WebSocket clients, beside a bare
Quart + Hypercorn broadcast in the same run.

fieldcast: a real `fieldcast serve` (SQLite); a writer saves field changes through the
HTTP API; N clients (a separate process) are logged in as ten users, two of whom may not
read the "secret" field, and all subscribe to the same item. Writes alternate between
"title" (everyone reads it) and "secret", so the per-field filter is exercised.
Baseline: a tiny Quart app, a queue per connection, no database, no filtering; the
writer POSTs a message and every connection gets it.

Each value carries its send time; clients record receipt, so latency is write-to-receipt.
The hub batches several updates into one frame: updates and frames are counted apart.

    python bench/fanout.py [--clients 100,1000] [--seconds 5] [--writers 8]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.harness import RunningInstance, free_port

USERS = [f"reader{n}" for n in range(10)]  # reader8 and reader9 may not read "secret"
PASSWORD = "bench password 1"
STAMP = re.compile(r"t=(\d+\.\d+)")


# ---- the client process --------------------------------------------------------------

async def run_clients(spec: dict[str, Any]) -> None:
    from websockets.asyncio.client import connect

    counts = {"updates": 0, "frames": 0}
    latencies: list[float] = []
    compression = "deflate" if spec["deflate"] else None
    sockets = []
    for n in range(spec["clients"]):
        headers = {"Cookie": spec["cookies"][n % len(spec["cookies"])]}
        ws = await connect(spec["url"], additional_headers=headers, compression=compression,
                           ping_interval=None, max_queue=None, open_timeout=30)
        if spec["subscribe"]:
            await ws.recv()  # hello
            await ws.send(json.dumps({"type": "subscribe", "items": [spec["item"]]}))
            while json.loads(await ws.recv())["type"] != "subscribed":
                pass
        sockets.append(ws)

    async def read(ws: Any, sample: int) -> None:
        frames = 0
        async for raw in ws:
            now = time.time()
            frames += 1
            if raw.startswith('{"type":"ping"'):
                await ws.send('{"type":"pong"}')
                continue
            counts["frames"] += 1
            # Parsing every frame would make this process the bottleneck: count the
            # updates by their marker and read the send stamps of a sample of frames.
            counts["updates"] += raw.count('"field":')
            if frames % sample == 0:
                latencies.extend(now - float(t) for t in STAMP.findall(raw))

    sample = max(1, spec["clients"] // 50)
    tasks = [asyncio.create_task(read(ws, sample)) for ws in sockets]
    print("ready", flush=True)
    loop = asyncio.get_running_loop()
    await loop.run_in_executor(None, sys.stdin.readline)  # "start"
    counts["updates"] = counts["frames"] = 0
    latencies.clear()
    started = time.time()
    await loop.run_in_executor(None, sys.stdin.readline)  # "stop"
    elapsed = time.time() - started
    result = {"updates": counts["updates"], "frames": counts["frames"], "seconds": elapsed,
              "latencies": latencies[-20000:]}
    for task in tasks:
        task.cancel()
    print(json.dumps(result), flush=True)
    for ws in sockets:
        await ws.close()


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

def _pct(values: list[float], p: int) -> float:
    return statistics.quantiles(values, n=100)[p - 1] * 1000 if len(values) > 1 else float("nan")


async def write_loop(url: str, make: Any, seconds: float, writers: int, rate: float | None,
                     cookies: httpx.Cookies | None) -> int:
    done = 0
    stop_at = time.perf_counter() + seconds
    interval = writers / rate if rate else 0.0

    async def one(n: int) -> None:
        nonlocal done
        async with httpx.AsyncClient(base_url=url, cookies=cookies, timeout=30) as c:
            next_at = time.perf_counter() + n * (interval / writers if interval else 0)
            while time.perf_counter() < stop_at:
                if interval:
                    await asyncio.sleep(max(0.0, next_at - time.perf_counter()))
                    next_at += interval
                method, path, kwargs = make(done)
                r = await c.request(method, path, **kwargs)
                r.raise_for_status()
                done += 1

    await asyncio.gather(*(one(n) for n in range(writers)))
    return done


class Clients:
    def __init__(self, spec: dict[str, Any]) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, __file__, "--client-spec", json.dumps(spec)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline().strip()
        if line != "ready":
            raise RuntimeError(f"clients failed to start: {line!r}")

    def start(self) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write("start\n")
        self.proc.stdin.flush()

    def stop(self) -> dict[str, Any]:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write("stop\n")
        self.proc.stdin.flush()
        result = json.loads(self.proc.stdout.readline())
        self.proc.wait(timeout=30)
        return result


async def phase(label: str, spec: dict[str, Any], url: str, make: Any, args: argparse.Namespace,
                rate: float | None, cookies: httpx.Cookies | None) -> dict[str, Any]:
    clients = Clients(spec)
    await asyncio.sleep(0.5)
    clients.start()
    writes = await write_loop(url, make, args.seconds, args.writers if rate is None else 2,
                              rate, cookies)
    await asyncio.sleep(0.5)  # let the last frames land
    result = clients.stop()
    secs = result["seconds"]
    lat = result["latencies"]
    row = {"label": label, "clients": spec["clients"], "deflate": spec["deflate"],
           "writes": writes / args.seconds, "frames": result["frames"] / secs,
           "updates": result["updates"] / secs, "p50": _pct(lat, 50), "p99": _pct(lat, 99)}
    print(f"{label:<24} {row['clients']:>7} {'on' if row['deflate'] else 'off':>7} "
          f"{row['writes']:>9.0f} {row['frames']:>10.0f} {row['updates']:>10.0f} "
          f"{row['p50']:>8.1f} {row['p99']:>8.1f}", flush=True)
    return row


async def setup_fieldcast(root: Path) -> tuple[RunningInstance, int, list[str], httpx.Cookies]:
    inst = RunningInstance.create(root, "fanout")
    inst.start()
    admin = await inst.client()
    (await admin.post("/api/groups", json={"name": "Staff"})).raise_for_status()
    for n, name in enumerate(USERS):
        groups = ["Staff"] if n < 8 else []
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
    return inst, item, cookies, admin.cookies


async def main(args: argparse.Namespace) -> None:
    counts = [int(c) for c in args.clients.split(",")]
    print(f"live fan-out, {args.seconds:.0f} s per row, {os.cpu_count()} cores shared by the "
          "server, the client process and the writer; latency is write-to-receipt")
    print(f"{'system':<24} {'clients':>7} {'deflate':>7} {'writes/s':>9} {'frames/s':>10} "
          f"{'updates/s':>10} {'p50 ms':>8} {'p99 ms':>8}")
    with tempfile.TemporaryDirectory() as tmp:
        inst, item, cookies, admin_cookies = await setup_fieldcast(Path(tmp))
        port = free_port()
        base_proc = subprocess.Popen(  # noqa: ASYNC220 -- starting it does not block
            [sys.executable, __file__, "--baseline", str(port)])
        base_url = f"http://127.0.0.1:{port}"
        async with httpx.AsyncClient() as probe:
            for _ in range(100):
                try:
                    (await probe.post(base_url + "/publish", content=b"warmup")
                     ).raise_for_status()
                    break
                except httpx.HTTPError:
                    await asyncio.sleep(0.1)
            else:
                raise RuntimeError("the baseline server did not start")
        try:
            fields = ("title", "secret")

            def fc_write(n: int) -> tuple[str, str, dict[str, Any]]:
                return ("PATCH", f"/api/items/{item}/fields/{fields[n % 2]}",
                        {"json": {"value": f"w{n} t={time.time():.6f}"}})

            def base_write(n: int) -> tuple[str, str, dict[str, Any]]:
                # The same shape as a fieldcast frame with one update, so the clients'
                # work per message is the same.
                msg = {"type": "updates", "updates": [{
                    "item": 1, "field": "title", "value": f"w{n} t={time.time():.6f}",
                    "version": n, "by": "admin", "at": "2026-01-01T00:00:00Z", "event": n,
                    "epoch": "0" * 32}]}
                return "POST", "/publish", {"content": json.dumps(msg)}

            fc_spec = {"url": inst.base_url.replace("http", "ws") + "/live", "item": item,
                       "cookies": cookies, "subscribe": True}
            base_spec = {"url": base_url.replace("http", "ws") + "/ws", "cookies": ["x=1"],
                         "subscribe": False}
            rows: dict[tuple[str, int], dict[str, Any]] = {}
            for n in counts:
                for deflate in ([False, True] if n == max(counts) else [False]):
                    rows[("fc", n, deflate)] = await phase(  # type: ignore[index]
                        "fieldcast saturation", {**fc_spec, "clients": n, "deflate": deflate},
                        inst.base_url, fc_write, args, None, admin_cookies)
                rows[("base", n)] = await phase(
                    "baseline saturation", {**base_spec, "clients": n, "deflate": False},
                    base_url, base_write, args, None, None)
                half = rows[("base", n)]["updates"] / 2 / (n * 0.9)  # writes/s for half
                await phase(f"fieldcast {half:.0f} writes/s", {**fc_spec, "clients": n,
                            "deflate": False}, inst.base_url, fc_write, args, half,
                            admin_cookies)
            print()
            for n in counts:
                fc, base = rows[("fc", n, False)], rows[("base", n)]  # type: ignore[index]
                print(f"{n} clients: fieldcast delivers {fc['updates']:.0f} updates/s in "
                      f"{fc['frames']:.0f} frames/s; the bare baseline {base['updates']:.0f}/s: "
                      f"ratio {fc['updates'] / base['updates']:.2f}")
        finally:
            base_proc.terminate()
            base_proc.wait(timeout=10)
            inst.stop()


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "--client-spec":
        asyncio.run(run_clients(json.loads(sys.argv[2])))
        sys.exit(0)
    if len(sys.argv) == 3 and sys.argv[1] == "--baseline":
        serve_baseline(int(sys.argv[2]))
        sys.exit(0)
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, 20000), hard))
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clients", default="100,1000", help="comma-separated client counts")
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--writers", type=int, default=8, help="concurrent writers at saturation")
    asyncio.run(main(parser.parse_args()))
