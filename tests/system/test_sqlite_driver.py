"""SQLite statements make one trip to aiosqlite's thread each, and still behave as SQLAlchemy's
own driver's do: rows, row counts, RETURNING, many rows at once, and the driver's errors."""

from __future__ import annotations

import sqlite3
from collections.abc import AsyncIterator
from typing import Any

import aiosqlite
import pytest
from sqlalchemy import Column, Integer, MetaData, String, Table, insert, select, text, update
from sqlalchemy.exc import IntegrityError

from bridge.settings import normalise_database_url
from bridge.store.db import Database

metadata = MetaData()
things = Table(
    "things",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("name", String, nullable=False, unique=True),
)


@pytest.fixture
async def sqlite(sqlite_url: str) -> AsyncIterator[Database]:
    database = Database(normalise_database_url(sqlite_url))
    async with database.transaction() as connection:
        await connection.run_sync(metadata.create_all)
    yield database
    await database.close()


@pytest.fixture
def trips(monkeypatch: pytest.MonkeyPatch) -> list[Any]:
    """Every call aiosqlite runs on its thread, as it is queued (a spy: each call still runs)."""
    calls: list[Any] = []
    queue_call = aiosqlite.Connection._execute

    async def counted(self: aiosqlite.Connection, function: Any, *args: Any, **kwargs: Any) -> Any:
        calls.append(function)
        return await queue_call(self, function, *args, **kwargs)

    monkeypatch.setattr(aiosqlite.Connection, "_execute", counted)
    return calls


async def test_a_statement_with_rows_is_one_trip_to_the_driver_thread(
    sqlite: Database, trips: list[Any]
) -> None:
    async with sqlite.transaction() as connection:
        await connection.execute(insert(things), [{"name": "a"}, {"name": "b"}])
        before = len(trips)
        rows = (await connection.execute(select(things.c.name).order_by(things.c.id))).all()
        assert len(trips) - before == 1
    assert [row.name for row in rows] == ["a", "b"]


async def test_a_transaction_begins_in_the_trip_of_its_first_statement(
    sqlite: Database, trips: list[Any]
) -> None:
    async with sqlite.transaction() as connection:
        await connection.execute(insert(things).values(name="a"))
        await connection.execute(insert(things).values(name="b"))
    assert len(trips) == 3  # BEGIN with the first INSERT, the second, COMMIT
    async with sqlite.transaction():
        pass
    assert len(trips) == 3  # nothing run: no BEGIN, no COMMIT


async def test_work_on_the_driver_thread_is_inside_the_transaction_begun_before_it(
    sqlite: Database,
) -> None:
    def write(raw: sqlite3.Connection) -> bool:
        raw.execute("INSERT INTO things (name) VALUES ('x')")
        return raw.in_transaction

    with pytest.raises(RuntimeError, match="after the write"):
        async with sqlite.transaction() as connection:
            assert await sqlite.on_sqlite_thread(connection, write)
            raise RuntimeError("after the write")
    async with sqlite.transaction() as connection:
        assert (await connection.execute(select(things))).all() == []


async def test_row_counts_returning_and_many_rows_come_back_as_before(sqlite: Database) -> None:
    async with sqlite.transaction() as connection:
        many = await connection.execute(insert(things), [{"name": n} for n in "abc"])
        assert many.rowcount == 3
        returned = await connection.execute(
            insert(things).values(name="d").returning(things.c.id, things.c.name)
        )
        assert returned.one() == (4, "d")
        changed = await connection.execute(
            update(things).where(things.c.name.in_(["a", "b"])).values(name=things.c.name + "!")
        )
        assert changed.rowcount == 2
        one = await connection.execute(insert(things).values(name="e"))
        assert one.inserted_primary_key == (5,)
        nothing = await connection.execute(text("SELECT name FROM things WHERE id > 99"))
        assert nothing.first() is None and list(nothing.keys()) == ["name"]


async def test_the_drivers_errors_come_through_and_roll_the_transaction_back(
    sqlite: Database,
) -> None:
    with pytest.raises(IntegrityError, match="UNIQUE"):
        async with sqlite.transaction() as connection:
            await connection.execute(insert(things).values(name="x"))
            await connection.execute(insert(things).values(name="x"))
    async with sqlite.transaction() as connection:
        assert (await connection.execute(select(things))).all() == []
