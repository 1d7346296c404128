"""`fieldcast serve` stopping with /live sockets open: each client is told 1001 (going
away) at once, the process exits well before Hypercorn's graceful timeout, and its log
has no traceback. Before, the sockets held the shutdown for the whole graceful timeout
and were then cancelled: 1011 for the client, a CancelledError traceback in the log."""

from __future__ import annotations

import asyncio
import os
import signal
import time
from pathlib import Path

from websockets.asyncio.client import ClientConnection, connect

from instance.cli.serve import hypercorn_config
from instance.config import Settings
from tests.harness import RunningInstance

GRACEFUL_TIMEOUT = hypercorn_config(Settings(), access_log=False).graceful_timeout


async def _stop_with_sockets_open(inst: RunningInstance, sig: signal.Signals, sockets: int
                                  ) -> tuple[list[int | None], float]:
    assert inst.process is not None
    clients = [await connect(inst.base_url.replace("http", "ws", 1) + "/live")
               for _ in range(sockets)]
    for ws in clients:
        assert '"hello"' in str(await ws.recv())
    started = time.monotonic()
    os.killpg(inst.process.pid, sig)

    async def closed(ws: ClientConnection) -> int | None:
        async for _ in ws:
            pass
        return ws.close_code

    codes = await asyncio.wait_for(asyncio.gather(*(closed(ws) for ws in clients)), 30)
    await asyncio.to_thread(inst.process.wait, 30)
    return list(codes), time.monotonic() - started


async def test_stop_closes_live_sockets_with_1001_promptly(tmp_path: Path) -> None:
    inst = RunningInstance.create(tmp_path, "a")
    try:
        for sig, sockets in ((signal.SIGTERM, 3), (signal.SIGINT, 1)):
            inst.start()
            logged = inst.log_path.stat().st_size
            codes, took = await _stop_with_sockets_open(inst, sig, sockets)
            assert inst.process is not None and inst.process.returncode is not None
            assert codes == [1001] * sockets, (sig, codes)
            # Well before the graceful timeout, which is what a held socket cost.
            assert took < GRACEFUL_TIMEOUT / 2, (sig, took)
            log = inst.log_path.read_text()[logged:]
            assert "Traceback" not in log and "CancelledError" not in log, log
    finally:
        inst.stop()
