"""A SQLite connection handed out while it is being closed: what hangs after a task is
cancelled twice in a transaction (issue 13's stuck ``fieldcast serve``).

Tasks doing short reads and writes through ``instance.db.Database`` are cancelled, and
cancelled again a moment later (as a request can be when its client hangs up: Quart
cancels its handler, and Hypercorn may cancel the task that waits for that). A second
cancel that lands in SQLAlchemy's clean-up of the connection makes it terminate the
connection (aiosqlite ``stop()``), and a later transaction can then wait forever on a
future of that connection's stopped thread. After each round it checks that two reads
and two writes still finish within 10 s, and prints every task's stack when they do not.

    PYTHONPATH=$PWD python3 bench/double_cancel.py [--rounds 400]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import sys
import tempfile
from pathlib import Path

from sqlalchemy import text

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from instance.db import Database


def _stacks() -> None:
    for task in asyncio.all_tasks():
        print("task", task.get_name())
        coro = task.get_coro()
        while coro is not None:
            frame = getattr(coro, "cr_frame", None)
            if frame is not None:
                print(f"    {frame.f_code.co_filename}:{frame.f_lineno} {frame.f_code.co_name}")
            coro = getattr(coro, "cr_await", None)


async def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=400)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        db = Database(f"sqlite+aiosqlite:///{tmp}/x.db")
        async with db.engine.begin() as conn:
            await conn.execute(text("CREATE TABLE t (x INTEGER)"))

        async def reader() -> None:
            async with db.read() as session:
                await session.execute(text("SELECT count(*) FROM t"))
                await session.execute(text("SELECT count(*) FROM t"))

        async def writer() -> None:
            async with db.write() as session:
                await session.execute(text("INSERT INTO t VALUES (1)"))
                await session.execute(text("SELECT count(*) FROM t"))

        for n in range(args.rounds):
            tasks = [asyncio.ensure_future(random.choice((reader, writer))()) for _ in range(8)]
            await asyncio.sleep(random.random() * 0.003)
            for task in tasks:
                task.cancel()
            await asyncio.sleep(random.random() * 0.002)
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            try:
                await asyncio.wait_for(asyncio.gather(reader(), writer(), reader(), writer()),
                                       10)
            except TimeoutError:
                print(f"hung after {n + 1} rounds of double cancels; the tasks:")
                _stacks()
                sys.stdout.flush()
                os._exit(1)  # the hung tasks would keep the loop from ending
    print(f"no hang in {args.rounds} rounds")
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
