"""What a failed attempt leads to: a retry at its time (`RetryPolicy`), or a dead letter
and, the first time a destination fails for good, a notice to on-call. A job whose
destination's token was refused does neither: it waits in the outbox for a good token.

A 429 with Retry-After holds its destination back for every worker (`pacing`). An outage is
one log line per destination and reason, not one per message, until it delivers again.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from bridge.chat.base import TokenRefused
from bridge.config import Config
from bridge.delivery.counters import DeliveryCounters
from bridge.delivery.pacing import Pacer
from bridge.errors import DeliveryError, Reason, Retryable
from bridge.intake import notices
from bridge.jobs import Job, Kind
from bridge.retry import RetryPolicy
from bridge.store import outbox as outbox_store
from bridge.store.db import Database

log = logging.getLogger(__name__)


class FailureRecorder:
    """Records failed attempts: schedules the retry or buries the job, logs it once."""

    def __init__(
        self,
        database: Database,
        config: Config,
        pacer: Pacer,
        *,
        policy: RetryPolicy,
        rand: Callable[[], float],
        counters: DeliveryCounters,
    ) -> None:
        self.database = database
        self.config = config
        self.pacer = pacer
        self.policy = policy
        self.rand = rand
        self.counters = counters
        self._failing: dict[str, set[tuple[Reason, int]]] = {}  # reported since last success

    async def failed(self, job: Job, error: DeliveryError, now: float) -> None:
        """Retry `job` later or keep it as a dead letter, as the policy says for `error`."""
        message = f"{error.reason}: {error.detail}"
        if isinstance(error, TokenRefused):
            await self._wait(job, error, now)
            return
        if error.reason is Reason.RATE_LIMITED and isinstance(error, Retryable):
            if error.retry_after is not None:
                async with self.database.transaction() as connection:
                    await self.pacer.pause(
                        connection, job.destination, now + error.retry_after, now
                    )
        delay = self.policy.next_attempt(
            error, attempts=job.attempts, created_at=job.created_at, now=now, rand=self.rand
        )
        self.counters.failed(job, error, dead=delay is None)
        fields = {
            "job_id": job.id,
            "destination": job.destination,
            "kind": job.kind,
            "event_id": job.event_id,
            "reason": str(error.reason),
        }
        if delay is not None:
            async with self.database.transaction() as connection:
                await outbox_store.retry_later(connection, job.id, at=now + delay, error=message)
            level = self._first_time(job.destination, error.reason, logging.WARNING)
            log.log(
                level,
                "job %d to %s will be retried in %.1fs: %s",
                job.id,
                job.destination,
                delay,
                message,
                extra={**fields, "outcome": "retry"},
            )
            return
        await self._bury(job, error, now, fields)

    async def _wait(self, job: Job, error: TokenRefused, now: float) -> None:
        """Give `job` back as pending, neither retried on a schedule nor buried: its
        destination's token was refused, and the worker claims nothing more for it until a
        restart brings a new token. On-call is told (once per repeat interval)."""
        async with self.database.transaction() as connection:
            await outbox_store.release(connection, [job.id])
        await notices.destination_failed(self.database, self.config, job.destination, error, now)
        self.counters.failed(job, error, dead=False)
        level = self._first_time(job.destination, error.reason, logging.ERROR)
        log.log(
            level,
            "job %d to %s waits in the outbox: the token was refused (%s)",
            job.id,
            job.destination,
            error.detail,
            extra={
                "job_id": job.id,
                "destination": job.destination,
                "kind": job.kind,
                "event_id": job.event_id,
                "reason": str(error.reason),
                "outcome": "waiting",
            },
        )

    async def _bury(
        self, job: Job, error: DeliveryError, now: float, fields: dict[str, object]
    ) -> None:
        """Keep `job` as a dead letter; tell on-call the first time its destination fails."""
        message = f"{error.reason}: {error.detail}"
        async with self.database.transaction() as connection:
            await outbox_store.bury(connection, job.id, error=message, now=now)
        level = self._first_time(job.destination, error.reason, logging.ERROR)
        if level == logging.ERROR and job.kind != Kind.NOTICE:
            await notices.destination_failed(
                self.database, self.config, job.destination, error, now
            )
        log.log(
            level,
            "delivery to %s failed for good (job %d kept as a dead letter): %s",
            job.destination,
            job.id,
            message,
            extra={**fields, "outcome": "dead"},
        )

    def delivered(self, destination: str) -> None:
        """`destination` delivered: say so once if it was failing, and log its next failure."""
        if self._failing.pop(destination, None):
            log.info(
                "destination %s delivers again",
                destination,
                extra={"destination": destination, "outcome": "ok"},
            )

    def _first_time(self, destination: str, reason: Reason, level: int) -> int:
        """`level` the first time a destination fails for this reason since it last
        delivered, DEBUG after that: an outage is one log line, not one per message."""
        reasons = self._failing.setdefault(destination, set())
        if (reason, level) in reasons:
            return logging.DEBUG
        reasons.add((reason, level))
        return level
