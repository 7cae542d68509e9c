"""Raw webhook bodies and the events in them: read back (the webhook path stores the bodies,
and the worker's intake their events, with `store/group_writes.py`)."""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass

from sqlalchemy import bindparam, func, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from bridge.store.db import Database
from bridge.store.schema import events, webhook_requests

OK = "ok"  # an event's status: understood
UNPARSED = "unparsed"  # stored and counted, `problem` says why it was not understood


@dataclass(frozen=True)
class WaitingBody:
    """A body stored by the webhook path whose events the intake has not planned yet."""

    id: int
    received_at: float
    raw: bytes


_UNPLANNED = webhook_requests.c.planned_at.is_(None)
# FOR UPDATE (PostgreSQL; SQLite has one writer): another intake waits at the first of them
# until this one commits, then skips those it planned, so intakes take turns, in id order.
_WAITING = (
    select(webhook_requests.c.id, webhook_requests.c.received_at, webhook_requests.c.body)
    .where(_UNPLANNED, webhook_requests.c.id > bindparam("after"))
    .order_by(webhook_requests.c.id)
    .limit(bindparam("limit"))
    .with_for_update()
)


async def waiting(
    database: Database, connection: AsyncConnection, after: int, limit: int
) -> list[WaitingBody]:
    """The oldest bodies not planned yet after id `after`, oldest first (through their
    partial index), locked for the caller's transaction where the database locks rows."""
    rows = await database.fetch_in(connection, _WAITING, {"after": after, "limit": limit})
    return [WaitingBody(id, received_at, bytes(raw)) for id, received_at, raw in rows]


async def waiting_backlog(connection: AsyncConnection) -> tuple[int, float | None]:
    """How many bodies wait for the intake, and when the oldest of them arrived."""
    row = (
        await connection.execute(
            select(func.count(), func.min(webhook_requests.c.received_at)).where(_UNPLANNED)
        )
    ).one()
    return int(row[0]), row[1]


@dataclass(frozen=True)
class StoredEvent:
    id: int
    payload: str
    received_at: float


# Read with every claim: built once.
_GET_MANY = select(events.c.id, events.c.payload, events.c.received_at).where(
    events.c.id.in_(bindparam("ids", expanding=True))
)


async def get_many(
    connection: AsyncConnection, event_ids: Collection[int]
) -> dict[int, StoredEvent]:
    """Several events in one query, by id (missing ones are left out)."""
    if not event_ids:
        return {}
    rows = await connection.execute(_GET_MANY, {"ids": list(event_ids)})
    return {row[0]: StoredEvent(*row) for row in rows}


async def not_understood_count(
    connection: AsyncConnection, webhook_type: str | None, problem: str, since: float
) -> int:
    """How many events received after `since` are still not understood, of `webhook_type`
    (None: events without one) and for `problem`."""
    query = (
        select(func.count())
        .select_from(events)
        .where(
            events.c.received_at > since,
            events.c.erased_at.is_(None),  # as the index events_unerased says it
            events.c.status == UNPARSED,
            events.c.problem == problem,
            events.c.webhook_type.is_not_distinct_from(webhook_type),
        )
    )
    return int((await connection.execute(query)).scalar_one())


@dataclass(frozen=True)
class NotUnderstoodEvent:
    id: int
    webhook_id: str | None
    webhook_type: str | None
    problem: str | None
    payload: str
    received_at: float


async def not_understood(
    connection: AsyncConnection, since: float | None, after: int, limit: int
) -> list[NotUnderstoodEvent]:
    """The next `limit` events not understood, in arrival order: after event id `after`,
    received at or after `since` (None: any time), not erased."""
    query = select(
        events.c.id,
        events.c.webhook_id,
        events.c.webhook_type,
        events.c.problem,
        events.c.payload,
        events.c.received_at,
    ).where(events.c.id > after, events.c.status == UNPARSED, events.c.erased_at.is_(None))
    if since is not None:
        query = query.where(events.c.received_at >= since)
    rows = await connection.execute(query.order_by(events.c.id).limit(limit))
    return [NotUnderstoodEvent(*row) for row in rows]


async def holder_of(connection: AsyncConnection, webhook_id: str, event_id: int) -> int | None:
    """The id of another event stored with `webhook_id`, if any."""
    query = select(events.c.id).where(events.c.webhook_id == webhook_id, events.c.id != event_id)
    return (await connection.execute(query.limit(1))).scalar()


async def understood(
    connection: AsyncConnection, event_id: int, webhook_id: str, webhook_type: str
) -> bool:
    """Mark an event not understood as understood now; False when it no longer was one (a
    concurrent run took it)."""
    result = await connection.execute(
        update(events)
        .where(events.c.id == event_id, events.c.status == UNPARSED)
        .values(status=OK, problem=None, webhook_id=webhook_id, webhook_type=webhook_type)
    )
    return int(result.rowcount) == 1


async def still_not_understood(connection: AsyncConnection, event_id: int, problem: str) -> None:
    """Record why an event is still not understood (today's reason may differ from then)."""
    await connection.execute(
        update(events)
        .where(events.c.id == event_id, events.c.status == UNPARSED)
        .values(problem=problem)
    )
