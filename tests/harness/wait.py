"""Waiting for a condition over the network, with a deadline."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

T = TypeVar("T")


async def eventually(check: Callable[[], Awaitable[T]], within: float = 10.0,
                     every: float = 0.1) -> T:
    """The first result of ``check`` that is neither False nor an AssertionError;
    the last AssertionError once ``within`` seconds have passed."""
    deadline = time.monotonic() + within
    while True:
        try:
            result = await check()
        except AssertionError:
            if time.monotonic() > deadline:
                raise
        else:
            if result is not False:
                return result
            if time.monotonic() > deadline:
                raise AssertionError(f"condition never held within {within:g} s")
        await asyncio.sleep(every)
