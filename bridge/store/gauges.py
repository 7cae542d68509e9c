"""What the database says right now, for the metrics read at scrape time.

Every process answers alike: these are read from the shared tables, not counted in memory.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncConnection

from bridge.store.outbox import DEAD_LETTERS, PENDING
from bridge.store.schema import alert_groups, outbox


@dataclass(frozen=True)
class Backlog:
    """Pending jobs of one (destination, kind): how many, and how overdue the oldest due one."""

    destination: str
    kind: str
    depth: int
    oldest_due_age: float  # seconds since the oldest due job became due; 0 when none is due


async def backlog(connection: AsyncConnection, now: float) -> list[Backlog]:
    """The outbox depth and oldest due age per destination and kind."""
    rows = await connection.execute(
        select(
            outbox.c.destination,
            outbox.c.kind,
            func.count(),
            func.min(outbox.c.next_attempt_at).filter(outbox.c.next_attempt_at <= now),
        )
        .where(outbox.c.status == PENDING)
        .group_by(outbox.c.destination, outbox.c.kind)
    )
    return [
        Backlog(destination, kind, depth, 0.0 if due is None else max(0.0, now - due))
        for destination, kind, depth, due in rows
    ]


async def dead_letters(connection: AsyncConnection) -> dict[str, int]:
    """Dead letters kept, per destination."""
    rows = await connection.execute(
        select(outbox.c.destination, func.count())
        .where(DEAD_LETTERS)
        .group_by(outbox.c.destination)
    )
    return {destination: count for destination, count in rows}


async def open_alert_groups(connection: AsyncConnection, since: float) -> int:
    """Alert groups that counted a failure after `since` (their repeat window is open)."""
    query = select(func.count()).select_from(alert_groups).where(alert_groups.c.last_at > since)
    return int((await connection.execute(query)).scalar_one())
