"""Raw webhook bodies and the events in them: read back (the webhook path writes them with
`store/intake.py`)."""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncConnection

from bridge.store.schema import events


@dataclass(frozen=True)
class StoredEvent:
    id: int
    payload: str
    received_at: float


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
