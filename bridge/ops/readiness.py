"""Readiness: can this process do its whole job now? `GET /readyz` answers with each check.

`/healthz` only says the process answers. Readiness also needs a database that answers a
trivial query within a second, a schema that is not behind, a delivery loop that has been
round recently (in a process that runs one), destinations whose credentials were accepted
(at start-up and since), and writes that go through: the latest of the webhooks' and of the
worker's succeeded (a full disk still answers every read). The decisions are pure functions;
`Probe.checks` does the I/O.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime

from bridge.store.db import UNAVAILABLE, Database, describe_error
from bridge.store.migrations import pending
from bridge.writes import LastWrite

DATABASE_DEADLINE = 1.0  # seconds for the trivial query
WORKER_STALE_AFTER = 60.0  # seconds without a cycle; a healthy loop goes round every second


@dataclass(frozen=True)
class Check:
    name: str
    ok: bool
    detail: str
    facts: Mapping[str, object] = field(default_factory=dict)  # shown beside the detail


def schema_check(behind: int | None) -> Check:
    if behind is None:
        return Check("schema", False, "unknown: the database did not answer")
    if behind:
        return Check("schema", False, f"{behind} migration step(s) behind: run smsbridge migrate")
    return Check("schema", True, "up to date")


def worker_check(
    runs_here: bool,
    running: bool,
    heartbeat: float | None,
    now: float,
    trouble: str | None = None,
) -> Check:
    """`heartbeat`: when the loop last went round (monotonic seconds), None before the first;
    `trouble`: what keeps it from starting or going round, when it knows."""
    if not runs_here:
        return Check("worker", True, "not run by this process (BRIDGE_WORKER=0)")
    because = f": {trouble}" if trouble else ""
    if not running:
        return Check("worker", False, f"the delivery loop has stopped{because}")
    if heartbeat is None:
        return Check("worker", False, f"the delivery loop has not started yet{because}")
    quiet = now - heartbeat
    if quiet > WORKER_STALE_AFTER:
        late = f"the delivery loop has not gone round for {quiet:.0f}s{because}"
        return Check("worker", False, late)
    return Check("worker", True, f"last round {quiet:.1f}s ago")


def writes_check(writers: Mapping[str, LastWrite]) -> Check:
    """Whether each writer's latest write succeeded; the facts give, per writer, when its
    writes last succeeded and failed (UTC) and why the last failure failed."""
    failing = [
        f"{name}: {last.why} (at {_utc(last.failed_at)})"
        for name, last in writers.items()
        if last.failing
    ]
    facts = {
        name: {
            "last_ok_at": _utc(last.ok_at),
            "last_failed_at": _utc(last.failed_at),
            "why": last.why,
        }
        for name, last in writers.items()
    }
    if failing:
        return Check("writes", False, "the latest write failed: " + "; ".join(failing), facts)
    return Check("writes", True, "no write has failed since the last that succeeded", facts)


def _utc(at: float | None) -> str | None:
    if at is None:
        return None
    return datetime.fromtimestamp(at, UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def destinations_check(refused: Mapping[str, str]) -> Check:
    """Destinations whose credentials (or chat) the platform refused, at start-up or since,
    or whose token variable is not set: `detail` says which."""
    if refused:
        reasons = "; ".join(f"{name}: {detail}" for name, detail in sorted(refused.items()))
        return Check("destinations", False, f"refused: {reasons}")
    return Check("destinations", True, "every destination accepted its credentials")


def database_check(problem: str | None) -> Check:
    return Check("database", problem is None, problem or "answers")


@dataclass
class Probe:
    """What readiness looks at in a running `serve` process."""

    database: Database
    worker_task: asyncio.Task[None] | None  # None: this process runs no worker
    heartbeat: Callable[[], float | None]  # the worker's last round
    refused: Mapping[str, str]  # destinations refused (read at each probe), and why
    writers: Mapping[str, LastWrite] = field(default_factory=dict)  # this process's writers
    trouble: Callable[[], str | None] = lambda: None  # what keeps the worker from going round
    _query: asyncio.Task[int] | None = field(default=None, init=False)

    async def checks(self) -> list[Check]:
        behind, problem = await self._ask_database()
        task = self.worker_task
        running = task is not None and not task.done()
        now, trouble = time.monotonic(), self.trouble()
        return [
            database_check(problem),
            schema_check(behind),
            worker_check(task is not None, running, self.heartbeat(), now, trouble),
            destinations_check(self.refused),
            writes_check(self.writers),
        ]

    async def _ask_database(self) -> tuple[int | None, str | None]:
        """How far the schema is behind, or why the database did not say within the deadline.

        The query is not cancelled at the deadline (a SQLite call stuck on a lock cannot be):
        it is left to finish, and later probes wait for that same query instead of piling up
        new ones behind it.
        """
        if self._query is None or self._query.done():
            self._query = asyncio.create_task(pending(self.database), name="readiness")
            self._query.add_done_callback(_consume)
        done, _ = await asyncio.wait({self._query}, timeout=DATABASE_DEADLINE)
        if not done:
            return None, f"no answer within {DATABASE_DEADLINE:g}s"
        try:
            return self._query.result(), None
        except UNAVAILABLE as error:
            return None, describe_error(error)

    async def close(self) -> None:
        query, self._query = self._query, None
        if query is not None and not query.done():
            query.cancel()
            await asyncio.wait({query})


def _consume(query: asyncio.Task[int]) -> None:
    """A query nobody waits for any more must not log "exception was never retrieved"."""
    if not query.cancelled():
        query.exception()


def as_json(checks: list[Check]) -> tuple[bool, dict[str, object]]:
    ready = all(check.ok for check in checks)
    return ready, {
        "status": "ready" if ready else "not ready",
        "checks": {
            check.name: {"ok": check.ok, "detail": check.detail, **check.facts} for check in checks
        },
    }
