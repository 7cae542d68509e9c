"""Spies on what a database runs: they record, and everything still runs."""

from __future__ import annotations

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
