"""Raw webhook bodies and the events in them."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import insert, select
from sqlalchemy.ext.asyncio import AsyncConnection

from bridge.store.db import Database
from bridge.store.schema import events, webhook_requests


async def record_request(connection: AsyncConnection, body: bytes, now: float) -> int:
    result = await connection.execute(
        insert(webhook_requests).values(received_at=now, body=body).returning(webhook_requests.c.id)
    )
    return int(result.scalar_one())


async def add_event(
    database: Database,
    connection: AsyncConnection,
    *,
    request_id: int,
    webhook_id: str | None,
    webhook_type: str | None,
    status: str,
    problem: str | None,
    payload: str,
    now: float,
) -> int | None:
    """Store an event; return its id, or None when its `webhook_id` was stored before."""
    statement = (
        database.insert(events)
        .values(
            request_id=request_id,
            webhook_id=webhook_id,
            webhook_type=webhook_type,
            status=status,
            problem=problem,
            payload=payload,
            received_at=now,
        )
        .on_conflict_do_nothing(index_elements=["webhook_id"])
        .returning(events.c.id)
    )
    return (await connection.execute(statement)).scalar_one_or_none()


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
