"""The webhook path's writes: a group's raw bodies, its events and the inbox jobs they plan,
in one call to the database.

This is the one hot path of the bridge (every webhook goes through it), so it is written for
the round trip, not for the query builder: on SQLite the whole write runs as one call on the
driver's own thread (one hop from the event loop instead of one per statement); on PostgreSQL
it is one statement (data-modifying CTEs over `unnest` arrays, one round trip), run on asyncpg
itself (`Database.fetch_on_asyncpg`). Both do the same thing, in the caller's transaction:

- every body is kept, unless each of its events was a duplicate (a resend adds nothing);
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
class NewBody(NamedTuple):
    raw: bytes
    received_at: float
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
    bodies: Sequence[NewBody]
    events: Sequence[NewEvent]
    jobs: Sequence[NewEventJob]


async def write_alone(
    database: Database, connection: AsyncConnection, group: GroupWrite
) -> dict[str, int]:
    """Store a group in a transaction of its own, in one call (the common case: nothing
    else to plan), on a connection outside any transaction (`Database.autocommit`); return
    the ids of the events stored now, by `webhook_id`. Workers listening on PostgreSQL hear
    of the new jobs once it commits."""
    if database.dialect == "sqlite":
        # The webhook path's commits always survive a power cut (FULL).
        return await database.on_sqlite_thread(
            connection, sqlite_transaction, "FULL", _write_sqlite, *_sqlite_rows(group)
        )
    return await _write_postgresql(database, connection, group, alone=True)


async def write(
    database: Database, connection: AsyncConnection, group: GroupWrite
) -> dict[str, int]:
    """Store a group in the caller's transaction; return the ids of the events stored now,
    by `webhook_id`."""
    if database.dialect == "sqlite":
        return await database.on_sqlite_thread(connection, _write_sqlite, *_sqlite_rows(group))
    return await _write_postgresql(database, connection, group, alone=False)


async def prepare(database: Database, connection: AsyncConnection) -> None:
    """Have `write_alone`'s statement ready on `connection`, one of `Database.autocommit`'s
    on PostgreSQL, before the first group: planning it is a round trip of its own, longer
    than a run."""
    await database.prepare_on_asyncpg(connection, _POSTGRESQL)


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


def _sqlite_rows(group: GroupWrite) -> tuple[Sequence[NewBody], Sequence[NewEvent], list[_JobRow]]:
    return group.bodies, group.events, _job_rows(group.jobs)


_SQLITE_BODY = "INSERT INTO webhook_requests (received_at, body) VALUES (?, ?)"
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


def _write_sqlite(
    connection: sqlite3.Connection,
    bodies: Sequence[NewBody],
    events: Sequence[NewEvent],
    jobs: Sequence[_JobRow],
) -> dict[str, int]:
    """Runs on the driver's thread, inside a transaction (the write lock held)."""
    cursor = connection.cursor()
    try:
        request_ids: list[int] = []
        for body in bodies:
            cursor.execute(_SQLITE_BODY, (body.received_at, body.raw))
            request_ids.append(_rowid(cursor))
        kept = [body.events == 0 for body in bodies]
        stored: dict[str, int] = {}
        for event in events:
            cursor.execute(
                _SQLITE_EVENT,
                (
                    request_ids[event.body],
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
        added_nothing = [(request_ids[index],) for index, keep in enumerate(kept) if not keep]
        if added_nothing:
            cursor.executemany(_SQLITE_FORGET, added_nothing)
        return stored
    finally:
        cursor.close()


def _rowid(cursor: sqlite3.Cursor) -> int:
    assert cursor.lastrowid is not None
    return cursor.lastrowid


# One statement, one round trip: ids for the bodies and jobs are taken from their sequences
# in order, the events go in (duplicates skipped), and only then are the bodies that added
# something and the jobs of events stored now written. The CTEs see one snapshot, so a body
# is kept by looking at what the events' INSERT returned, not at the table.
# Rows come only from `unnest`: the planner guesses its rows alike for any parameters (where
# it takes generate_series' unknown bounds for 1000 rows), so after five runs it keeps one
# plan for all (hash joins, whatever the size) instead of planning every group anew. Each
# sequence is looked up once per run (a subquery), not once per row.
_POSTGRESQL = f"""
WITH body_ids AS MATERIALIZED (
    SELECT nextval((SELECT pg_get_serial_sequence('webhook_requests', 'id')::regclass)) AS id, n
    FROM unnest($3::int[]) WITH ORDINALITY AS b(events, n)
),
new_events AS (
    INSERT INTO events
        (request_id, webhook_id, webhook_type, status, problem, payload, received_at)
    SELECT body_ids.id, e.webhook_id, e.webhook_type, e.status, e.problem, e.payload,
        e.received_at
    FROM unnest($4::int[], $5::text[], $6::text[], $7::text[], $8::text[], $9::text[],
            $10::float8[])
        WITH ORDINALITY
        AS e(body, webhook_id, webhook_type, status, problem, payload, received_at, n)
    JOIN body_ids ON body_ids.n = e.body
    ORDER BY e.n
    ON CONFLICT (webhook_id) DO NOTHING
    RETURNING webhook_id, id, request_id
),
bodies AS (
    INSERT INTO webhook_requests (id, received_at, body)
    SELECT body_ids.id, b.received_at, b.body
    FROM unnest($1::bytea[], $2::float8[], $3::int[]) WITH ORDINALITY
        AS b(body, received_at, events, n)
    JOIN body_ids USING (n)
    WHERE b.events = 0 OR body_ids.id IN (SELECT request_id FROM new_events)
),
job_ids AS MATERIALIZED (
    SELECT nextval((SELECT pg_get_serial_sequence('outbox', 'id')::regclass)) AS id, n
    FROM unnest($11::text[]) WITH ORDINALITY AS j(webhook_id, n)
),
jobs AS (
    INSERT INTO outbox (id, event_id, destination, lane, kind, status, attempts,
        next_attempt_at, created_at, payload, admitted)
    SELECT job_ids.id, new_events.id, j.destination, j.lane, j.kind, 'pending', 0, j.at,
        j.at, j.payload, {ADMITTED_WHEN_STORED["postgresql"]}
    FROM unnest($11::text[], $12::text[], $13::text[], $14::text[], $15::jsonb[],
            $16::float8[])
        WITH ORDINALITY AS j(webhook_id, destination, lane, kind, payload, at, n)
    JOIN job_ids USING (n)
    JOIN new_events USING (webhook_id)
    ORDER BY j.n
    ON CONFLICT DO NOTHING
    RETURNING 1
),
announced AS (  -- a NOTIFY is sent when (and only if) the transaction commits
    SELECT pg_notify($17, '') FROM (SELECT 1 FROM jobs LIMIT 1) AS planned
)
SELECT webhook_id, id FROM new_events, (SELECT count(*) FROM announced) AS once
WHERE webhook_id IS NOT NULL
"""


async def _write_postgresql(
    database: Database, connection: AsyncConnection, group: GroupWrite, *, alone: bool
) -> dict[str, int]:
    bodies, events, jobs = group.bodies, group.events, _job_rows(group.jobs)
    parameters: list[Any] = [
        [body.raw for body in bodies],
        [body.received_at for body in bodies],
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
    parameters += [*columns, wakeups.CHANNEL]
    if alone:  # a transaction of its own: the statement runs on asyncpg itself
        rows = await database.fetch_on_asyncpg(connection, _POSTGRESQL, *parameters)
    else:  # in SQLAlchemy's transaction
        rows = list(await connection.exec_driver_sql(_POSTGRESQL, tuple(parameters)))
    return {str(webhook_id): int(event_id) for webhook_id, event_id in rows}
