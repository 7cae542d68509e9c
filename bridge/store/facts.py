"""Small durable key/value facts (the generated webhook token, chats that moved)."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncConnection

from bridge.store.db import Database
from bridge.store.schema import facts


async def add(database: Database, connection: AsyncConnection, key: str, value: str) -> bool:
    """Store `value` under `key` unless the key has one; True when this call stored it.

    Concurrent callers agree: the first insert wins, the others get False.
    """
    result = await connection.execute(
        database.insert(facts)
        .values(key=key, value=value)
        .on_conflict_do_nothing()
        .returning(facts.c.key)
    )
    return result.first() is not None


async def get(connection: AsyncConnection, key: str) -> str | None:
    value = (await connection.execute(select(facts.c.value).where(facts.c.key == key))).scalar()
    return None if value is None else str(value)
