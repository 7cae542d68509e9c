"""The intake: the bodies the webhook path stored → their events and jobs, oldest first.

The request path only stores each raw body (committed before its 2xx) and wakes the worker;
the worker plans what is waiting before each claim (`Intake.plan`): a batch of the oldest
bodies per transaction, parsed, deduplicated, routed and planned (`ingest.plan_group`), then
marked planned in the same commit. A crash before that commit leaves them waiting, and they
are planned again from scratch; one after it finds them planned. Intakes take turns (on
PostgreSQL the bodies taken are locked, and another intake waits at the first of them, then
skips those planned; SQLite has one writer), so the bodies of a conversation are planned, and
its jobs queued, in the order they arrived. What it finds is counted in the metrics and, for
events not understood, told to on-call.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass

from sqlalchemy.ext.asyncio import AsyncConnection

from bridge.config import Config
from bridge.intake.ingest import IngestResult, StoredBody, plan_group, stored_items
from bridge.intake.notices import NotUnderstood
from bridge.metrics import Metrics
from bridge.store import events as events_store
from bridge.store.db import Database

log = logging.getLogger(__name__)

# Bodies planned in one transaction, at most, and their events (a body always fits alone):
# a batch costs one commit, and holds SQLite's only connection while it lasts.
PLAN_BODIES = 256
PLAN_EVENTS = 20_000


@dataclass(frozen=True)
class Planned:
    """What one batch planned, and whether more may be waiting (it was full)."""

    results: list[IngestResult]
    more: bool


class Intake:
    """Plans the bodies waiting, for a worker; `plan` says whether more may be waiting."""

    def __init__(
        self,
        database: Database,
        config: Config,
        now: Callable[[], float],
        metrics: Metrics | None = None,
        *,
        name: str = "",
    ) -> None:
        """`name`: the worker's, which claims right after planning: the NOTIFY of the jobs
        it plans wakes the other workers, not it."""
        self.database, self.config, self.now, self.metrics = database, config, now, metrics
        self.name = name
        self.not_understood = NotUnderstood(database, config)

    async def plan(self) -> bool:
        """Plan the oldest bodies waiting, in a transaction of its own; whether it took a full
        batch (more may be waiting)."""
        now = self.now()
        async with self.database.transaction() as connection:
            planned = await self.plan_in(connection, now)
        return await self.settle(planned, now)

    async def plan_in(self, connection: AsyncConnection, now: float) -> Planned:
        """`plan`'s work, in the caller's transaction; once it commits, `settle` it."""
        waiting = await events_store.waiting(self.database, connection, 0, PLAN_BODIES)
        if not waiting:
            return Planned([], more=False)
        bodies = _batch(waiting)
        results = await plan_group(
            self.database, connection, self.config, bodies, now, sender=self.name
        )
        return Planned(results, more=len(bodies) < len(waiting) or len(waiting) == PLAN_BODIES)

    async def settle(self, planned: Planned, now: float) -> bool:
        """After the planning committed: count what it found, and tell on-call of the events
        it did not understand; whether more may be waiting."""
        self._count(planned.results)
        problems = [
            (p.webhook_type, p.problem) for result in planned.results for p in result.problems
        ]
        if problems:
            await self.not_understood.tell(problems, now)
        return planned.more

    def _count(self, results: list[IngestResult]) -> None:
        for result in results:
            for kind, outcome in result.outcomes:
                log.debug(
                    "webhook event %s", outcome, extra={"webhook_type": kind, "outcome": outcome}
                )
                if self.metrics is not None:
                    self.metrics.webhook_event(kind, outcome)
            if self.metrics is not None:
                for code in result.report_codes:
                    self.metrics.delivery_report(code)


def _batch(waiting: list[events_store.WaitingBody]) -> list[StoredBody]:
    """The oldest bodies, up to PLAN_EVENTS events in all (the first always), parsed as the
    request path parsed them before storing them."""
    bodies: list[StoredBody] = []
    events = 0
    for body in waiting:
        items = _items(body)
        if bodies and events + len(items) > PLAN_EVENTS:
            break
        events += len(items)
        bodies.append(StoredBody(body.id, items, body.received_at))
    return bodies


def _items(body: events_store.WaitingBody) -> list[object]:
    """A stored body's events. The request path stores only bodies it could read this way;
    one it cannot (stored by hand) is kept, planned as holding none, and said in the log."""
    items = stored_items(body.raw)
    if items is None:
        log.error("webhook body %d is not a JSON array or object: kept, nothing planned", body.id)
        return []
    return items
