"""Small durable key/value facts (the generated webhook token)."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncConnection

from bridge.store.db import Database
from bridge.store.schema import facts


async def get_or_create(
    database: Database, connection: AsyncConnection, key: str, value: str
) -> str:
    """Return the stored value of `key`, storing `value` first when there is none.

    Concurrent starters agree: the first insert wins and everyone reads it back.
    """
    await connection.execute(
        database.insert(facts).values(key=key, value=value).on_conflict_do_nothing()
    )
    return str(
        (await connection.execute(select(facts.c.value).where(facts.c.key == key))).scalar_one()
    )
