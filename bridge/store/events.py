"""Raw webhook bodies and the events in them: read back (the webhook path writes them with
`store/intake.py`)."""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncConnection

from bridge.store.schema import events

OK = "ok"  # an event's status: understood
UNPARSED = "unparsed"  # stored and counted, `problem` says why it was not understood


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
