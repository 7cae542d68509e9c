"""SQLAlchemy's aiosqlite driver, with each statement in one trip to aiosqlite's thread.

aiosqlite runs every call of a connection on a thread of its own, and SQLAlchemy's adapter
makes four calls for one statement (open a cursor, execute, fetch the rows, close it): four
trips from the event loop to that thread and back. With the loop busy with other work, each
trip waits its turn, and on SQLite's single connection every other transaction waits behind
them. Here a statement makes one trip: the cursor is opened, executed, read and closed on the
thread, and the rows come back together; and a transaction's BEGIN goes with its first
statement instead of making a trip of its own.

Built on the adapter's own classes (SQLAlchemy is pinned in constraints.txt), and handed to
`create_async_engine` as its DBAPI module (`module=`).
"""

from __future__ import annotations

import sqlite3
from collections import deque
from collections.abc import Callable
from typing import Any, TypeVar

import aiosqlite
from sqlalchemy.dialects.sqlite.aiosqlite import (
    AsyncAdapt_aiosqlite_connection,
    AsyncAdapt_aiosqlite_cursor,
    AsyncAdapt_aiosqlite_dbapi,
)

T = TypeVar("T")
_Outcome = tuple[Any, list[Any], int, int | None]  # description, rows, rowcount, lastrowid
Begin = Callable[[sqlite3.Connection], None]  # what a transaction runs first, on the thread


def _after(
    connection: sqlite3.Connection, begin: Begin | None, function: Callable[..., T], *args: Any
) -> T:
    if begin is not None:
        begin(connection)
    return function(connection, *args)


def _execute(
    connection: sqlite3.Connection, operation: str, parameters: Any, many: bool = False
) -> _Outcome:
    """On aiosqlite's thread: the whole statement, from opening its cursor to closing it
    (`many`: once for each set of `parameters`)."""
    cursor = connection.cursor()
    try:
        if many:
            cursor.executemany(operation, parameters)
        else:
            cursor.execute(operation, () if parameters is None else parameters)
        description = cursor.description
        rows = cursor.fetchall() if description else []
        return description, rows, cursor.rowcount, cursor.lastrowid
    finally:
        cursor.close()


class OneTripCursor(AsyncAdapt_aiosqlite_cursor):
    """A cursor that holds a finished statement's outcome; no aiosqlite cursor behind it."""

    __slots__ = ("_description", "_rowcount", "_lastrowid")

    def __init__(self, adapt_connection: AsyncAdapt_aiosqlite_connection) -> None:
        self._adapt_connection = adapt_connection
        self._connection = adapt_connection._connection
        self._cursor = None  # type: ignore[assignment]  # closing it is then a no-op
        self._soft_closed_memoized = {}  # type: ignore[assignment]
        self._rows = deque()
        self._description: Any = None
        self._rowcount = -1
        self._lastrowid: int | None = None

    @property
    def description(self) -> Any:
        return self._description

    @property
    def rowcount(self) -> int:
        return self._rowcount

    @property
    def lastrowid(self) -> int:
        return self._lastrowid  # type: ignore[return-value]

    @property
    def arraysize(self) -> int:
        return 1

    @arraysize.setter
    def arraysize(self, value: int) -> None:
        pass

    async def _async_soft_close(self) -> None:
        pass  # nothing is open on the thread

    def setinputsizes(self, *inputsizes: Any) -> None:
        pass

    async def _execute_async(self, operation: Any, parameters: Any) -> None:
        await self._trip(operation, parameters, many=False)

    async def _executemany_async(self, operation: Any, seq_of_parameters: Any) -> None:
        await self._trip(operation, seq_of_parameters, many=True)

    async def _trip(self, operation: Any, parameters: Any, *, many: bool) -> None:
        connection = self._adapt_connection
        assert isinstance(connection, OneTripConnection)
        async with connection._execute_mutex:
            outcome = await connection.trip(_execute, operation, parameters, many)
        self._description, rows, self._rowcount, self._lastrowid = outcome
        self._rows = deque(rows)


class OneTripConnection(AsyncAdapt_aiosqlite_connection):
    """A connection whose transaction begins in the trip of its first statement: `begin` is
    set when SQLAlchemy begins one (`store.db`), and run on the thread right before that
    statement. A transaction that runs nothing costs no trip at all."""

    __slots__ = ("begin",)
    _cursor_cls = OneTripCursor  # type: ignore[assignment]  # a subclass of the base's

    def __init__(self, dbapi: Any, connection: Any) -> None:
        super().__init__(dbapi, connection)
        self.begin: Begin | None = None

    async def trip(self, function: Callable[..., T], *args: Any) -> T:
        """`function(sqlite3_connection, *args)` on aiosqlite's thread, after the BEGIN of a
        transaction begun since the last trip, in one trip."""
        begin, self.begin = self.begin, None
        result: T = await self._connection._execute(
            _after, self._connection._conn, begin, function, *args
        )
        return result

    def commit(self) -> None:
        if self.begin is None:
            super().commit()
        self.begin = None  # begun and never used: nothing to commit

    def rollback(self) -> None:
        if self.begin is None:
            super().rollback()
        self.begin = None


class OneTripDBAPI(AsyncAdapt_aiosqlite_dbapi):
    """The DBAPI module SQLAlchemy's aiosqlite dialect uses, with `OneTripConnection`s."""

    def connect(self, *arg: Any, **kw: Any) -> OneTripConnection:
        return OneTripConnection(self, super().connect(*arg, **kw)._connection)


def dbapi() -> OneTripDBAPI:
    return OneTripDBAPI(aiosqlite, sqlite3)
