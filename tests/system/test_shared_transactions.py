"""Shared transactions (`Database.shared`): the worker's small units of work, many tasks' in
one transaction, each caller back only once its own work is committed."""

from __future__ import annotations

import asyncio
import sqlite3
from typing import Any

import asyncpg
import pytest
from sqlalchemy import event, func, select, text
from sqlalchemy.ext.asyncio import AsyncConnection

from bridge.settings import normalise_database_url
from bridge.store import schema as tables
from bridge.store.db import Database, relax_commits
from bridge.store.migrations import migrate
from bridge.store.shared import Write, Writes
from tests.support.spies import queries_on_asyncpg


def _count_begins(database: Database) -> list[int]:
    begins: list[int] = []
    event.listen(database.engine.sync_engine, "begin", lambda _connection: begins.append(1))
    return begins


async def _insert(connection: AsyncConnection, name: str) -> str:
    await connection.execute(
        tables.pace.insert().values(destination=name, tokens=1.0, updated_at=0.0, paused_until=0.0)
    )
    return name


async def _names(database: Database) -> set[str]:
    async with database.transaction() as connection:
        rows = await connection.execute(select(tables.pace.c.destination))
        return {str(name) for (name,) in rows}


@pytest.mark.parametrize("atomic", [True, False], ids=["atomic", "standalone-statements"])
async def test_work_handed_in_together_commits_in_one_transaction(
    database: Database, atomic: bool
) -> None:
    """Work whose statements could each commit alone (`atomic=False`) still shares the
    transaction when it comes with other work."""
    await migrate(database)
    begins = _count_begins(database)
    names = [f"d{i}" for i in range(5)]
    results = await asyncio.gather(
        *(database.shared.run(lambda c, n=n: _insert(c, n), atomic=atomic) for n in names)
    )
    assert results == names
    assert len(begins) == 1
    assert await _names(database) == set(names)


async def test_work_handed_in_while_one_runs_waits_and_goes_in_the_next(
    database: Database,
) -> None:
    await migrate(database)
    begins = _count_begins(database)
    first = asyncio.ensure_future(database.shared.run(lambda c: _insert(c, "first")))
    await asyncio.sleep(0)  # the first transaction has begun
    later = [database.shared.run(lambda c, n=n: _insert(c, f"later{n}")) for n in range(4)]
    await asyncio.gather(first, *later)
    assert len(begins) == 2
    assert len(await _names(database)) == 5


async def test_a_failing_work_fails_only_its_caller(database: Database) -> None:
    await migrate(database)

    async def broken(connection: AsyncConnection) -> None:
        await _insert(connection, "broken")
        raise RuntimeError("a bug in one job")

    outcomes = await asyncio.gather(
        database.shared.run(lambda c: _insert(c, "before")),
        database.shared.run(broken),
        database.shared.run(lambda c: _insert(c, "after")),
        return_exceptions=True,
    )
    assert outcomes[0] == "before" and outcomes[2] == "after"
    assert isinstance(outcomes[1], RuntimeError)
    assert await _names(database) == {"before", "after"}


_PACE = tables.pace.insert()  # one statement: the writes of every task run it together


def _paced(name: str) -> Write:
    return _PACE, {
        "destination": name,
        "tokens": 1.0,
        "updated_at": 0.0,
        "paused_until": 0.0,
    }


def _count_statements(database: Database) -> list[tuple[str, bool]]:
    """Each statement the database runs, and whether it ran for many rows (executemany)."""
    statements: list[tuple[str, bool]] = []

    def heard(*args: Any) -> None:
        statement, executemany = args[2], args[5]
        statements.append((statement, executemany))

    event.listen(database.engine.sync_engine, "before_cursor_execute", heard)
    return statements


async def test_the_writes_of_many_tasks_run_each_statement_once_for_all(
    database: Database, trips: list[Any]
) -> None:
    """A post recorded and a job finished are one statement each for every job in the
    transaction, not one per job, past SQLAlchemy: on PostgreSQL one executemany on asyncpg
    (one round trip); on SQLite every statement of the transaction in one trip to the
    driver's thread."""
    await migrate(database)
    begins = _count_begins(database)
    statements = _count_statements(database)
    postgresql = database.dialect == "postgresql"
    on_asyncpg = queries_on_asyncpg(database) if postgresql else []
    names = [f"d{i}" for i in range(6)]
    before = len(trips)
    await asyncio.gather(*(database.shared.write(Writes([_paced(name)])) for name in names))
    await asyncio.sleep(0)  # asyncpg's query loggers hear a loop iteration later
    assert (begins, statements) == ([], [])
    if postgresql:
        # Asyncpg's query loggers hear its executemany, not its prepared statements.
        assert [query.split()[0] for query in on_asyncpg] == ["BEGIN", "INSERT", "COMMIT"]
    else:
        # The BEGIN, every write and the COMMIT in one trip.
        assert len(trips) - before == 1
    assert await _names(database) == set(names)


