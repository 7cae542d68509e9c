"""The delivery loop: plan the webhook bodies stored since (`intake.planning`), claim due
jobs, deliver each, record the outcome.

Up to `concurrency` jobs run at once, each the head of its own lane, so one slow or
rate-limited conversation never holds up another. The pacer keeps each destination under its
platform's rate, and a destination that answers 429 waits out its Retry-After; both live in
the database, so any number of workers share one pace per destination. When a destination is
behind (no token left once a head took its own), an inbox head is claimed with the inbox
jobs waiting right behind it in its lane, and one post shows them all (`combining`).

The worker runs the loop and each job; its parts do the rest: `claims` (what to take, and
giving leases back), `failures` (retry or dead letter), `counters` (metrics) and
`supervisor` (the work handed in to run beside the deliveries).
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
from dataclasses import dataclass

from bridge.chat import spacing
from bridge.chat.base import ChatAdapter, ChatMoved, TokenRefused
from bridge.config import Config
from bridge.delivery import destinations, moves
from bridge.delivery.claims import Claim, Claimer
from bridge.delivery.counters import DeliveryCounters
from bridge.delivery.failures import FailureRecorder
from bridge.delivery.handlers import HANDLERS, deliver_inbox_combined
from bridge.delivery.pacing import AHEAD, Pacer
from bridge.delivery.supervisor import Named, Supervisor
from bridge.errors import DeliveryError, Permanent, Reason, Retryable
from bridge.intake.planning import Intake
from bridge.jobs import Delivery, Follower, Job, Kind, Unreadable
from bridge.metrics import Metrics
from bridge.retry import RetryPolicy, backoff
from bridge.settings import DEFAULT_JOB_LEASE
from bridge.smstools.api import SmstoolsApi
from bridge.smstools.webhooks import parse_event
from bridge.store import wakeups as wakeups_store
from bridge.store.db import UNAVAILABLE, Database, describe_error, relax_commits
from bridge.store.events import StoredEvent
from bridge.writes import LastWrite

log = logging.getLogger(__name__)

DEFAULT_POLICY = RetryPolicy()
# Jobs running at once, each the head of its own lane. Enough for the first posts of dozens of
# channels with a backlog to go out together, while a paced destination's next job waits for
# its token's moment (up to `pacing.AHEAD`).
CONCURRENCY = 48
# Jobs claimed in one round, at most. Jobs beyond their destination's tokens are given back
# at once, so a busy channel with many waiting conversations costs every round this many
# leases written and released; the loop claims again at once after a round that found this
# many. Larger rounds reach many channels sooner but let several workers on one channel crowd it
# into 429s.
CLAIM_BATCH = 16
# Webhooks first (`Worker.webhooks_stored`): where webhooks are stored in the worker's own process
# (`serve`), a worker with more to do at once waits, before its next round of planning and
# claiming, until the webhooks under way are stored, or GIVE_WAY at most. Under a flood the
# gateway's requests are answered first: they wait on the same event loop (and on SQLite the
# same connection), and one not answered may be lost (Smstools' retries are undocumented),
# where what is stored is only delivered later. Posts under way go on; the loop still goes
# round every GIVE_WAY; once the webhooks stop it catches up at full speed.
GIVE_WAY = 0.02  # seconds


@dataclass(frozen=True)
class WorkerOptions:
    """How a worker paces itself, and its clocks; what tests and tools may change."""

    policy: RetryPolicy = DEFAULT_POLICY
    now: Callable[[], float] = time.time
    rand: Callable[[], float] = random.random
    concurrency: int = CONCURRENCY
    lease: float = DEFAULT_JOB_LEASE
    poll_interval: float = 1.0
    give_way: float = GIVE_WAY
    name: str | None = None  # default: host:pid


class Worker:
    """Delivers outbox jobs until stopped. `wake()` makes it look for work at once."""

    def __init__(
        self,
        database: Database,
        config: Config,
        adapters: Mapping[str, ChatAdapter],
        *,
        options: WorkerOptions | None = None,
        smstools: SmstoolsApi | None = None,
        metrics: Metrics | None = None,
        supervisor: Supervisor | None = None,
    ) -> None:
        options = options or WorkerOptions()
        self.database = database
        self.config = config
        self.adapters = adapters
        self.now = options.now
        self.concurrency = options.concurrency
        self.lease = options.lease
        self.poll_interval = options.poll_interval
        self.give_way = options.give_way
        self.name = options.name or f"{socket.gethostname()}:{os.getpid()}"
        self.smstools = smstools  # the send API, for agents' replies
        self.supervisor = supervisor or Supervisor()
        self.counters = DeliveryCounters(metrics)
        pacer = Pacer(
            database,
            {name: destination.max_rate for name, destination in config.destinations.items()},
            ahead=AHEAD,
        )
        self.intake = Intake(database, config, self.now, metrics, name=self.name)
        self.claimer = Claimer(database, config, pacer, worker=self.name, lease=self.lease)
        self.failures = FailureRecorder(
            database,
            config,
            pacer,
            policy=options.policy,
            rand=options.rand,
            counters=self.counters,
        )
        self._wake = asyncio.Event()
        # Webhooks first (GIVE_WAY): set while no webhook of this process is being stored (the
        # group commit's `at_rest`, given by the app); None: this process stores none
        # (`smsbridge worker`).
        self.webhooks_stored: asyncio.Event | None = None
        # Whether webhook bodies may be waiting for the intake: a wake-up from a store or a
        # NOTIFY, a poll, a full batch. A job that finished wakes the loop for its lane's next
        # job only, and a planning that would find nothing is a transaction for nothing.
        self._unplanned = True
        self._stopping = False
        self._inflight: dict[int, asyncio.Task[None]] = {}
        self._next_token_at: float | None = None
        self.heartbeat: float | None = None  # time.monotonic() of the loop's last round
        self.writes = LastWrite()  # its claims and records of outcomes (readiness)
        self.trouble: str | None = None  # what keeps the loop from starting or going round
        # Destinations whose token the platform refused while running, and why (readiness):
        # nothing more is claimed for them, so their jobs wait for a restart with a new token.
        self.refused: dict[str, str] = {}

    def wake(self) -> None:
        """Look for work at once: bodies to plan, and jobs due."""
        self._unplanned = True
        self._wake.set()

    async def run(self) -> None:
        """Deliver until `stop()`; leases of unfinished jobs are given back on the way out."""
        relax_commits()  # claims: one taken back by a power cut is claimed again
        if self.database.dialect == "postgresql":
            listen = functools.partial(
                wakeups_store.listen, self.database, self.wake, own=self.name
            )
            self.supervisor.start(Named("listen", listen))
        else:
            # SQLite has one delivering process: leases still held are from its previous life
            # (killed), and waiting for them to expire would only delay the queue.
            if not await self._release_leases_of_previous_life():
                return  # stopped before the database took it
            self.supervisor.start()
        try:
            await self._loop()
        finally:
            await self.supervisor.stop()
            await self._shutdown()

    async def _release_leases_of_previous_life(self) -> bool:
        """The worker's first write, tried until it succeeds (a read-only or full database
        is said at once and again at each try) or the worker is stopped; whether it did."""
        attempt = 0
        while True:
            try:
                await self.claimer.release(None)
            except UNAVAILABLE as error:
                wait = backoff(attempt, first=1.0, cap=30.0)
                attempt += 1
                self._cannot_write(f"cannot start delivering ({describe_error(error)})", wait)
            else:
                self._written()
                return True
            await self._pause(wait)
            if self._stopping:
                return False

    def _cannot_write(self, problem: str, wait: float) -> None:
        """Say at once why the loop cannot go on, and keep it for readiness."""
        self.writes.failed(problem, self.now())
        self.trouble = problem
        log.error("%s; trying again in %.0fs", problem, wait)

    def _written(self) -> None:
        self.writes.succeeded(self.now())
        self.trouble = None

    async def _pause(self, seconds: float) -> None:
        """Wait `seconds`, or less if stopped meanwhile (a wake-up for new work is no
        reason to try again sooner)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + seconds
        while not self._stopping and (left := deadline - loop.time()) > 0:
            self._wake.clear()
            await self._woken_within(left)

    async def _loop(self) -> None:
        database_trouble = 0
        while not self._stopping:
            self.heartbeat = time.monotonic()  # /readyz: the loop goes round
            self.supervisor.tick(self.now())
            # Cleared before the claim: a wake-up during it (new work its reads may have
            # missed) ends the wait below at once instead of being lost.
            self._wake.clear()
            try:
                claimed, more = await self._claim()
            except UNAVAILABLE as error:
                # The database is away (restart, lock held too long, disk full): keep trying,
                # never leave the web process acknowledging webhooks nobody delivers.
                wait = backoff(database_trouble, first=1.0, cap=30.0)
                database_trouble += 1
                self._cannot_write(f"cannot claim jobs ({describe_error(error)})", wait)
                await asyncio.sleep(wait)
                continue
            if claimed or database_trouble:  # a claim that takes nothing writes nothing
                self._written()
            if database_trouble:
                log.info("claiming jobs again")
            database_trouble = 0
            # Round again at once only when more may be due: a round right after one that
            # found less than it asked for finds nothing, and on SQLite it would hold the
            # only connection while the jobs just started wait for it.
            if more or self._stopping:
                await self._webhooks_first()
                continue
            if not await self._woken_within(self._idle_wait()):
                self._unplanned = True  # a poll: another process may have stored bodies

    async def _webhooks_first(self) -> None:
        """Before a round at once: let the webhooks under way in this process be stored
        first, for `give_way` at most (GIVE_WAY; a stop meanwhile waits for it too)."""
        if self.webhooks_stored is not None and not self._stopping:
            await _set_within(self.webhooks_stored, self.give_way)

    async def _woken_within(self, seconds: float) -> bool:
        """Return at `wake()` (True), or once `seconds` passed."""
        return await _set_within(self._wake, seconds)

    def _idle_wait(self) -> float:
        """Poll interval, or less when a paced destination gets its next token sooner."""
        if self._next_token_at is None:
            return self.poll_interval
        return min(self.poll_interval, max(0.01, self._next_token_at - self.now()))

    async def stop(self) -> None:
        self._stopping = True
        self._wake.set()

    async def drain(self) -> None:
        """Plan every body waiting, deliver everything due now and everything that becomes
        due; for tests and tools."""
        while True:
            self._unplanned = True  # bodies may have been stored by any means
            claimed, more = await self._claim()
            if more and not claimed:
                continue  # bodies still waiting
            if not claimed and not self._inflight:
                return
            if not claimed:
                await asyncio.wait(list(self._inflight.values()), return_when="FIRST_COMPLETED")

    async def _claim(self) -> tuple[int, bool]:
        """Plan the webhook bodies waiting (`intake`), when any may be, and start the jobs due
        now, as many as there are free slots, in one transaction: a webhook's jobs are claimed
        in the commit that plans them. A round that planned a full batch (a flood) commits it
        before it claims, in a transaction of its own: on SQLite the webhooks waiting for the
        one connection take it in between. How many it started, and whether more may be due
        (bodies are still waiting, or it took as many jobs as it asked for, or waited for a
        slot)."""
        free = self.concurrency - len(self._inflight)
        planning, self._unplanned = self._unplanned, False
        if not planning:
            return await self._claim_jobs(free)
        now = self.now()
        claim = None
        try:
            async with self.database.transaction() as connection:
                planned = await self.intake.plan_in(connection, now)
                if free > 0 and not planned.more:
                    claim = await self.claimer.claim_in(
                        connection, self._usable(), min(free, CLAIM_BATCH), now
                    )
        except BaseException:
            self._unplanned = True
            raise
        # A wake-up meanwhile (bodies stored during the round) is kept: it ends the wait.
        self._unplanned = await self.intake.settle(planned, now) or self._unplanned
        if claim is None:
            if free > 0:  # a full batch (a flood): claimed in a transaction of its own
                claimed, _ = await self._claim_jobs(free)
                return claimed, True
            return 0, True  # no free slot: the next round waits for one
        await self.claimer.committed(claim)
        return self._start(claim, now), claim.full

    async def _claim_jobs(self, free: int) -> tuple[int, bool]:
        if free <= 0:
            await self._woken_within(self.poll_interval)  # go round even with every slot busy
            return 0, True
        now = self.now()
        claim = await self.claimer.claim(self._usable(), min(free, CLAIM_BATCH), now)
        return self._start(claim, now), claim.full

    def _usable(self) -> list[str]:
        """The destinations to claim for: those whose token the platform did not refuse."""
        return [name for name in self.adapters if name not in self.refused]

    def _start(self, claim: Claim, now: float) -> int:
        """Start a task for each head claimed (at `now`, the claim's clock); how many."""
        claimed_at = time.monotonic()
        for job, due in claim.heads:
            not_before = claimed_at + (due - now)
            task = asyncio.create_task(self._run_job(job, not_before), name=f"outbox-{job.id}")
            self._inflight[job.id] = task
            task.add_done_callback(functools.partial(self._done, job.id))
        self._next_token_at = claim.next_token_at
        return len(claim.heads)

    def _done(self, job_id: int, _task: asyncio.Task[None]) -> None:
        self._inflight.pop(job_id, None)
        self.claimer.done(job_id)
        self._wake.set()  # the lane's next job may be due now

    async def _shutdown(self) -> None:
        tasks = dict(self._inflight)
        if not tasks:
            return
        followers = self.claimer.followers_of(tasks)
        _, unfinished = await asyncio.wait(tasks.values(), timeout=5)
        for task in unfinished:
            task.cancel()
        await asyncio.gather(*unfinished, return_exceptions=True)
        cancelled = [job_id for job_id, task in tasks.items() if task.cancelled()]
        cancelled += [follower for job_id in cancelled for follower in followers[job_id]]
        if cancelled:
            await self.claimer.release(cancelled)

    async def _run_job(self, job: Job, not_before: float) -> None:
        spacing.NOT_BEFORE.set(not_before)  # this task's own: its posts wait for its token
        # What a power cut may take back of a chat delivery's records only repeats a chat
        # post; a reply's mark that it is being sent must be on disk before the SMS goes.
        relax_commits(job.kind != Kind.REPLY)
        try:
            await self._attempt(job)
        except UNAVAILABLE as error:
            # Recording the outcome failed: the lease runs out and the job is tried again.
            self.writes.failed(f"cannot record outcomes ({describe_error(error)})", self.now())
            log.error(
                "job %d to %s: cannot record its outcome (%s); it will be tried again "
                "when its lease expires",
                job.id,
                job.destination,
                describe_error(error),
            )
        else:
            self.writes.succeeded(self.now())

    async def _attempt(self, job: Job) -> None:
        try:
            # Inside the lease, so no other worker takes the job while this one may still post.
            # (A timeout in the job's own task: `wait_for` would start one more per job.)
            async with asyncio.timeout(self.lease * 0.8):
                received_at, shown = await self._deliver(job)
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
            await self._finished(job, received_at, shown)

    async def _finished(
        self, job: Job, received_at: float | None, shown: tuple[Follower, ...]
    ) -> None:
        now = self.now()
        await self.claimer.finish([job.id, *(f.job.id for f in shown)], now)
        self.counters.delivered(job, received_at, now)
        for follower in shown:
            self.counters.delivered(follower.job, follower.received_at, now)
        self.failures.delivered(job.destination)

    async def _failed(self, job: Job, error: DeliveryError) -> None:
        await self.claimer.hand_back(job, set(), started=True)
        if isinstance(error, TokenRefused) and job.destination not in self.refused:
            why = destinations.refused_token(self.config, job.destination, error)
            self.refused[job.destination] = why
        await self.failures.failed(job, error, self.now())

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
            await handler(self._delivery(job, adapter, None))
            return None, ()
        stored = self.claimer.event(job)  # read with the claim
        if stored is None:
            raise Permanent(Reason.CONFIG, f"event {job.event_id} of job {job.id} is missing")
        delivery = self._delivery(job, adapter, stored, self.claimer.followers(job))
        shown: tuple[Follower, ...] = ()
        if delivery.followers:
            shown = await deliver_inbox_combined(delivery)
        else:
            await handler(delivery)
        await self.claimer.hand_back(job, {f.job.id for f in shown})
        return stored.received_at, shown

    def _delivery(
        self,
        job: Job,
        adapter: ChatAdapter,
        stored: StoredEvent | None,
        followers: tuple[Follower, ...] = (),
    ) -> Delivery:
        """What the job's handler is given: its event, when it has one (read with the
        claim), else it counts from when it was queued."""
        return Delivery(
            self.database,
            self.config,
            adapter,
            job,
            None if stored is None else parse_event(json.loads(stored.payload)),
            job.created_at if stored is None else stored.received_at,
            self.now,
            smstools=self.smstools,
            count_reply=self.counters.reply,
            followers=followers,
        )


async def _set_within(event: asyncio.Event, seconds: float) -> bool:
    """Whether `event` is set within `seconds` (a timeout in the caller's task: `wait_for`
    would start a task of its own for every wait)."""
    if event.is_set():
        return True
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(seconds):
            await event.wait()
            return True
    return False
