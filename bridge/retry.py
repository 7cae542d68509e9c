"""When a failed job is tried again, and when the bridge gives up; the one backoff.

The schedule itself lives in the database (`next_attempt_at`), so it survives restarts.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass

from bridge.errors import DeliveryError, Retryable

DAY = 86400.0


def backoff(
    attempt: int,
    *,
    first: float,
    cap: float,
    rand: Callable[[], float] | None = None,
) -> float:
    """Seconds to wait before try `attempt + 1`: `first`, doubling each time, at most `cap`.

    With `rand`, half of it is random ("equal jitter"), so parallel retries spread out.
    """
    delay = min(cap, first * 2.0 ** min(attempt, 60))
    return delay if rand is None else delay / 2 + delay / 2 * rand()


@dataclass(frozen=True)
class RetryPolicy:
    """Exponential backoff with jitter, a platform's Retry-After first, a horizon at the end."""

    first_delay: float = 2.0
    max_delay: float = 600.0
    give_up_after: float = DAY

    def delay(
        self,
        attempts: int,
        retry_after: float | None = None,
        rand: Callable[[], float] = random.random,
    ) -> float:
        """Seconds to wait after failed attempt number `attempts` (0 = the first try)."""
        if retry_after is not None and retry_after >= 0:
            # The platform said when; a little jitter keeps parallel lanes from stampeding.
            return retry_after + rand()
        return backoff(attempts, first=self.first_delay, cap=self.max_delay, rand=rand)

    def exhausted(self, created_at: float, now: float) -> bool:
        return now - created_at >= self.give_up_after

    def next_attempt(
        self,
        error: DeliveryError,
        *,
        attempts: int,
        created_at: float,
        now: float,
        rand: Callable[[], float] = random.random,
    ) -> float | None:
        """What to do with a failed job: seconds until it is tried again, or None when it
        is given up on (a permanent error, or a retryable one past the horizon)."""
        if not isinstance(error, Retryable) or self.exhausted(created_at, now):
            return None
        return self.delay(attempts, error.retry_after, rand)
