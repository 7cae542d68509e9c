"""The webhook path's writes, in two steps: the request path stores each group's raw bodies
(`store`), and the worker's intake later stores their events and the inbox jobs they plan
(`write`), each in one call to the database.

Every webhook goes through both, so they are written for the round trip, not for the query
builder: on SQLite each runs as one call on the driver's own thread (one hop from the event
loop instead of one per statement); on PostgreSQL each is one statement (data-modifying CTEs
over `unnest` arrays, one round trip), the request path's run on asyncpg itself
(`Database.fetch_on_asyncpg`). `write` does, in the caller's transaction:

- every body is marked planned, unless each of its events was a duplicate: then it is
  deleted (a resend adds nothing);
- every event is kept; one whose `webhook_id` was stored before, or comes earlier in the
  group, is a duplicate and is skipped (events without a `webhook_id` are always kept);
- every job is added for its event only if that event was stored now, in the order given
  (job ids are the delivery order within a lane); on SQLite outside its lane's index, which
  the worker's next claim admits it to (`store.outbox`).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

from sqlalchemy.ext.asyncio import AsyncConnection

from bridge.jobs import Payload, lane
from bridge.remembered import remembered
from bridge.store import wakeups
from bridge.store.db import Database, sqlite_transaction
from bridge.store.outbox import ADMITTED_WHEN_STORED, PENDING

_JobRow = tuple[str, str, str, str, str, float]  # webhook_id, destination, lane, kind, payload, at


# A group's rows, one per body, event and job, built for every webhook: named tuples, cheaper
# to build than frozen dataclasses (which set each field through `object.__setattr__`).
class NewBody(NamedTuple):  # as the request path stores it
    raw: bytes
    received_at: float


class PlannedBody(NamedTuple):  # as the intake marks it planned
    id: int
    events: int  # how many items it holds: a body of none is kept


class NewEvent(NamedTuple):
    body: int  # index of its body in the group
    webhook_id: str | None
    webhook_type: str | None
    status: str  # ok | unparsed
    problem: str | None
    payload: str
    received_at: float


class NewEventJob(NamedTuple):
    webhook_id: str  # added only if this event is stored now
    destination: str
    payload: Payload
    at: float  # created, and first due


@dataclass(frozen=True)
class GroupWrite:
    bodies: Sequence[PlannedBody]
    events: Sequence[NewEvent]
    jobs: Sequence[NewEventJob]


async def store(
    database: Database, connection: AsyncConnection, bodies: Sequence[NewBody], sender: str = ""
) -> None:
    """Store raw bodies in a transaction of their own, in one call, in the order given (their
    ids are the order the intake plans them in), on a connection outside any transaction
    (`Database.autocommit`). Workers listening on PostgreSQL hear of them once it commits
    (`sender`: as `wakeups.announce` takes it)."""
    if database.dialect == "sqlite":
        # The webhook path's commits always survive a power cut (FULL).
        await database.on_sqlite_thread(
            connection, sqlite_transaction, "FULL", _store_sqlite, bodies
        )
        return
    received = [body.received_at for body in bodies]
    raw = [body.raw for body in bodies]
    await database.fetch_on_asyncpg(
        connection, _STORE_POSTGRESQL, received, raw, wakeups.CHANNEL, sender
    )


async def write(
    database: Database,
    connection: AsyncConnection,
    group: GroupWrite,
    now: float,
    sender: str = "",
) -> dict[str, int]:
    """Store a group's events and jobs in the caller's transaction, and mark its bodies
    planned at `now`; return the ids of the events stored now, by `webhook_id`. Workers
    listening on PostgreSQL hear of its jobs once it commits (`sender`: as
    `wakeups.announce` takes it)."""
    if database.dialect == "sqlite":
        return await database.on_sqlite_thread(connection, _write_sqlite, *_sqlite_rows(group), now)
    return await _write_postgresql(database, connection, group, now, sender)


async def prepare(database: Database, connection: AsyncConnection) -> None:
    """Have `store`'s statement ready on `connection`, one of `Database.autocommit`'s on
    PostgreSQL, before the first group: planning it is a round trip of its own."""
    await database.prepare_on_asyncpg(connection, _STORE_POSTGRESQL)


def _job_rows(jobs: Sequence[NewEventJob]) -> list[_JobRow]:
    return [
        (job.webhook_id, job.destination, *_job_columns(job.destination, job.payload), job.at)
        for job in jobs
    ]


@remembered
def _job_columns(destination: str, payload: Payload) -> tuple[str, str, str]:
    """A job's lane, kind and stored payload. The jobs of a conversation's messages share
    them (payloads are frozen), and rendering them is most of what building a row costs."""
    return lane(destination, payload), payload.kind, payload.model_dump_json()


def _sqlite_rows(
    group: GroupWrite,
) -> tuple[Sequence[PlannedBody], Sequence[NewEvent], list[_JobRow]]:
    return group.bodies, group.events, _job_rows(group.jobs)


_SQLITE_BODY = "INSERT INTO webhook_requests (received_at, body) VALUES (?, ?)"
_SQLITE_PLANNED = "UPDATE webhook_requests SET planned_at = ? WHERE id = ?"
_SQLITE_EVENT = (
    "INSERT INTO events (request_id, webhook_id, webhook_type, status, problem, payload, "
    "received_at) VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT (webhook_id) DO NOTHING"
)
_SQLITE_FORGET = "DELETE FROM webhook_requests WHERE id = ?"
_SQLITE_JOB = (
    "INSERT INTO outbox (event_id, destination, lane, kind, status, attempts, "
    f"next_attempt_at, created_at, payload, admitted) VALUES (?, ?, ?, ?, '{PENDING}', 0, ?, ?, "
    f"?, {ADMITTED_WHEN_STORED['sqlite']}) ON CONFLICT DO NOTHING"
)


def _store_sqlite(connection: sqlite3.Connection, bodies: Sequence[NewBody]) -> None:
    """Runs on the driver's thread, inside a transaction (the write lock held)."""
    connection.executemany(_SQLITE_BODY, [(body.received_at, body.raw) for body in bodies])


