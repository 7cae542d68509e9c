"""What a process remembers of customers' numbers to save work, and how soon it forgets.

The same customers come back message after message, so normalising a number, formatting it
and building its conversation's job are done once and remembered (`remembered`: the last
4,096 of each). An erasure (`smsbridge forget`) runs in a process of its own and cannot reach
another's memory, so every long-running process forgets all of them every FORGET_EVERY
seconds (`forgetting`): a number erased from the database is gone from every running
bridge's memory within that time, however quiet the traffic.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")

FORGET_EVERY = 600.0  # seconds
_FORGETTING: list[Callable[[], None]] = []


def remembered(function: Callable[..., T]) -> functools._lru_cache_wrapper[T]:
    """`function` remembering its last 4,096 answers, forgotten with the others (`forget`)."""
    cached = functools.lru_cache(maxsize=4096)(function)
    _FORGETTING.append(cached.cache_clear)
    return cached


def forget() -> None:
    """Forget every remembered answer."""
    for clear in _FORGETTING:
        clear()


async def forgetting() -> None:
    """Forget everything once every FORGET_EVERY seconds, until cancelled."""
    while True:
        await asyncio.sleep(FORGET_EVERY)
        forget()
