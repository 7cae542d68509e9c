"""Retention: data is kept only as long as it serves (the config's `retention:` section).

The worker prunes once an hour, and `smsbridge prune [--dry-run]` runs the same code. Each
category goes in small batches, one short transaction each, so webhooks and deliveries go on
in between; on PostgreSQL an advisory lock keeps two processes from pruning at once.

A conversation's thread link is kept while the conversation is live (`threads.idle_after`) or
a reply in it is still to be sent or settled, a message's content while a job still has to
deliver it or a dead letter may be retried, what an agent wrote while their answer is still to
be sent, and delivered jobs at least as long as an alert's `repeat_interval` needs them. A
destination's pace (no customer data) goes once its bucket is full again and no 429 holds it.

`smsbridge prune` then overwrites the old copies of what went on the database's disk
(`scrub`, `store.disk`). The worker's hourly run does not: on PostgreSQL that rewrites the
tables (VACUUM FULL), which holds the webhooks back while it runs.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field

from bridge.config import Config
from bridge.delivery.pacing import burst_for
from bridge.store import retention as retention_store
from bridge.store.db import UNAVAILABLE, Database, describe_error
from bridge.store.disk import Scrubbed
from bridge.store.disk import scrub as scrub_disk

log = logging.getLogger(__name__)

BATCH = 500  # rows per transaction
EVERY = 3600.0  # the worker prunes this often (seconds)


def cutoffs(config: Config, now: float) -> retention_store.Cutoffs:
    """What is older than these times goes."""
    keep = config.retention
    routes = config.alerts.routes if config.alerts is not None else ()
    repeat = max((route.repeat_interval for route in routes), default=0.0)
    return retention_store.Cutoffs(
        raw_bodies=now - keep.raw_bodies,
        content=now - keep.content,
        done_jobs=now - max(keep.done_jobs, repeat),
        dead_letters=now - keep.dead_letters,
        conversations=now - max(keep.content, config.idle_after),
        alert_groups=now - max(keep.content, repeat),
        pace=now - _refill_time(config),
    )


def _refill_time(config: Config) -> float:
    """How long a destination's bucket takes to fill up from empty (at least `EVERY`)."""
    rates = [d.max_rate for d in config.destinations.values() if d.max_rate]
    return max([EVERY, *(burst_for(rate) / rate for rate in rates)])


@dataclass
class Pruned:
    """What a run removed (or, dry, would remove): category → rows."""

    counts: dict[str, int] = field(default_factory=dict)
    busy: bool = False  # another process was pruning: this run stopped early
    disk: Scrubbed | None = None  # what became of the old copies on disk (`scrub`)

    @property
    def total(self) -> int:
        return sum(self.counts.values())

    def lines(self, dry_run: bool = False) -> list[str]:
        verbs = {category.name: category.verb for category in retention_store.CATEGORIES}
        lines = []
        for name, removed in self.counts.items():
            verb = f"would be {verbs[name]}" if dry_run else verbs[name]
            lines.append(f"{name}: {removed} {verb}")
        if self.busy:
            lines.append("another process is pruning: stopped early; it finishes the rest")
        if self.disk is not None:
            done = "overwritten" if self.disk.done else "NOT overwritten yet"
            again = "" if self.disk.done else "; run it again"
            lines.append(f"old copies on disk {done}: {self.disk.detail}{again}")
        return lines


async def prune(
    database: Database,
    config: Config,
    now: float,
    *,
    dry_run: bool = False,
    batch: int = BATCH,
    scrub: bool = False,
) -> Pruned:
    """Remove (or, `dry_run`, count) everything past its retention at `now`; with `scrub`,
    then overwrite the old copies on disk (`Pruned.disk` says whether that finished)."""
    limits = cutoffs(config, now)
    pruned = Pruned()
    for category in retention_store.CATEGORIES:
        removed = 0
        while True:
            async with database.transaction() as connection:
                if dry_run:
                    removed = await retention_store.count(connection, category, limits)
                    break
                if not await retention_store.try_lock(database, connection):
                    pruned.busy = True
                    pruned.counts[category.name] = removed
                    return pruned
                done = await retention_store.remove_batch(connection, category, limits, now, batch)
            removed += done
            if done < batch:
                break
            await asyncio.sleep(0)  # let the webhook and the deliveries in between batches
        pruned.counts[category.name] = removed
    if scrub and not dry_run:
        # Even when nothing went now: an earlier run may have removed without this.
        pruned.disk = await scrub_disk(database, retention_store.TABLES)
    return pruned


@dataclass(frozen=True)
class HourlyPrune:
    """The worker's pruning, beside its deliveries (a `delivery.supervisor.Periodic`): a
    run that fails is logged, and the next hour tries again."""

    database: Database
    config: Config
    name: str = "prune"
    every: float = EVERY

    async def run_once(self, now: float) -> None:
        try:
            pruned = await prune(self.database, self.config, now)
        except UNAVAILABLE as error:
            log.error("pruning failed (%s); trying again in an hour", describe_error(error))
            return
        except Exception:  # a bug: deliveries go on, the next hour tries again
            log.exception("pruning failed unexpectedly; trying again in an hour")
            return
        if pruned.total:
            log.info("pruned what outlived its retention: %s", "; ".join(pruned.lines()))