def _write_sqlite(
    connection: sqlite3.Connection,
    bodies: Sequence[PlannedBody],
    events: Sequence[NewEvent],
    jobs: Sequence[_JobRow],
    now: float,
) -> dict[str, int]:
    """Runs on the driver's thread, inside a transaction (the write lock held)."""
    cursor = connection.cursor()
    try:
        kept = [body.events == 0 for body in bodies]
        stored: dict[str, int] = {}
        for event in events:
            cursor.execute(
                _SQLITE_EVENT,
                (
                    bodies[event.body].id,
                    event.webhook_id,
                    event.webhook_type,
                    event.status,
                    event.problem,
                    event.payload,
                    event.received_at,
                ),
            )
            if cursor.rowcount == 1:
                kept[event.body] = True
                if event.webhook_id is not None:
                    stored[event.webhook_id] = _rowid(cursor)
        cursor.executemany(
            _SQLITE_JOB,
            [
                (stored[webhook_id], destination, lane_name, kind, at, at, payload)
                for webhook_id, destination, lane_name, kind, payload, at in jobs
                if webhook_id in stored
            ],
        )
        marks = list(zip(bodies, kept, strict=True))
        cursor.executemany(_SQLITE_PLANNED, [(now, body.id) for body, keep in marks if keep])
        cursor.executemany(_SQLITE_FORGET, [(body.id,) for body, keep in marks if not keep])
        return stored
    finally:
        cursor.close()


def _rowid(cursor: sqlite3.Cursor) -> int:
    assert cursor.lastrowid is not None
    return cursor.lastrowid


# The request path's one statement: the bodies in the order given, then a NOTIFY (sent when
# the transaction commits) for the workers' intake.
_STORE_POSTGRESQL = """
WITH stored AS (
    INSERT INTO webhook_requests (received_at, body)
    SELECT b.received_at, b.body
    FROM unnest($1::float8[], $2::bytea[]) WITH ORDINALITY AS b(received_at, body, n)
    ORDER BY b.n
    RETURNING 1
)
SELECT pg_notify($3, $4) FROM (SELECT 1 FROM stored LIMIT 1) AS any_stored
"""

