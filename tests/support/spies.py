"""Spies on what a database runs: they record, and everything still runs."""

from __future__ import annotations

from typing import Any

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
    """Each query `database` runs through asyncpg's `execute` from now on, on any of its
    pool's connections (a transaction's BEGIN and COMMIT; not prepared statements), as
    asyncpg's query loggers hear them: a loop iteration after each ran (`asyncio.sleep(0)`
    before looking)."""
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
