"""Waiting, in tests that drive real processes, for something another process does."""

from __future__ import annotations

import time
from collections.abc import Callable


def poll(condition: Callable[[], bool], timeout: float, why: Callable[[], str]) -> float:
    """Seconds it took `condition` to hold; fails with `why()` (the processes' logs, say)
    after `timeout`."""
    started = time.monotonic()
    while not condition():
        assert time.monotonic() - started < timeout, why()
        time.sleep(0.05)
    return time.monotonic() - started
