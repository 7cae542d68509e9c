"""Work that runs beside the deliveries: started with the worker's loop, stopped with it.

Whoever assembles a worker (`app`, `cli`) hands it this work; delivery knows only its two
shapes, `Background` and `Periodic`, not the operations behind them.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine, Sequence
from dataclasses import dataclass
from typing import Any, Protocol


class Background(Protocol):
    """Runs beside the deliveries until cancelled (listening for wake-ups, reading the
    Smstools balance)."""

    @property
    def name(self) -> str: ...

    def run(self) -> Coroutine[Any, Any, None]: ...


class Periodic(Protocol):
    """Started beside the deliveries at the loop's first round, then once `every` seconds
    of the worker's clock have passed (pruning)."""

    @property
    def name(self) -> str: ...

    @property
    def every(self) -> float: ...

    def run_once(self, now: float) -> Coroutine[Any, Any, None]: ...


@dataclass(frozen=True)
class Named:
    """A coroutine function under a name: the plainest `Background`."""

    name: str
    run: Callable[[], Coroutine[Any, Any, None]]


class Supervisor:
    """Starts the background work, starts each periodic run when it is due, and cancels
    all of it on the way out. A periodic run still going when the next is due is left to
    finish; the next starts at the first round after it."""

    def __init__(
        self, background: Sequence[Background] = (), periodic: Sequence[Periodic] = ()
    ) -> None:
        self.background = tuple(background)
        self.periodic = tuple(periodic)
        self._running: list[asyncio.Task[None]] = []
        self._next_at: dict[str, float] = {}  # each periodic work's next run, by name
        self._runs: dict[str, asyncio.Task[None]] = {}

    def start(self, *more: Background) -> None:
        """Start `more` (the worker's own) and the background work handed in."""
        for work in (*more, *self.background):
            self._running.append(asyncio.create_task(work.run(), name=work.name))

    def tick(self, now: float) -> None:
        """Start each periodic work that is due at `now` and not running still."""
        for work in self.periodic:
            due = self._next_at.get(work.name)
            if due is not None and now < due:
                continue
            running = self._runs.get(work.name)
            if running is not None and not running.done():
                continue
            self._next_at[work.name] = now + work.every
            self._runs[work.name] = asyncio.create_task(work.run_once(now), name=work.name)

    async def stop(self) -> None:
        """Cancel everything started and wait until it has ended."""
        tasks = [*self._running, *self._runs.values()]
        self._running, self._runs = [], {}
        for task in tasks:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
