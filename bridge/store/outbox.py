"""Outbox jobs: enqueue, claim the head of each lane, finish, retry later, bury.

Claiming takes only the oldest pending job of each lane (a conversation), so a lane is
delivered strictly in order while other lanes proceed. A claim is a lease (`locked_until`):
a worker that dies loses its jobs to another once the lease runs out. On PostgreSQL,
`FOR UPDATE SKIP LOCKED` keeps two workers from claiming the same job. The worker that holds
a head may also lease the jobs right behind it (`claim_followers`), to show them in the
same post; nobody else can claim those while the head is pending.

On SQLite a job is stored outside its lane's index (`admitted` 0), and each claim first admits
the oldest (`ADMIT` at most), in id order: a lane's admitted jobs are then always older than
its others, so its head is found among them. The webhook path writes no page of that index,
where every conversation's next job is a leaf of its own. PostgreSQL stores jobs admitted.

What the worker runs for every claim and every job is built once, with bind parameters
(`_claiming`, `_FINISH`, …): building a statement and keying it for SQLAlchemy's compiled
cache cost as much CPU as running it (`docs/benchmarks.md`).
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass
from functools import cache
from typing import Any

from sqlalchemy import Float, and_, bindparam, exists, func, literal_column, or_, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from bridge.jobs import Job, Kind, Payload, lane, read_payload
from bridge.store.db import Database, listed, one_of
from bridge.store.events import StoredEvent
from bridge.store.schema import events, outbox
from bridge.store.shared import Writes

PENDING, DONE, DEAD = "pending", "done", "dead"
# Jobs a claim admits to their lanes' index, at most (SQLite): the claim holds the write lock
# about 5 ms per thousand (25 ms for 5,000 of 50,000 waiting in 200 lanes), and a backlog a
# web process stored alone goes in over several rounds.
ADMIT = 5000
# Whether a job is in its lane's index as it is stored (`admitted`), by dialect: on
# PostgreSQL; on SQLite the next claim admits it. Every path that stores jobs says it from here.
ADMITTED_WHEN_STORED = {"sqlite": 0, "postgresql": 1}
# As the partial indexes outbox_lane and outbox_unadmitted say it: literals.
_ADMITTED = outbox.c.admitted == literal_column("1")
_NOTICES = outbox.c.kind == literal_column(f"'{Kind.NOTICE}'")
# Dead letters as the partial index outbox_finished holds them (a finished job has its time).
DEAD_LETTERS = and_(outbox.c.status == DEAD, outbox.c.finished_at.is_not(None))


_JOB_COLUMNS = (
    outbox.c.id,
    outbox.c.event_id,
    outbox.c.destination,
    outbox.c.lane,
    outbox.c.kind,
    outbox.c.payload,
    outbox.c.attempts,
    outbox.c.created_at,
    outbox.c.last_error,
)


def _job(row: Sequence[Any], *, unsure: bool = False) -> Job:
    id_, event_id, destination, lane_name, kind, payload, attempts, created_at, last_error = row
    return Job(
        id_,
        event_id,
        destination,
        lane_name,
        kind,
        read_payload(kind, payload),
        attempts,
        created_at,
        last_error,
        unsure,
    )


@dataclass(frozen=True)
class NewJob:
    event_id: int | None
    destination: str
    payload: Payload
    due: float | None = None  # first tried at (default: now)


@cache
def _enqueue(dialect_insert: Any) -> Any:
    # Built once per dialect; many rows go as one multi-row INSERT, ids in the given order
    # (which is the delivery order within a lane).
    return dialect_insert(outbox).on_conflict_do_nothing().returning(outbox.c.id)


async def enqueue_many(
    database: Database, connection: AsyncConnection, jobs: Sequence[NewJob], now: float
) -> int:
    """Add jobs, in order, each in the lane its payload belongs to; return how many were new
    (the same (event, destination, kind) added before keeps the one job)."""
    if not jobs:
        return 0
    rows = [
        {
            "event_id": job.event_id,
            "destination": job.destination,
            "lane": lane(job.destination, job.payload),
            "kind": job.payload.kind,
            "status": PENDING,
            "attempts": 0,
            "next_attempt_at": now if job.due is None else job.due,
            "created_at": now,
            "payload": job.payload.model_dump(mode="json"),
            "admitted": ADMITTED_WHEN_STORED[database.dialect],
        }
        for job in jobs
    ]
    result = await connection.execute(_enqueue(database.insert), rows)
    return len(result.all())


async def enqueue(
    database: Database,
    connection: AsyncConnection,
    *,
    event_id: int | None,
    destination: str,
    payload: Payload,
    now: float,
    due: float | None = None,
) -> bool:
    """Add one job (see `enqueue_many`); False when it was added before."""
    job = NewJob(event_id, destination, payload, due)
    return await enqueue_many(database, connection, [job], now) == 1


# The oldest jobs stored outside their lanes' index, admitted in id order (SQLite).
_ADMIT = (
    update(outbox)
    .where(
        outbox.c.id.in_(
            select(outbox.c.id)
            .where(outbox.c.admitted == literal_column("0"))
            .order_by(outbox.c.id)
            .limit(bindparam("limit"))
        )
    )
    .values(admitted=literal_column("1"))
)

_EVENT = (  # a claimed job's event, read in the statement that leases it
    select(events.c.payload).where(events.c.id == outbox.c.event_id).scalar_subquery(),
    select(events.c.received_at).where(events.c.id == outbox.c.event_id).scalar_subquery(),
)


@cache
def _claiming(dialect: str, pausing: bool) -> tuple[Any, ...]:
    """`claim`'s statements, built once per dialect and whether some destinations are
    paused: on PostgreSQL one, which picks the heads and leases them (one round trip); on
    SQLite, whose RETURNING cannot show what the lease replaced, which heads (with who held
    them), then their leases, picked again by the same query under the same write lock (both
    in one trip to the driver's thread, with the admission before them). Each leased job
    comes back with its event."""
    earlier = outbox.alias("earlier")
    is_head = ~exists().where(
        and_(
            earlier.c.lane == outbox.c.lane,
            earlier.c.id < outbox.c.id,
            earlier.c.status == PENDING,
            earlier.c.admitted == literal_column("1"),
        )
    )
    now = bindparam("now", type_=Float)
    candidates = (
        select(outbox.c.id, outbox.c.locked_by)
        .where(
            outbox.c.status == PENDING,
            _ADMITTED,
            outbox.c.next_attempt_at <= now,
            or_(outbox.c.locked_until.is_(None), outbox.c.locked_until < now),
            is_head,
        )
        .order_by(outbox.c.next_attempt_at, outbox.c.id)
        .limit(bindparam("limit"))
    )
    if pausing:
        candidates = candidates.where(~one_of(dialect, outbox.c.destination, "paused"))
    leasing = update(outbox).values(locked_until=bindparam("until"), locked_by=bindparam("worker"))
    if dialect == "postgresql":
        chosen = candidates.with_for_update(skip_locked=True, of=outbox).cte("chosen")
        return (
            leasing.where(outbox.c.id == chosen.c.id).returning(
                *_JOB_COLUMNS, *_EVENT, chosen.c.locked_by.label("leased_before")
            ),
        )
    picked = candidates.with_only_columns(outbox.c.id)
    return candidates, leasing.where(outbox.c.id.in_(picked)).returning(*_JOB_COLUMNS, *_EVENT)


async def claim(
    database: Database,
    connection: AsyncConnection,
    *,
    worker: str,
    now: float,
    lease: float,
    limit: int,
    paused: Collection[str] = (),
    admit: int = ADMIT,
) -> list[tuple[Job, StoredEvent | None]]:
    """Lease up to `limit` due jobs, each the head of its lane, skipping paused destinations;
    each with its event (None: a job of its own, or its event is gone), in job order. On
    SQLite the oldest jobs not yet admitted to their lanes are admitted first (`admit`)."""
    statements = _claiming(database.dialect, bool(paused))
    values: dict[str, Any] = {"now": now, "limit": limit, "until": now + lease, "worker": worker}
    rows: list[tuple[Any, ...]]
    if paused:
        values["paused"] = listed(database.dialect, paused)
    if database.dialect == "postgresql":
        rows = await database.fetch_in(connection, statements[0], values)
    else:
        candidates, leasing = statements
        _, picked, leased = await database.fetch_on_sqlite(
            connection, (_ADMIT, {"limit": admit}), (candidates, values), (leasing, values)
        )
        leased_before = dict(picked)
        rows = [(*row, leased_before[row[0]]) for row in leased]
    return sorted((_claimed(row) for row in rows), key=lambda claimed: claimed[0].id)


def _claimed(row: Sequence[Any]) -> tuple[Job, StoredEvent | None]:
    """A leased job and its event, from the job's columns, the event's and who held its lease
    before. A job leased before and neither finished nor handed back unstarted may have been
    posted by a worker that died mid-post: whoever takes it over looks before posting again."""
    payload, received_at, leased_before = row[len(_JOB_COLUMNS) :]
    job = _job(row[: len(_JOB_COLUMNS)], unsure=leased_before is not None)
    event = None
    if job.event_id is not None and payload is not None:
        event = StoredEvent(job.event_id, payload, received_at)
    return job, event


async def analyze(connection: AsyncConnection) -> None:
    """Refresh the planner's statistics of the outbox (PostgreSQL)."""
    await connection.exec_driver_sql("ANALYZE outbox")


_FINISH = (
    update(outbox)
    .where(outbox.c.id == bindparam("job_id"))
    .values(status=DONE, finished_at=bindparam("now"), locked_until=None, last_error=None)
)


def finish(job_ids: Collection[int], now: float) -> Writes:
    """Mark jobs delivered (several at once: the jobs one combined post showed)."""
    return Writes([(_FINISH, {"job_id": job_id, "now": now}) for job_id in job_ids])


_FOLLOWING = (
    select(*_JOB_COLUMNS, outbox.c.next_attempt_at, outbox.c.locked_until, outbox.c.locked_by)
    .where(
        outbox.c.lane == bindparam("lane"),
        outbox.c.status == PENDING,
        _ADMITTED,
        outbox.c.id > bindparam("head"),
    )
    .order_by(outbox.c.id)
    .limit(bindparam("limit"))
)
_LEASE = (
    update(outbox)
    .where(outbox.c.id.in_(bindparam("ids", expanding=True)))
    .values(locked_until=bindparam("until"), locked_by=bindparam("worker"))
)


async def claim_followers(
    connection: AsyncConnection,
    head: Job,
    *,
    kind: str,
    worker: str,
    now: float,
    lease: float,
    limit: int,
) -> list[Job]:
    """Lease the due `kind` jobs queued right behind `head` in its lane, in order: up to
    `limit`, stopping at the first that is of another kind, not due, or leased. Nobody else
    claims them meanwhile: they are not heads while `head` is pending."""
    rows = await connection.execute(
        _FOLLOWING, {"lane": head.lane, "head": head.id, "limit": limit}
    )
    followers = []
    for row in rows:
        due_at, locked_until, locked_by = row[len(_JOB_COLUMNS) :]
        # Leased before and never finished: it may be in a post already (`Job.unsure`).
        job = _job(row[: len(_JOB_COLUMNS)], unsure=locked_by is not None)
        leased = locked_until is not None and locked_until >= now
        if job.kind != kind or job.destination != head.destination or due_at > now or leased:
            break
        followers.append(job)
    if followers:
        await connection.execute(
            _LEASE,
            {"ids": [job.id for job in followers], "until": now + lease, "worker": worker},
        )
    return followers


async def retry_later(connection: AsyncConnection, job_id: int, *, at: float, error: str) -> None:
    await connection.execute(
        update(outbox)
        .where(outbox.c.id == job_id, outbox.c.status == PENDING)
        .values(
            attempts=outbox.c.attempts + 1, next_attempt_at=at, locked_until=None, last_error=error
        )
    )


async def bury(connection: AsyncConnection, job_id: int, *, error: str, now: float) -> None:
    """Give up on a job: it stays as a dead letter with its last error."""
    await connection.execute(
        update(outbox)
        .where(outbox.c.id == job_id, outbox.c.status == PENDING)
        .values(
            status=DEAD,
            attempts=outbox.c.attempts + 1,
            finished_at=now,
            locked_until=None,
            last_error=error,
        )
    )


async def notice_lane_used_since(
    database: Database, connection: AsyncConnection, lane_name: str, since: float
) -> bool:
    """Whether a notice job of `lane` was added after `since` (to say a thing once per
    interval).

    Holds the lane until the transaction ends, so two processes asking at once do not both
    hear "no" (PostgreSQL: an advisory lock; SQLite: BEGIN IMMEDIATE already serialises).
    """
    if database.dialect == "postgresql":
        await connection.execute(select(func.pg_advisory_xact_lock(func.hashtext(lane_name))))
    query = select(outbox.c.id).where(
        outbox.c.lane == lane_name,
        outbox.c.created_at > since,
        _NOTICES,  # as the partial index outbox_notice_lane says it, a literal
    )
    return (await connection.execute(query.limit(1))).first() is not None


async def dead_count(connection: AsyncConnection) -> int:
    """How many dead letters there are (`dead` lists only the first of them)."""
    query = select(func.count()).select_from(outbox).where(DEAD_LETTERS)
    return int((await connection.execute(query)).scalar_one())


async def dead(connection: AsyncConnection, limit: int = 1000) -> list[Job]:
    rows = await connection.execute(
        select(*_JOB_COLUMNS).where(DEAD_LETTERS).order_by(outbox.c.id).limit(limit)
    )
    return [_job(row) for row in rows]


async def requeue(connection: AsyncConnection, job_ids: Collection[int] | None, now: float) -> int:
    """Send dead letters again (all when `job_ids` is None); their retry horizon restarts."""
    statement = update(outbox).where(DEAD_LETTERS)
    if job_ids is not None:
        statement = statement.where(outbox.c.id.in_(list(job_ids)))
    result = await connection.execute(
        statement.values(
            status=PENDING, attempts=0, next_attempt_at=now, created_at=now, finished_at=None
        )
    )
    return int(result.rowcount)


@cache
def _releasing(every: bool, started: bool) -> Any:
    """`release`'s statement: for `every` lease or the given ids, keeping the holder's name
    (`started`) or not."""
    statement = update(outbox).where(outbox.c.status == PENDING, outbox.c.locked_by.is_not(None))
    if not every:
        statement = statement.where(outbox.c.id.in_(bindparam("ids", expanding=True)))
    if started:
        return statement.values(locked_until=None)
    return statement.values(locked_until=None, locked_by=None)


async def release(
    connection: AsyncConnection, job_ids: Collection[int] | None, *, started: bool = True
) -> None:
    """Give back leases: of jobs a stopping worker did not finish (so a restart resumes at
    once), or of every job (`None`: the single delivering process on SQLite starts up).

    `started`: the jobs may have been partly delivered, so the next taker looks on the
    platform first (`Job.unsure`); False for jobs handed back before they began."""
    if job_ids is None:
        await connection.execute(_releasing(True, started))
    elif job_ids:
        await connection.execute(_releasing(False, started), {"ids": list(job_ids)})
