"""Raw webhook bodies and the events in them."""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass
from functools import cache
from typing import Any

from sqlalchemy import delete, insert, select
from sqlalchemy.ext.asyncio import AsyncConnection

from bridge.store.db import Database
from bridge.store.schema import events, webhook_requests

# One multi-row INSERT for a group's bodies; ids come back in the order the bodies were given.
_RECORD_REQUESTS = insert(webhook_requests).returning(
    webhook_requests.c.id, sort_by_parameter_order=True
)


async def record_requests(
    connection: AsyncConnection, bodies: Sequence[tuple[bytes, float]]
) -> list[int]:
    """Store raw bodies (with the time each was received); return their ids, in order."""
    if not bodies:
        return []
    rows = [{"body": body, "received_at": received_at} for body, received_at in bodies]
    return [int(row[0]) for row in await connection.execute(_RECORD_REQUESTS, rows)]


async def forget_requests(connection: AsyncConnection, request_ids: Collection[int]) -> None:
    """Drop bodies that added nothing (every event a duplicate), before their commit."""
    if request_ids:
        await connection.execute(
            delete(webhook_requests).where(webhook_requests.c.id.in_(list(request_ids)))
        )


@dataclass(frozen=True)
class NewEvent:
    request_id: int
    webhook_id: str | None
    webhook_type: str | None
    status: str  # ok | unparsed
    problem: str | None
    payload: str
    received_at: float


@cache
def _add_events(dialect_insert: Any) -> Any:
    # Built once per dialect: a multi-row INSERT (SQLAlchemy's "insertmanyvalues") that skips
    # webhook_ids stored before and says which rows it did store.
    return (
        dialect_insert(events)
        .on_conflict_do_nothing(index_elements=["webhook_id"])
        .returning(events.c.webhook_id, events.c.id)
    )


async def add_events(
    database: Database, connection: AsyncConnection, new: Sequence[NewEvent]
) -> dict[str, int]:
    """Store events with few statements; return the ids of those stored now, by webhook_id.

    An event whose `webhook_id` was stored before, or comes earlier in `new`, is skipped (a
    duplicate). Events without a `webhook_id` (not understood) are always stored, unlisted.
    """
    keyed: dict[str, dict[str, Any]] = {}
    unkeyed: list[dict[str, Any]] = []
    for event in new:
        row = event.__dict__
        if event.webhook_id is None:
            unkeyed.append(row)
        else:
            keyed.setdefault(event.webhook_id, row)
    stored: dict[str, int] = {}
    if keyed:
        rows = await connection.execute(_add_events(database.insert), list(keyed.values()))
        stored = {webhook_id: int(event_id) for webhook_id, event_id in rows}
    if unkeyed:
        await connection.execute(insert(events), unkeyed)
    return stored


@dataclass(frozen=True)
class StoredEvent:
    id: int
    payload: str
    received_at: float


async def get(connection: AsyncConnection, event_id: int) -> StoredEvent | None:
    row = (
        await connection.execute(
            select(events.c.id, events.c.payload, events.c.received_at).where(
                events.c.id == event_id
            )
        )
    ).first()
    return StoredEvent(*row) if row else None


async def get_many(
    connection: AsyncConnection, event_ids: Collection[int]
) -> dict[int, StoredEvent]:
    """Several events in one query, by id (missing ones are left out)."""
    if not event_ids:
        return {}
    rows = await connection.execute(
        select(events.c.id, events.c.payload, events.c.received_at).where(
            events.c.id.in_(list(event_ids))
        )
    )
    return {row[0]: StoredEvent(*row) for row in rows}
