"""The delivery loop: claim due jobs, deliver each, record the outcome.

Up to `concurrency` jobs run at once, each the head of its own lane, so one slow or
rate-limited conversation never holds up another. The pacer keeps each destination under its
platform's rate, and a destination that answers 429 waits out its Retry-After; both live in
the database, so any number of workers share one pace per destination. When a destination is
behind (no token left once a head took its own), an inbox head is claimed with the inbox
jobs waiting right behind it in its lane, and one post shows them all (`combining`).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import logging
import os
import random
import socket
import time
from collections.abc import Callable, Mapping

from sqlalchemy.ext.asyncio import AsyncConnection

from bridge.chat import spacing
from bridge.chat.base import ChatAdapter, ChatMoved
from bridge.config import Config
from bridge.delivery import combining, moves
from bridge.delivery.handlers import HANDLERS, deliver_inbox_combined
from bridge.delivery.pacing import AHEAD, Pacer
from bridge.errors import DeliveryError, Permanent, Reason, Retryable
from bridge.intake import notices
from bridge.jobs import Delivery, Follower, Job, Kind, Unreadable
from bridge.metrics import Metrics
from bridge.ops import retention
from bridge.ops.credit import CreditWatch
from bridge.retry import RetryPolicy, backoff
from bridge.settings import DEFAULT_JOB_LEASE
from bridge.smstools.api import SmstoolsApi
from bridge.smstools.webhooks import InboxMessage, parse_event
from bridge.store import events as events_store
from bridge.store import outbox as outbox_store
from bridge.store import wakeups as wakeups_store
from bridge.store.db import UNAVAILABLE, Database, describe_error, relax_commits
from bridge.store.events import StoredEvent

log = logging.getLogger(__name__)

DEFAULT_POLICY = RetryPolicy()
# Jobs running at once, each the head of its own lane. Enough for the first posts of dozens of
# channels with a backlog to go out together, while a paced destination's next job waits for
# its token's moment (up to `pacing.AHEAD`).
CONCURRENCY = 48
# Jobs claimed in one round, at most. Jobs beyond their destination's tokens are given back
# at once, so a busy channel with many waiting conversations costs every round this many
# leases written and released; the loop claims again at once after a round that started any.
# Larger rounds reach many channels sooner but let several workers on one channel crowd it
# into 429s.
CLAIM_BATCH = 16


class Worker:
    """Delivers outbox jobs until stopped. `wake()` makes it look for work at once."""

    def __init__(
        self,
        database: Database,
        config: Config,
        adapters: Mapping[str, ChatAdapter],
        *,
        policy: RetryPolicy = DEFAULT_POLICY,
        now: Callable[[], float] = time.time,
        rand: Callable[[], float] = random.random,
        concurrency: int = CONCURRENCY,
        lease: float = DEFAULT_JOB_LEASE,
        poll_interval: float = 1.0,
        name: str | None = None,
        smstools: SmstoolsApi | None = None,
        metrics: Metrics | None = None,
        credit: CreditWatch | None = None,
    ) -> None:
        self.database = database
        self.config = config
        self.adapters = adapters
        self.policy = policy
        self.now = now
        self.rand = rand
        self.concurrency = concurrency
        self.lease = lease
        self.poll_interval = poll_interval
        self.name = name or f"{socket.gethostname()}:{os.getpid()}"
        self.smstools = smstools  # the send API, for agents' replies
        self.metrics = metrics
        self.credit = credit  # reads the Smstools balance beside delivery, when configured
        self._wake = asyncio.Event()
        self._stopping = False
        self._inflight: dict[int, asyncio.Task[None]] = {}
        self._followers: dict[int, list[Job]] = {}  # claimed with an inflight head
        self._events: dict[int, StoredEvent] = {}  # each claimed job's event, by job id
        self.pacer = Pacer(
            database,
            {name: destination.max_rate for name, destination in config.destinations.items()},
            ahead=AHEAD,
        )
        self._next_token_at: float | None = None
        self._failing: dict[str, set[tuple[Reason, int]]] = {}  # reported since last success
        self.heartbeat: float | None = None  # time.monotonic() of the loop's last round
        self._next_prune_at: float | None = None  # at the first round, then hourly
        self._pruning: asyncio.Task[None] | None = None

    def wake(self) -> None:
        self._wake.set()

    async def run(self) -> None:
        """Deliver until `stop()`; leases of unfinished jobs are given back on the way out."""
        relax_commits()  # claims: one taken back by a power cut is claimed again
        listener = None
        if self.database.dialect == "postgresql":
            listener = asyncio.create_task(
                wakeups_store.listen(self.database, self.wake), name="listen"
            )
        else:
            # SQLite has one delivering process: leases still held are from its previous life
            # (killed), and waiting for them to expire would only delay the queue.
            async with self.database.transaction() as connection:
                await outbox_store.release(connection, None)
        watching = None
        if self.credit is not None:
            watching = asyncio.create_task(self.credit.run(), name="credit")
        database_trouble = 0
        try:
            while not self._stopping:
                self.heartbeat = time.monotonic()  # /readyz: the loop goes round
                self._maybe_prune()
                try:
                    claimed = await self._claim()
                except UNAVAILABLE as error:
                    # The database is away (restart, lock held too long): keep trying, never
                    # leave the web process acknowledging webhooks nobody delivers.
                    wait = backoff(database_trouble, first=1.0, cap=30.0)
                    database_trouble += 1
                    log.error(
                        "cannot claim jobs (%s); trying again in %.0fs",
                        describe_error(error),
                        wait,
                    )
                    await asyncio.sleep(wait)
                    continue
                database_trouble = 0
                if claimed or self._stopping:
                    # A stop() during the claim set the wake-up: clearing it below would
                    # leave the worker asleep for a whole poll interval.
                    continue
                self._wake.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), self._idle_wait())
        finally:
            for helper in (listener, self._pruning, watching):
                if helper is not None:
                    helper.cancel()
                    await asyncio.gather(helper, return_exceptions=True)
            await self._shutdown()

    def _maybe_prune(self) -> None:
        """Start pruning (`retention`) when an hour has passed, beside the deliveries."""
        now = self.now()
        if self._next_prune_at is not None and now < self._next_prune_at:
            return
        if self._pruning is not None and not self._pruning.done():
            return
        self._next_prune_at = now + retention.EVERY
        self._pruning = asyncio.create_task(self._prune(now), name="prune")

    async def _prune(self, now: float) -> None:
        try:
            pruned = await retention.prune(self.database, self.config, now)
        except UNAVAILABLE as error:
            log.error("pruning failed (%s); trying again in an hour", describe_error(error))
            return
        except Exception:  # a bug: deliveries go on, the next hour tries again
            log.exception("pruning failed unexpectedly; trying again in an hour")
            return
        if pruned.total:
            log.info("pruned what outlived its retention: %s", "; ".join(pruned.lines()))

    def _idle_wait(self) -> float:
        """Poll interval, or less when a paced destination gets its next token sooner."""
        if self._next_token_at is None:
            return self.poll_interval
        return min(self.poll_interval, max(0.01, self._next_token_at - self.now()))

    async def stop(self) -> None:
        self._stopping = True
        self._wake.set()

    async def drain(self) -> None:
        """Deliver everything due now and everything that becomes due; for tests and tools."""
        while True:
            claimed = await self._claim()
            if not claimed and not self._inflight:
                return
            if not claimed:
                await asyncio.wait(list(self._inflight.values()), return_when="FIRST_COMPLETED")

    async def _claim(self) -> int:
        free = self.concurrency - len(self._inflight)
        if free <= 0:
            self._wake.clear()
            with contextlib.suppress(TimeoutError):  # go round even while every slot is busy
                await asyncio.wait_for(self._wake.wait(), self.poll_interval)
            return 0
        now = self.now()
        started = []
        async with self.database.transaction() as connection:
            waiting = await self.pacer.waiting(connection, self.adapters, now)
            jobs = await outbox_store.claim(
                self.database,
                connection,
                worker=self.name,
                now=now,
                lease=self.lease,
                limit=min(free, CLAIM_BATCH),
                paused=waiting,
            )
            over_pace = []
            due: dict[int, float] = {}  # when each started job's token is due
            # Tokens are taken in one order by every worker, so none waits on another's.
            for job in sorted(jobs, key=lambda job: (job.destination, job.id)):
                at = None
                if job.destination not in waiting:
                    at = await self.pacer.take(connection, job.destination, now)
                if at is None:
                    over_pace.append(job)
                    continue
                due[job.id] = at
                started.append(job)
            if over_pace:  # claimed beyond the destination's tokens: give them back untouched
                await outbox_store.release(connection, [job.id for job in over_pace], started=False)
                ran_out = {job.destination for job in over_pace}
                waiting.update(await self.pacer.waiting(connection, ran_out, now))
            followers = await self._claim_followers(connection, started, now)
            # Their events come with the claim: one query, not one transaction per job.
            claimed = [*started, *(f for fs in followers.values() for f in fs)]
            stored = await events_store.get_many(
                connection, {job.event_id for job in claimed if job.event_id is not None}
            )
            for job in claimed:
                if job.event_id in stored:
                    self._events[job.id] = stored[job.event_id]
        claimed_at = time.monotonic()
        for job in sorted(started, key=lambda job: job.id):
            self._followers[job.id] = followers.get(job.id, [])
            not_before = claimed_at + (due[job.id] - now)
            task = asyncio.create_task(self._run_job(job, not_before), name=f"outbox-{job.id}")
            self._inflight[job.id] = task
            task.add_done_callback(functools.partial(self._done, job.id))
        self._next_token_at = min(waiting.values(), default=None)
        return len(started)

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
                    worker=self.name,
                    now=now,
                    lease=self.lease,
                    limit=combining.MOST - 1,
                )
        return followers

    def _done(self, job_id: int, _task: asyncio.Task[None]) -> None:
        self._inflight.pop(job_id, None)
        for job in self._followers.pop(job_id, []):
            self._events.pop(job.id, None)
        self._events.pop(job_id, None)
        self._wake.set()  # the lane's next job may be due now

    async def _shutdown(self) -> None:
        tasks, followers = dict(self._inflight), dict(self._followers)
        if not tasks:
            return
        _, unfinished = await asyncio.wait(tasks.values(), timeout=5)
        for task in unfinished:
            task.cancel()
        await asyncio.gather(*unfinished, return_exceptions=True)
        cancelled = [job_id for job_id, task in tasks.items() if task.cancelled()]
        cancelled += [f.id for job_id in cancelled for f in followers.get(job_id, [])]
        if cancelled:
            async with self.database.transaction() as connection:
                await outbox_store.release(connection, cancelled)

    async def _run_job(self, job: Job, not_before: float) -> None:
        spacing.NOT_BEFORE.set(not_before)  # this task's own: its posts wait for its token
        # What a power cut may take back of a chat delivery's records only repeats a chat
        # post; a reply's mark that it is being sent must be on disk before the SMS goes.
        relax_commits(job.kind != Kind.REPLY)
        try:
            await self._attempt(job)
        except UNAVAILABLE as error:
            # Recording the outcome failed: the lease runs out and the job is tried again.
            log.error(
                "job %d to %s: cannot record its outcome (%s); it will be tried again "
                "when its lease expires",
                job.id,
                job.destination,
                describe_error(error),
            )

    async def _attempt(self, job: Job) -> None:
        try:
            # Inside the lease, so no other worker takes the job while this one may still post.
            received_at, shown = await asyncio.wait_for(
                self._deliver(job), timeout=self.lease * 0.8
            )
        except DeliveryError as error:
            if isinstance(error, ChatMoved):  # the adapter follows already; remember and tell
                await moves.follow(self.database, self.config, job.destination, error, self.now())
            await self._failed(job, error)
        except TimeoutError:
            await self._failed(
                job, Retryable(Reason.TIMEOUT, "delivery took longer than its lease")
            )
        except Exception as error:  # a bug: keep the job, retry it, say what broke
            log.exception("outbox job %d to %s failed unexpectedly", job.id, job.destination)
            await self._failed(
                job, Retryable(Reason.SERVER, f"internal error: {type(error).__name__}")
            )
        else:
            now = self.now()
            async with self.database.transaction() as connection:
                await outbox_store.finish(connection, [job.id, *(f.job.id for f in shown)], now)
            self._delivered(job, received_at, now)
            for follower in shown:
                self._delivered(follower.job, follower.received_at, now)
            if self._failing.pop(job.destination, None):
                log.info(
                    "destination %s delivers again",
                    job.destination,
                    extra={"destination": job.destination, "outcome": "ok"},
                )

    def _delivered(self, job: Job, received_at: float | None, now: float) -> None:
        if self.metrics is None:
            return
        metrics, destination = self.metrics, job.destination
        metrics.delivery_attempts.labels(destination, job.kind, "ok", "none").inc()
        if job.kind == Kind.INBOX and received_at is not None:
            metrics.delivery_latency.labels(destination).observe(max(0.0, now - received_at))
        elif job.kind == Kind.ALERT:
            metrics.alerts_sent.labels(destination).inc()
        elif job.kind in (Kind.NOTICE, Kind.CREDIT):
            metrics.notices_sent.labels(destination, job.kind).inc()

    async def _deliver(self, job: Job) -> tuple[float | None, tuple[Follower, ...]]:
        """Run the job's handler; when its event was received (None: a job of its own), and
        the followers shown in the same post (the others claimed with it are handed back)."""
        adapter = self.adapters.get(job.destination)
        if adapter is None:
            raise Permanent(Reason.CONFIG, f"destination {job.destination!r} is not configured")
        if isinstance(job.payload, Unreadable):
            raise Permanent(Reason.CONFIG, f"job {job.id}: {job.payload.problem}")
        handler = HANDLERS[job.payload.kind]
        if job.event_id is None:  # a job with its own payload
            await handler(
                Delivery(
                    self.database,
                    self.config,
                    adapter,
                    job,
                    None,
                    job.created_at,
                    self.now,
                    self.smstools,
                    self._count_reply,
                )
            )
            return None, ()
        stored = self._events.pop(job.id, None)  # read with the claim
        if stored is None:
            raise Permanent(Reason.CONFIG, f"event {job.event_id} of job {job.id} is missing")
        event = parse_event(json.loads(stored.payload))
        delivery = Delivery(
            self.database,
            self.config,
            adapter,
            job,
            event,
            stored.received_at,
            self.now,
            self.smstools,
            self._count_reply,
            followers=await self._load_followers(self._followers.get(job.id, [])),
        )
        shown: tuple[Follower, ...] = ()
        if delivery.followers:
            shown = await deliver_inbox_combined(delivery)
        else:
            await handler(delivery)
        await self._hand_back(job, {f.job.id for f in shown})
        return stored.received_at, shown

    async def _load_followers(self, jobs: list[Job]) -> tuple[Follower, ...]:
        """The followers' messages, up to the first that is missing or not a message."""
        if not jobs:
            return ()
        followers = []
        for job in jobs:
            stored = None
            if job.event_id is not None and not isinstance(job.payload, Unreadable):
                stored = self._events.pop(job.id, None)
            event = parse_event(json.loads(stored.payload)) if stored is not None else None
            if stored is None or not isinstance(event, InboxMessage):
                break  # it goes out on its own, as the head of its lane, and says why
            followers.append(Follower(job, event, stored.received_at))
        return tuple(followers)

    async def _hand_back(self, job: Job, shown: set[int], *, started: bool = False) -> None:
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

    async def _failed(self, job: Job, error: DeliveryError) -> None:
        await self._hand_back(job, set(), started=True)
        now = self.now()
        message = f"{error.reason}: {error.detail}"
        if error.reason is Reason.RATE_LIMITED and isinstance(error, Retryable):
            if error.retry_after is not None:
                async with self.database.transaction() as connection:
                    await self.pacer.pause(
                        connection, job.destination, now + error.retry_after, now
                    )
        delay = self.policy.next_attempt(
            error, attempts=job.attempts, created_at=job.created_at, now=now, rand=self.rand
        )
        self._count_failure(job, error, dead=delay is None)
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

    def _count_reply(self, destination: str, outcome: str) -> None:
        if self.metrics is not None:
            self.metrics.replies.labels(destination, outcome).inc()

    def _count_failure(self, job: Job, error: DeliveryError, *, dead: bool) -> None:
        if self.metrics is None:
            return
        outcome = "dead" if dead else "retry"
        labels = (job.destination, job.kind, outcome, str(error.reason))
        self.metrics.delivery_attempts.labels(*labels).inc()
        if dead:
            self.metrics.dead_letters.labels(job.destination).inc()

    def _first_time(self, destination: str, reason: Reason, level: int) -> int:
        """`level` the first time a destination fails for this reason since it last
        delivered, DEBUG after that: an outage is one log line, not one per message."""
        reasons = self._failing.setdefault(destination, set())
        if (reason, level) in reasons:
            return logging.DEBUG
        reasons.add((reason, level))
        return level
