"""Replay webhook events stored as not understood through today's parser: those it now reads
plan what they should have planned when they came, in arrival order, once.

Each event is taken in a transaction of its own, which marks it understood and plans its
jobs together: a second run, or two at once, finds nothing left to do. What today's parser
still cannot read stays as it is, with today's reason. Lines say what happened per event
without content or numbers.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import UTC, datetime

from bridge.config import Config
from bridge.intake.ingest import plan_event
from bridge.smstools.webhooks import Unparsed, parse_event
from bridge.store import events as store
from bridge.store.db import Database

BATCH = 500


@dataclass(frozen=True)
class Replay:
    """What one event not understood came to."""

    event_id: int
    webhook_type: str | None
    received_at: float
    outcome: str  # understood | duplicate | not_understood
    detail: str  # the jobs planned, the event it duplicates, or why it is still not understood

    def line(self, dry_run: bool) -> str:
        when = datetime.fromtimestamp(self.received_at, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
        kind = self.webhook_type or "no webhook_type"
        verb = {
            "understood": "would be replayed" if dry_run else "replayed",
            "duplicate": "is a duplicate",
            "not_understood": "still not understood",
        }[self.outcome]
        return f"event {self.event_id} ({kind}, received {when}): {verb}: {self.detail}"


@dataclass
class Replayed:
    replays: list[Replay] = field(default_factory=list)

    def count(self, outcome: str) -> int:
        return sum(replay.outcome == outcome for replay in self.replays)

    def lines(self, dry_run: bool) -> list[str]:
        lines = [replay.line(dry_run) for replay in self.replays]
        understood = self.count("understood")
        lines.append(
            f"{len(self.replays)} event(s) not understood: {understood} "
            f"{'would be replayed' if dry_run else 'replayed'}, {self.count('duplicate')} "
            f"duplicate(s), {self.count('not_understood')} still not understood"
        )
        return lines


async def reprocess(
    database: Database, config: Config, since: float | None, now: float, *, dry_run: bool = False
) -> Replayed:
    """Replay the events not understood received since `since` (None: all), in arrival
    order; `dry_run` says what it would do and changes nothing."""
    replayed = Replayed()
    after = 0
    while True:
        async with database.transaction() as connection:
            batch = await store.not_understood(connection, since, after, BATCH)
        for stored in batch:
            replayed.replays.append(await _replay(database, config, stored, now, dry_run))
        if len(batch) < BATCH:
            return replayed
        after = batch[-1].id


async def _replay(
    database: Database,
    config: Config,
    stored: store.NotUnderstoodEvent,
    now: float,
    dry_run: bool,
) -> Replay:
    def replay(outcome: str, detail: str, kind: str | None = stored.webhook_type) -> Replay:
        return Replay(stored.id, kind, stored.received_at, outcome, detail)

    try:
        event = parse_event(json.loads(stored.payload))
    except ValueError:  # stored by the edge as valid JSON; only a damaged row lands here
        return replay("not_understood", "its stored payload is not JSON")
    if isinstance(event, Unparsed):
        if not dry_run and event.problem != stored.problem:
            async with database.transaction() as connection:
                await store.still_not_understood(connection, stored.id, event.problem)
        return replay("not_understood", event.problem, event.webhook_type)
    kind = event.webhook_type
    async with database.transaction() as connection:
        holder = await store.holder_of(connection, event.webhook_id, stored.id)
        if holder is not None:
            problem = f"webhook_id already stored as event {holder}"
            if not dry_run:
                await store.still_not_understood(connection, stored.id, problem)
            return replay("duplicate", problem, kind)
        if dry_run:
            return replay("understood", "its deliveries would be planned", kind)
        if not await store.understood(connection, stored.id, event.webhook_id, kind):
            return replay("duplicate", "replayed meanwhile by another run", kind)
        jobs = await plan_event(database, connection, config, event, stored.id, now)
    return replay("understood", f"{jobs} job(s) planned", kind)
