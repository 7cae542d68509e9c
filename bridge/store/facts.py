"""Small durable key/value facts (the generated webhook token, chats that moved, the Slack
workspace of each destination, where each bot's Telegram polling resumes)."""

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


async def put(database: Database, connection: AsyncConnection, key: str, value: str) -> None:
    """Store `value` under `key`, replacing what the key held."""
    await connection.execute(
        database.insert(facts)
        .values(key=key, value=value)
        .on_conflict_do_update(index_elements=["key"], set_={"value": value})
    )


async def get(connection: AsyncConnection, key: str) -> str | None:
    value = (await connection.execute(select(facts.c.value).where(facts.c.key == key))).scalar()
    return None if value is None else str(value)


def _moved(old_chat: str) -> str:
    return f"telegram_chat_moved:{old_chat}"


async def remember_move(
    database: Database, connection: AsyncConnection, old_chat: str, new_chat: str
) -> bool:
    """A Telegram chat got a new id (`delivery.moves`); True when this call stored it first."""
    return await add(database, connection, _moved(old_chat), new_chat)


async def moved_to(connection: AsyncConnection, old_chat: str) -> str | None:
    """Where a Telegram chat moved to, if it did."""
    return await get(connection, _moved(old_chat))


def _slack_team(destination: str) -> str:
    return f"slack_team:{destination}"


async def remember_slack_team(
    database: Database, connection: AsyncConnection, destination: str, team: str
) -> None:
    """The Slack workspace (team id) a destination's token belongs to, as auth.test said at
    start-up; a later start-up with another workspace's token replaces it."""
    await put(database, connection, _slack_team(destination), team)


async def slack_team(connection: AsyncConnection, destination: str) -> str | None:
    """The destination's own Slack workspace, if the bridge has started with its token."""
    return await get(connection, _slack_team(destination))


def _telegram_offset(bot: str) -> str:
    return f"telegram_offset:{bot}"


async def remember_telegram_offset(
    database: Database, connection: AsyncConnection, bot: str, offset: int
) -> None:
    """The `offset` the bot's next getUpdates asks from: every update before it is stored."""
    await put(database, connection, _telegram_offset(bot), str(offset))


async def telegram_offset(connection: AsyncConnection, bot: str) -> int | None:
    """Where the bot's polling resumes; None before its first stored update."""
    value = await get(connection, _telegram_offset(bot))
    return None if value is None else int(value)
