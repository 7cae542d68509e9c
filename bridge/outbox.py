"""The retry schedule: when a failed job is tried again, and when the bridge gives up.

The schedule itself lives in the database (`next_attempt_at`), so it survives restarts.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass

DAY = 86400.0


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
        backoff = min(self.max_delay, self.first_delay * 2.0 ** min(attempts, 30))
        return backoff / 2 + backoff / 2 * rand()

    def exhausted(self, created_at: float, now: float) -> bool:
        return now - created_at >= self.give_up_after