async def test_a_failing_write_fails_only_its_caller_and_commits_none_of_its_rows(
    database: Database,
) -> None:
    """A task's writes commit together or not at all; another task's failure is not its."""
    await migrate(database)
    await database.shared.write(Writes([_paced("taken")]))
    outcomes = await asyncio.gather(
        database.shared.write(Writes([_paced("before")])),
        database.shared.write(Writes([_paced("half"), _paced("taken")])),
        database.shared.run(lambda c: _insert(c, "work")),
        database.shared.write(Writes([_paced("after")])),
        return_exceptions=True,
    )
    assert [outcome is None for outcome in outcomes] == [True, False, False, True]
    # The driver's own error: the writes run past SQLAlchemy.
    assert isinstance(outcomes[1], (asyncpg.UniqueViolationError, sqlite3.IntegrityError))
    assert outcomes[2] == "work"
    assert await _names(database) == {"taken", "before", "work", "after"}  # no "half"


async def _synchronous(connection: AsyncConnection) -> Any:
    return (await connection.execute(text("PRAGMA synchronous"))).scalar()


async def test_a_shared_sqlite_commit_is_as_durable_as_its_strictest_work(
    sqlite_url: str,
) -> None:
    database = Database(normalise_database_url(sqlite_url))
    try:
        await migrate(database)

        async def relaxed() -> Any:
            relax_commits()
            return await database.shared.run(_synchronous)

        async def strict() -> Any:
            relax_commits(False)
            return await database.shared.run(_synchronous)

        assert await asyncio.create_task(relaxed()) == 1  # NORMAL, alone
        together = await asyncio.gather(relaxed(), strict(), relaxed())
        assert together == [2, 2, 2]  # FULL: the strict one's commit must survive power loss
    finally:
        await database.close()


async def test_writes_alone_on_sqlite_commit_as_durably_as_their_strictest_caller(
    sqlite_url: str,
) -> None:
    """Writes alone run in one trip with their own BEGIN and COMMIT (`fetch_and_write`): a
    reply's mark, written before its SMS goes, still commits with synchronous=FULL."""
    database = Database(normalise_database_url(sqlite_url))

    async def write(name: str, *, relaxed: bool) -> None:
        relax_commits(relaxed)
        await database.shared.write(Writes([_paced(name)]))

    async def synchronous_last_set() -> Any:
        async with database.autocommit() as connection:
            return await database.on_sqlite_thread(
                connection, lambda driver: driver.execute("PRAGMA synchronous").fetchone()[0]
            )

    try:
        await migrate(database)
        await write("alone", relaxed=True)
        assert await synchronous_last_set() == 1  # NORMAL
        await asyncio.gather(write("relaxed", relaxed=True), write("strict", relaxed=False))
        assert await synchronous_last_set() == 2  # FULL
        assert await _names(database) == {"alone", "relaxed", "strict"}
    finally:
        await database.close()


async def test_a_cancelled_caller_does_not_take_its_work_back(database: Database) -> None:
    await migrate(database)
    task = asyncio.ensure_future(database.shared.run(lambda c: _insert(c, "kept")))
    await asyncio.sleep(0)  # handed in
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    await database.shared.run(lambda c: _insert(c, "next"))
    async with database.transaction() as connection:
        count = (await connection.execute(select(func.count()).select_from(tables.pace))).scalar()
    assert count == 2


async def _transaction_ids(connection: AsyncConnection) -> set[int]:
    """The transaction of each of two statements (txid_current gives each its own id)."""
    query = text("SELECT txid_current()")
    return {(await connection.execute(query)).scalar_one() for _ in range(2)}


@pytest.mark.postgres
async def test_lone_work_of_standalone_statements_skips_begin_and_commit_on_postgresql(
    postgres_url: str,
) -> None:
    database = Database(normalise_database_url(postgres_url))
    try:
        await migrate(database)
        # Each statement committed on its own: no BEGIN or COMMIT, one round trip each.
        assert len(await database.shared.run(_transaction_ids, atomic=False)) == 2
        assert len(await database.shared.run(_transaction_ids)) == 1  # atomic: one transaction
    finally:
        await database.close()
