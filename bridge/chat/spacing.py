"""The last step of pacing, where a post leaves: a gate per destination, used by adapters."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from contextvars import ContextVar

# When the post of the job being delivered may leave, on `time.monotonic()`: the moment its
# token is due in the destination's shared pace (`pacing.Pacer.take`, up to `ahead` after
# the claim). Set by the worker for each job's task; the gate holds the post until then.
NOT_BEFORE: ContextVar[float] = ContextVar("not_before", default=float("-inf"))


class Spacing:
    """Posts of this process to one destination leave at least `interval` apart.

    The shared bucket grants a destination's tokens at its rate when jobs are claimed; the time
    from the claim to the request leaving varies (the job's own transactions, a busy event
    loop), so two posts granted one interval apart can leave closer together, and a platform
    that allows no burst answers the second with 429. The adapter waits here right before it
    posts, so the spacing holds where the platform counts it.
    """

    def __init__(
        self,
        interval: float,
        after_answer: float | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        """`after_answer`: how long after a post was answered the next may leave, at least
        (the platform's own interval: `interval` less the pacing margin)."""
        self.interval, self._clock = interval, clock
        self.after_answer = interval if after_answer is None else after_answer
        self._next = float("-inf")  # when the next post may leave

    async def wait(self) -> None:
        """Return when a post may leave now: not before its job's token is due (`NOT_BEFORE`)
        nor within `interval` of the previous post. The interval counts from when the
        previous post was let go, counted after its own wait: a wake-up the event loop
        delayed pushes the next post back too, instead of letting it follow closer."""
        while True:
            now = self._clock()
            until = max(self._next, NOT_BEFORE.get())
            if now >= until:
                self._next = now + self.interval
                return
            await asyncio.sleep(until - now)

    def answered(self) -> None:
        """The post that left last was answered: the platform saw it by now, so the next
        one leaves no sooner than `after_answer` from here. A post held up after it left (a
        busy event loop, a slow connection) then cannot reach the platform too close to
        the one after it."""
        self._next = max(self._next, self._clock() + self.after_answer)


@asynccontextmanager
async def leaving(spacing: Spacing | None) -> AsyncIterator[None]:
    """Around one post: wait at the gate (if the destination has one), post, count the
    answer."""
    if spacing is None:
        yield
        return
    await spacing.wait()
    try:
        yield
    finally:
        spacing.answered()
