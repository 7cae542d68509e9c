"""Named holds: one process at a time does a thing that must not run twice (a Socket Mode
connection, a Telegram poller), and another takes over once the holder stops renewing.

A hold is a row (name, holder, expires_at). Taking it succeeds when nobody holds it, when
the caller already does (a renewal), or when the holder let it expire; concurrent callers
agree, because the decision is one statement on the row.
"""

from __future__ import annotations

from sqlalchemy import delete, select
from sqlalchemy.ext.asyncio import AsyncConnection

from bridge.store.db import Database
from bridge.store.schema import holds


async def take(
    database: Database,
    connection: AsyncConnection,
    name: str,
    holder: str,
    *,
    now: float,
    ttl: float,
) -> bool:
    """Take or renew the hold `name` for `ttl` seconds; False while another holds it."""
    statement = database.insert(holds).values(name=name, holder=holder, expires_at=now + ttl)
    statement = statement.on_conflict_do_update(
        index_elements=[holds.c.name],
        set_={"holder": holder, "expires_at": now + ttl},
        where=(holds.c.holder == holder) | (holds.c.expires_at < now),
    ).returning(holds.c.holder)
    return (await connection.execute(statement)).first() is not None


async def release(connection: AsyncConnection, name: str, holder: str) -> None:
    """Give the hold up at once (a clean stop), so another process need not wait it out."""
    await connection.execute(delete(holds).where(holds.c.name == name, holds.c.holder == holder))


async def holder(connection: AsyncConnection, name: str, now: float) -> str | None:
    """Who holds `name` now; None when nobody does (or the hold expired)."""
    row = (
        await connection.execute(
            select(holds.c.holder).where(holds.c.name == name, holds.c.expires_at >= now)
        )
    ).first()
    return None if row is None else str(row.holder)
