"""Test-only faults of the federation callback: answer 500, or hang before answering.

Off unless the operator names a file with the ``test_faults_file`` setting (TOML,
environment or command line; nothing over HTTP can set it). When set, the callback reads
``{data_dir}/{test_faults_file}`` on every request, so a test switches a running
instance's callback on and off by writing and deleting the file:

* ``{"callback": "error"}`` - answer 500 without looking at the request;
* ``{"callback": "hang", "seconds": 5}`` - wait that long, then answer as usual;
* ``{"record": true}`` (alone or with one of the above) - append each callback request
  (method, path, body) as a JSON line to ``{data_dir}/{test_faults_file}.requests``, so
  a test can check everything a callback was ever sent.

A missing file means no fault; an unreadable one is logged and ignored.
"""

from __future__ import annotations

import asyncio
import json
import logging
from dataclasses import dataclass

from quart import Response, request

from instance.config import Settings

log = logging.getLogger("fieldcast.remote.faults")


@dataclass(frozen=True)
class CallbackFault:
    mode: str | None  # "error", "hang" or None (only recording)
    seconds: float = 0.0
    record: bool = False


def callback_fault(settings: Settings) -> CallbackFault | None:
    if not settings.test_faults_file:
        return None
    path = settings.data_dir / settings.test_faults_file
    try:
        data = json.loads(path.read_text())
        mode = data.get("callback")
        if mode not in (None, "error", "hang"):
            raise ValueError(f"unknown callback fault {mode!r}")
        return CallbackFault(mode, float(data.get("seconds", 0)), data.get("record") is True)
    except FileNotFoundError:
        return None
    except (OSError, ValueError, AttributeError, TypeError) as exc:
        log.warning("ignoring the test faults file %s: %s", path, exc)
        return None


async def apply_callback_fault(settings: Settings) -> Response | None:
    """The response to give instead of the real one, or None to go on (after a hang)."""
    fault = callback_fault(settings)
    if fault is None:
        return None
    if fault.record:
        body = await request.get_data(cache=True, as_text=True)
        line = json.dumps({"method": request.method, "path": request.full_path, "body": body})
        with (settings.data_dir / f"{settings.test_faults_file}.requests").open("a") as fh:
            fh.write(line + "\n")
    if fault.mode is None:
        return None
    log.warning("test fault: the callback %s", "answers 500" if fault.mode == "error"
                else f"hangs {fault.seconds:g} s")
    if fault.mode == "error":
        return Response("test fault\n", 500, content_type="text/plain; charset=utf-8")
    await asyncio.sleep(fault.seconds)
    return None
