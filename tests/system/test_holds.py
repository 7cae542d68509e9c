"""One process at a time holds a named hold; another takes it once it expires or is given up."""

from __future__ import annotations

from bridge.store import holds as holds_store
from bridge.store.db import Database


async def take(database: Database, holder: str, now: float, ttl: float = 30.0) -> bool:
    async with database.transaction() as connection:
        return await holds_store.take(database, connection, "poll:1", holder, now=now, ttl=ttl)


async def test_a_hold_is_held_by_one_process_until_it_expires(database: Database) -> None:
    assert await take(database, "web.1", now=100.0)
    assert not await take(database, "worker.1", now=110.0)
    assert await take(database, "web.1", now=120.0)  # renewed: now until 150
    assert not await take(database, "worker.1", now=149.0)
    assert await take(database, "worker.1", now=151.0)  # web.1 stopped renewing
    assert not await take(database, "web.1", now=152.0)
    async with database.transaction() as connection:
        assert await holds_store.holder(connection, "poll:1", 152.0) == "worker.1"
        assert await holds_store.holder(connection, "poll:1", 182.0) is None


async def test_a_hold_given_up_is_taken_at_once_and_only_its_holder_can_give_it_up(
    database: Database,
) -> None:
    assert await take(database, "web.1", now=100.0)
    async with database.transaction() as connection:
        await holds_store.release(connection, "poll:1", "worker.1")  # not its hold: no effect
    assert not await take(database, "worker.1", now=101.0)
    async with database.transaction() as connection:
        await holds_store.release(connection, "poll:1", "web.1")
    assert await take(database, "worker.1", now=101.0)


async def test_holds_of_different_names_do_not_meet(database: Database) -> None:
    assert await take(database, "web.1", now=100.0)
    async with database.transaction() as connection:
        other = await holds_store.take(database, connection, "socket", "worker.1", now=100, ttl=30)
    assert other