# The intake's statement: the events go in (duplicates skipped), and only then are the jobs
# of events stored now written, the bodies that added something marked planned and the
# others deleted. The CTEs see one snapshot, so a body is kept by looking at what the events'
# INSERT returned, not at the table. Job ids are taken from their sequence in order, and a
# NOTIFY names the worker that planned them (`wakeups.announce`).
_POSTGRESQL = f"""
WITH given_bodies AS (
    SELECT id, events, n FROM unnest($1::bigint[], $2::int[]) WITH ORDINALITY AS b(id, events, n)
),
new_events AS (
    INSERT INTO events
        (request_id, webhook_id, webhook_type, status, problem, payload, received_at)
    SELECT given_bodies.id, e.webhook_id, e.webhook_type, e.status, e.problem, e.payload,
        e.received_at
    FROM unnest($3::int[], $4::text[], $5::text[], $6::text[], $7::text[], $8::text[],
            $9::float8[])
        WITH ORDINALITY
        AS e(body, webhook_id, webhook_type, status, problem, payload, received_at, n)
    JOIN given_bodies ON given_bodies.n = e.body
    ORDER BY e.n
    ON CONFLICT (webhook_id) DO NOTHING
    RETURNING webhook_id, id, request_id
),
planned AS (
    UPDATE webhook_requests SET planned_at = $16
    FROM given_bodies
    WHERE webhook_requests.id = given_bodies.id
        AND (given_bodies.events = 0 OR given_bodies.id IN (SELECT request_id FROM new_events))
),
forgotten AS (
    DELETE FROM webhook_requests
    USING given_bodies
    WHERE webhook_requests.id = given_bodies.id
        AND given_bodies.events > 0
        AND given_bodies.id NOT IN (SELECT request_id FROM new_events)
),
job_ids AS MATERIALIZED (
    SELECT nextval((SELECT pg_get_serial_sequence('outbox', 'id')::regclass)) AS id, n
    FROM unnest($10::text[]) WITH ORDINALITY AS j(webhook_id, n)
),
jobs AS (
    INSERT INTO outbox (id, event_id, destination, lane, kind, status, attempts,
        next_attempt_at, created_at, payload, admitted)
    SELECT job_ids.id, new_events.id, j.destination, j.lane, j.kind, 'pending', 0, j.at,
        j.at, j.payload, {ADMITTED_WHEN_STORED["postgresql"]}
    FROM unnest($10::text[], $11::text[], $12::text[], $13::text[], $14::jsonb[],
            $15::float8[])
        WITH ORDINALITY AS j(webhook_id, destination, lane, kind, payload, at, n)
    JOIN job_ids USING (n)
    JOIN new_events USING (webhook_id)
    ORDER BY j.n
    ON CONFLICT DO NOTHING
    RETURNING 1
),
announced AS (  -- a NOTIFY is sent when (and only if) the transaction commits
    SELECT pg_notify($17, $18) FROM (SELECT 1 FROM jobs LIMIT 1) AS planned
)
SELECT webhook_id, id FROM new_events, (SELECT count(*) FROM announced) AS once
WHERE webhook_id IS NOT NULL
"""


async def _write_postgresql(
    database: Database, connection: AsyncConnection, group: GroupWrite, now: float, sender: str
) -> dict[str, int]:
    bodies, events, jobs = group.bodies, group.events, _job_rows(group.jobs)
    parameters: list[Any] = [
        [body.id for body in bodies],
        [body.events for body in bodies],
        [event.body + 1 for event in events],  # WITH ORDINALITY counts from 1
        [event.webhook_id for event in events],
        [event.webhook_type for event in events],
        [event.status for event in events],
        [event.problem for event in events],
        [event.payload for event in events],
        [event.received_at for event in events],
    ]
    columns: list[list[Any]] = [[] for _ in range(6)]
    for job in jobs:
        for column, value in zip(columns, job, strict=True):
            column.append(value)
    parameters += [*columns, now, wakeups.CHANNEL, sender]
    rows = await database.fetch_on_asyncpg(connection, _POSTGRESQL, *parameters)
    return {str(webhook_id): int(event_id) for webhook_id, event_id in rows}
