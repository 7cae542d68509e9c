"""Claiming: which due jobs a worker takes now, with what they need, and giving back the
leases of those it will not finish.

A claim takes each lane's head within its destination's pace (`pacing`); a head whose
destination combines and is behind brings the inbox jobs waiting right behind it
(`combining`); the events of all of them come with the claim. Leases come
back at once for heads over their pace, after the post for followers it did not show, and
on the way out for jobs cut short.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Collection
from dataclasses import dataclass, field

from sqlalchemy.ext.asyncio import AsyncConnection

from bridge.config import Config
from bridge.delivery import combining
from bridge.delivery.pacing import Pacer
from bridge.jobs import Follower, Job, Kind, Unreadable
from bridge.smstools.webhooks import InboxMessage, parse_event
from bridge.store import events as event_store
from bridge.store import outbox as outbox_store
from bridge.store.db import Database
from bridge.store.events import StoredEvent

log = logging.getLogger(__name__)

# A claim on PostgreSQL that takes longer than this was planned from statistics that no longer
# describe the outbox: a table that grew from nearly empty to thousands of due jobs within
# autovacuum's minute is planned as a few rows, read whole for each claim (70–130 ms at
# 30,000 jobs, seconds on a busy machine), where an up-to-date plan walks the due index
# and stops at the heads it needs (1–2 ms). Such a claim has the outbox analyzed, at most
# once in ANALYZE_EVERY seconds.
SLOW_CLAIM = 0.1  # seconds
ANALYZE_EVERY = 60.0  # seconds


@dataclass(frozen=True)
class Claim:
    """What one claim started: each head with when its destination's token is due (the
    claim's clock), in job order, when a paced destination next has a token, and whether
    it found as many due heads as it asked for (`full`: more may be due now)."""

    heads: list[tuple[Job, float]]
    next_token_at: float | None
    full: bool = False
    followers: dict[int, list[Job]] = field(default_factory=dict)  # claimed with each head
    events: dict[int, StoredEvent] = field(default_factory=dict)  # each job's, by job id
    took: float = 0.0  # seconds its statements took


class Claimer:
    """Claims due jobs for one worker, keeps what came with them until they are done, and
    gives back leases."""

    def __init__(
        self,
        database: Database,
        config: Config,
        pacer: Pacer,
        *,
        worker: str,
        lease: float,
    ) -> None:
        self.database = database
        self.config = config
        self.pacer = pacer
        self.worker = worker
        self.lease = lease
        self.slow_claim = SLOW_CLAIM if database.dialect == "postgresql" else None
        self._analyzed_at = -ANALYZE_EVERY  # monotonic
        self._followers: dict[int, list[Job]] = {}  # claimed with an inflight head
        self._events: dict[int, StoredEvent] = {}  # each claimed job's event, by job id

    async def claim(self, adapters: Collection[str], limit: int, now: float) -> Claim:
        """Claim up to `limit` heads of lanes to `adapters` that have a token at `now`, in a
        unit of work of its own (`claim_in`), and keep what came with them (`committed`)."""
        # Without a rate to take tokens from, a claim is its statements alone: on PostgreSQL
        # its lease is one statement and needs no transaction (no BEGIN and COMMIT round trips).
        async with self.database.unit(atomic=self.pacer.paces(adapters)) as connection:
            claim = await self.claim_in(connection, adapters, limit, now)
        await self.committed(claim)
        return claim

    async def claim_in(
        self, connection: AsyncConnection, adapters: Collection[str], limit: int, now: float
    ) -> Claim:
        """`claim`'s work, in the caller's transaction; once it commits, say so (`committed`).
        A configured destination without an adapter (its token variable unset) is left alone:
        its jobs wait, rather than fail for good."""
        started: list[tuple[Job, float]] = []
        unusable = [name for name in self.config.destinations if name not in adapters]
        began = time.monotonic()
        waiting = await self.pacer.waiting(connection, adapters, now)
        claimed = await outbox_store.claim(
            self.database,
            connection,
            worker=self.worker,
            now=now,
            lease=self.lease,
            limit=limit,
            paused=[*waiting, *unusable],
        )
        jobs = [job for job, _ in claimed]
        events = {job.id: event for job, event in claimed if event is not None}
        over_pace = []
        # Tokens are taken in one order by every worker, so none waits on another's.
        for job in sorted(jobs, key=lambda job: (job.destination, job.id)):
            at = None
            if job.destination not in waiting:
                at = await self.pacer.take(connection, job.destination, now)
            if at is None:
                over_pace.append(job)
                continue
            started.append((job, at))
        if over_pace:  # claimed beyond the destination's tokens: give them back untouched
            await outbox_store.release(connection, [job.id for job in over_pace], started=False)
            ran_out = {job.destination for job in over_pace}
            waiting.update(await self.pacer.waiting(connection, ran_out, now))
        heads = [job for job, _ in started]
        events = {job.id: events[job.id] for job in heads if job.id in events}
        followers = await self._claim_followers(connection, heads, now)
        await self._read_events(connection, [f for fs in followers.values() for f in fs], events)
        started.sort(key=lambda head: head[0].id)
        return Claim(
            started,
            min(waiting.values(), default=None),
            full=len(jobs) >= limit,
            followers=followers,
            events=events,
            took=time.monotonic() - began,
        )

    async def committed(self, claim: Claim) -> None:
        """The claim committed: keep its heads' followers and the events that came with
        them, until each head is `done`; have the outbox analyzed if it was slow."""
        for job, _ in claim.heads:
            self._followers[job.id] = claim.followers.get(job.id, [])
        self._events.update(claim.events)
        await self._analyze_if_slow(claim.took)

    async def _analyze_if_slow(self, took: float) -> None:
        """Have the outbox analyzed after a slow claim (`SLOW_CLAIM`), once a minute at most;
        after its commit (on SQLite this takes the only connection)."""
        if self.slow_claim is None or took < self.slow_claim:
            return
        if time.monotonic() - self._analyzed_at < ANALYZE_EVERY:
            return
        self._analyzed_at = time.monotonic()
        async with self.database.unit(atomic=False) as connection:
            await outbox_store.analyze(connection)
        log.info("a claim took %.0f ms: the outbox's statistics were refreshed", took * 1000)

    async def _read_events(
        self, connection: AsyncConnection, claimed: list[Job], events: dict[int, StoredEvent]
    ) -> None:
        """The followers' events come with the claim (the heads' with their leases), into
        `events`: one query, not one transaction per job."""
        stored = await event_store.get_many(
            connection, {job.event_id for job in claimed if job.event_id is not None}
        )
        for job in claimed:
            if job.event_id in stored:
                events[job.id] = stored[job.event_id]

    async def _claim_followers(
        self, connection: AsyncConnection, heads: list[Job], now: float
    ) -> dict[int, list[Job]]:
        """The inbox jobs waiting right behind each inbox head in its lane, claimed with it,
        where the head's destination combines and is behind: no token left now that the
        head took its own."""
        inbox = [
            job
            for job in heads
            if job.kind == Kind.INBOX
            and (destination := self.config.destinations.get(job.destination)) is not None
            and destination.combine
        ]
        if not inbox:
            return {}
        behind = await self.pacer.behind(connection, {job.destination for job in inbox}, now)
        followers = {}
        for job in inbox:
            if job.destination in behind:
                followers[job.id] = await outbox_store.claim_followers(
                    connection,
                    job,
                    kind=Kind.INBOX,
                    worker=self.worker,
                    now=now,
                    lease=self.lease,
                    limit=combining.MOST - 1,
                )
        return followers

    def event(self, job: Job) -> StoredEvent | None:
        """The head's event, read with the claim (taken: asked for once)."""
        return self._events.pop(job.id, None)

    def followers(self, job: Job) -> tuple[Follower, ...]:
        """The messages of the followers claimed with `job`, up to the first that is missing
        or not a message."""
        followers = []
        for follower in self._followers.get(job.id, []):
            stored = None
            if follower.event_id is not None and not isinstance(follower.payload, Unreadable):
                stored = self._events.pop(follower.id, None)
            event = parse_event(json.loads(stored.payload)) if stored is not None else None
            if stored is None or not isinstance(event, InboxMessage):
                break  # it goes out on its own, as the head of its lane, and says why
            followers.append(Follower(follower, event, stored.received_at))
        return tuple(followers)

    def followers_of(self, job_ids: Collection[int]) -> dict[int, list[int]]:
        """The ids of the followers claimed with each of `job_ids`."""
        return {job_id: [f.id for f in self._followers.get(job_id, [])] for job_id in job_ids}

    def done(self, job_id: int) -> None:
        """The head `job_id` is done: forget its followers and what came with them."""
        for job in self._followers.pop(job_id, []):
            self._events.pop(job.id, None)
        self._events.pop(job_id, None)

    async def hand_back(self, job: Job, shown: set[int], *, started: bool = False) -> None:
        """Give back the leases of the followers claimed with `job` that its post did not
        show. `started`: the post may have been made (a failure), so whoever takes them next
        looks for it first; otherwise only those leased before an earlier attempt are."""
        rest = [f for f in self._followers.get(job.id, []) if f.id not in shown]
        if not rest:
            return
        async with self.database.transaction() as connection:
            unsure = [f.id for f in rest if started or f.unsure]
            await outbox_store.release(connection, unsure)
            await outbox_store.release(
                connection, [f.id for f in rest if f.id not in unsure], started=False
            )

    async def finish(self, job_ids: list[int], now: float) -> None:
        """Record `job_ids` as delivered at `now`: their leases end with them. Jobs that
        finish together share one transaction (`Database.shared`); one alone needs none (one
        statement)."""
        await self.database.shared.write(outbox_store.finish(job_ids, now))

    async def release(self, job_ids: list[int] | None) -> None:
        """Give back the leases of `job_ids` (None: every lease still held), for whoever
        claims them next to look for a post they may have made."""
        async with self.database.transaction() as connection:
            await outbox_store.release(connection, job_ids)
