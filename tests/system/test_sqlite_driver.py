"""SQLite statements make one trip to aiosqlite's thread each, and still behave as SQLAlchemy's
own driver's do: rows, row counts, RETURNING, many rows at once, and the driver's errors."""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import AsyncIterator
from typing import Any

import pytest
from sqlalchemy import (
    JSON,
    Column,
    Integer,
    MetaData,
    String,
    Table,
    bindparam,
    insert,
    select,
    text,
    type_coerce,
    update,
)
from sqlalchemy.exc import IntegrityError

from bridge.settings import normalise_database_url
from bridge.store import conversations
from bridge.store.db import Database
from bridge.store.migrations import migrate
from tests.support.spies import statements_through_sqlalchemy

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


_NAMED = select(things.c.id, things.c.name).where(things.c.name == bindparam("name")).limit(1)


async def test_a_read_past_sqlalchemy_gives_the_rows_sqlalchemy_gives_in_one_trip(
    sqlite: Database, trips: list[Any]
) -> None:
    async with sqlite.transaction() as connection:
        await connection.execute(insert(things), [{"name": "a"}, {"name": "b"}])
        through_sqlalchemy = (await connection.execute(_NAMED, {"name": "b"})).all()
        before = len(trips)
        direct, missing = await sqlite.fetch_on_sqlite(
            connection, (_NAMED, {"name": "b"}), (_NAMED, {"name": "c"})
        )
        assert len(trips) - before == 1
    assert [tuple(row) for row in through_sqlalchemy] == direct == [(2, "b")]
    assert missing == []


async def test_a_read_past_sqlalchemy_sees_the_transactions_own_writes(sqlite: Database) -> None:
    async with sqlite.transaction() as connection:
        await connection.execute(insert(things), [{"name": "uncommitted"}])
        assert await sqlite.fetch_on_sqlite(connection, (_NAMED, {"name": "uncommitted"})) == [
            [(1, "uncommitted")]
        ]


async def test_values_and_rows_past_sqlalchemy_are_converted_as_sqlalchemy_converts_them(
    sqlite: Database,
) -> None:
    """Past SQLAlchemy its types still convert what goes in and what comes out: a JSON value
    is stored as JSON text (not as Python's repr of a list) and read back as a list."""
    tagged = insert(things).values(name=bindparam("tags", type_=JSON))
    as_text = select(things.c.name).where(things.c.id == bindparam("id"))
    as_json = select(type_coerce(things.c.name, JSON)).where(things.c.id == bindparam("id"))
    async with sqlite.transaction() as connection:
        await sqlite.write_all(connection, {tagged: [{"tags": ["a"]}, {"tags": {"b": 1}}]})
        assert await sqlite.fetch_on_sqlite(
            connection, (as_text, {"id": 1}), (as_json, {"id": 2})
        ) == [[('["a"]',)], [({"b": 1},)]]


async def test_the_reads_before_many_inbox_posts_are_one_trip_past_sqlalchemy(
    sqlite_url: str, trips: list[Any]
) -> None:
    """The worker reads a message's conversation before posting it, once per message: on
    SQLite the reads of the jobs running together go to the driver's thread in one trip,
    past SQLAlchemy's execution layer and without a transaction (`docs/benchmarks.md`)."""
    database = Database(normalise_database_url(sqlite_url))
    try:
        await migrate(database)
        async with database.transaction() as connection:
            started = await conversations.start(connection, "support", "3246", "3247", 5.0)
        through_sqlalchemy = statements_through_sqlalchemy(database)
        before = len(trips)
        found = await asyncio.gather(
            *(
                conversations.latest_posted(database.shared, "support", "3246", sender, 7)
                for sender in ("3247", "3248", "3249")
            )
        )
        assert len(trips) - before == 1
        assert through_sqlalchemy == []
        assert found == [(started, False), None, None]
    finally:
        await database.close()
