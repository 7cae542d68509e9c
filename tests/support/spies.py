"""Spies on what a database runs: they record, and everything still runs."""

from __future__ import annotations

from typing import Any

import asyncpg
import pytest
from asyncpg.prepared_stmt import PreparedStatement
from sqlalchemy import event

from bridge.store.db import Database


def statements_through_sqlalchemy(database: Database) -> list[str]:
    """Each statement `database` runs through SQLAlchemy's execution layer from now on (what
    runs on SQLite's driver thread past it is not seen)."""
    statements: list[str] = []
    event.listen(
        database.engine.sync_engine,
        "before_cursor_execute",
        lambda _connection, _cursor, statement, *_: statements.append(statement),
    )
    return statements


def queries_on_asyncpg(database: Database) -> list[str]:
    """Each query `database` runs through asyncpg's `execute` or `executemany` from now on,
    on any of its pool's connections (a transaction's BEGIN and COMMIT, merged writes; not
    prepared statements), as asyncpg's query loggers hear them: a loop iteration after each
    ran (`asyncio.sleep(0)` before looking)."""
    queries: list[str] = []

    def heard(query: Any) -> None:
        queries.append(query.query)

    def checkout(dbapi_connection: Any, record: Any, _proxy: Any) -> None:
        driver = dbapi_connection.driver_connection
        if record.info.get("spied") is not driver:
            record.info["spied"] = driver
            driver.add_query_logger(heard)

    event.listen(database.engine.sync_engine.pool, "checkout", checkout)
    return queries


def statements_on_asyncpg(
    database: Database, monkeypatch: pytest.MonkeyPatch
) -> list[tuple[str, tuple[Any, ...]]]:
    """Each statement `database` runs on asyncpg from now on, with its values, on any of its
    pool's connections: prepared statements (SQLAlchemy's, and those run past it:
    `Database.fetch_in`, `Database.fetch_on_asyncpg`), and each executemany with its first
    set of values."""
    statements: list[tuple[str, tuple[Any, ...]]] = []
    drivers: set[int] = set()

    def checkout(dbapi_connection: Any, _record: Any, _proxy: Any) -> None:
        drivers.add(id(dbapi_connection.driver_connection))

    event.listen(database.engine.sync_engine.pool, "checkout", checkout)
    fetch, executemany = PreparedStatement.fetch, asyncpg.Connection.executemany

    async def fetched(self: PreparedStatement[Any], *args: Any, **kwargs: Any) -> Any:
        if id(self._connection) in drivers:
            statements.append((self.get_query(), args))
        return await fetch(self, *args, **kwargs)

    async def many(self: asyncpg.Connection, command: str, args: Any, **kwargs: Any) -> Any:
        values = list(args)
        if id(self) in drivers and values:
            statements.append((command, tuple(values[0])))
        return await executemany(self, command, values, **kwargs)

    monkeypatch.setattr(PreparedStatement, "fetch", fetched)
    monkeypatch.setattr(asyncpg.Connection, "executemany", many)
    return statements
