"""The database handle: one async engine for SQLite (aiosqlite) or PostgreSQL (asyncpg)."""

from __future__ import annotations

import contextlib
import functools
import json
import sqlite3
import time
from collections.abc import AsyncIterator, Callable, Collection, Mapping, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from contextvars import ContextVar
from typing import Any, TypeVar
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import asyncpg
from sqlalchemy import (
    ARRAY,
    ClauseElement,
    Executable,
    Table,
    Text,
    any_,
    bindparam,
    event,
    func,
    select,
)
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.dialects.postgresql import asyncpg as postgresql_asyncpg
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DBAPIError, SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine
from sqlalchemy.pool import PoolProxiedConnection
from sqlalchemy.sql.compiler import SQLCompiler
from sqlalchemy.sql.elements import ColumnElement

from bridge.retry import backoff
from bridge.store import sqlite_driver
from bridge.store.shared import Fetch, Merged, SharedTransactions

# What a database that cannot do the work raises: SQLAlchemy's own errors, and what the driver
# lets through unwrapped (asyncpg's ConnectionRefusedError, a connect timeout), and the
# drivers' own errors from work run on them directly (`on_sqlite_thread`, `fetch_on_asyncpg`).
UNAVAILABLE: tuple[type[Exception], ...] = (
    SQLAlchemyError,
    OSError,
    TimeoutError,
    sqlite3.DatabaseError,
    asyncpg.PostgresError,
    asyncpg.InterfaceError,
)
T = TypeVar("T")

# How a commit of this task (and of the tasks it starts) is made durable. FULL, the default:
# the WAL is synced before COMMIT returns, so the commit survives a power cut. NORMAL
# (`relax_commits`): it survives a crash of the process, and is synced with the next FULL
# commit or checkpoint (SQLite) or by the WAL writer within moments (PostgreSQL's
# `synchronous_commit` off, for the transaction); a power cut may take back the last moments
# of such commits.
_SYNCHRONOUS: ContextVar[str] = ContextVar("synchronous", default="FULL")
DEFAULT_TIMEOUT = 10.0  # seconds to wait for a connection or a lock before giving up


def relax_commits(relaxed: bool = True) -> None:
    """From here on in this task, commits survive a crash of the process but not
    necessarily of the machine (SQLite's `synchronous=NORMAL` in WAL mode; on PostgreSQL a
    transaction's `synchronous_commit` off: its statements committing one by one outside a
    transaction are unchanged), and cost no sync of their own: for the worker's chat
    deliveries, where losing a record after a power cut can only repeat a chat post. Never on
    the webhook path, nor before an SMS is sent (`relaxed=False` undoes it)."""
    _SYNCHRONOUS.set("NORMAL" if relaxed else "FULL")


def sqlite_begin(connection: sqlite3.Connection, synchronous: str = "FULL") -> None:
    """Begin a write transaction that commits `synchronous` (FULL or NORMAL); runs on the
    driver's thread. The setting is the connection's, so every transaction sets its own."""
    connection.execute(f"PRAGMA synchronous={synchronous}")
    connection.execute("BEGIN IMMEDIATE")


def sqlite_transaction(
    connection: sqlite3.Connection, synchronous: str, function: Callable[..., T], *args: Any
) -> T:
    """On the driver's thread: `function(connection, *args)` in a write transaction of its
    own, committed `synchronous` (FULL or NORMAL), or rolled back if it raises."""
    sqlite_begin(connection, synchronous)
    try:
        result = function(connection, *args)
        connection.execute("COMMIT")
    except BaseException:
        # SQLite has already rolled back after some errors (a full disk): a ROLLBACK then
        # would fail, and its error would hide the one that tells what happened.
        if connection.in_transaction:
            connection.execute("ROLLBACK")
        raise
    return result


class Database:
    """Owns the engine. Every unit of work is `async with database.transaction() as conn`.

    SQLite runs in WAL mode with `synchronous=FULL` (a commit survives power loss; the
    worker's chat deliveries relax it to NORMAL, `relax_commits`) and `secure_delete` on,
    and takes the write lock at BEGIN, so concurrent writers queue on `busy_timeout`
    instead of failing.
    `timeout` bounds the waits: SQLite's busy_timeout; on PostgreSQL connecting and taking a
    connection from the pool. Behind a PostgreSQL pooler in transaction mode (found at the
    first connection) no prepared statement outlives its transaction.
    """

    def __init__(
        self, url: str, *, timeout: float = DEFAULT_TIMEOUT, direct_url: str | None = None
    ) -> None:
        url, connect_args = _driver_options(url)
        self.dialect = "postgresql" if url.startswith("postgresql") else "sqlite"
        self.connect_args = connect_args
        # Where a session outlives its transaction (LISTEN), when `url` is a pooler's.
        self.direct_url = direct_url
        # Whether `url` leads to a pooler that may run consecutive transactions on different
        # server connections; None until the first connection tells.
        self.pooled: bool | None = None if self.dialect == "postgresql" else False
        # hide_parameters: an error's text must never carry message content into the logs.
        options: dict[str, Any] = {
            "connect_args": connect_args,
            "hide_parameters": True,
        }
        if self.dialect == "postgresql":
            # No pre-ping: on asyncpg it costs three round trips (BEGIN, `;`, ROLLBACK) on every
            # checkout. A connection the server dropped fails its first use instead, and that
            # error invalidates the whole pool (SQLAlchemy's disconnect handling): one webhook
            # answered 503 (and sent again) or one claim retried per lost server.
            # Up to 15 connections per process, kept once opened: an overflow connection is
            # opened for one checkout and closed at its return, so under load (a worker's
            # jobs at once) it would be a new connection, with its statements prepared
            # again, every few jobs. The one given back last is taken first (LIFO): under
            # light traffic a few connections serve everything, with their statements
            # prepared, instead of each request taking the next of 15 in turn and preparing
            # its statements there once more.
            # Every connection commits each statement by itself (AUTOCOMMIT): transactions are
            # begun and ended on asyncpg itself (`transaction`), so no SQLAlchemy BEGIN, and no
            # isolation level to set at each checkout and reset at each return.
            options.update(
                pool_size=15,
                max_overflow=0,
                pool_use_lifo=True,
                pool_timeout=timeout,
                connect_args={**connect_args, "timeout": timeout},
                isolation_level="AUTOCOMMIT",
            )
        else:
            # One connection, so one writer. No rollback when it goes back to the pool: every
            # use ends its own transaction (`transaction()` commits or rolls back; work run on
            # the driver's thread commits or rolls back in the same call), and on aiosqlite the
            # rollback would be one more trip to the driver's thread per transaction.
            options.update(pool_size=1, max_overflow=0, pool_reset_on_return=None)
            # Each statement in one trip to aiosqlite's thread, not four.
            options.update(module=sqlite_driver.dbapi())
        self.engine: AsyncEngine = create_async_engine(url, **options)
        # The worker's small units of work, many jobs' in one transaction (`shared`).
        self.shared = SharedTransactions(self, _SYNCHRONOUS)
        if self.dialect == "sqlite":
            _configure_sqlite(self.engine, busy_timeout=timeout)
        else:
            event.listen(self.engine.sync_engine, "do_connect", self._connect_postgresql)

    def _connect_postgresql(
        self, dialect: Any, _record: Any, cargs: list[Any], cparams: dict[str, Any]
    ) -> Any:
        """Open a PostgreSQL connection whose prepared statements suit what lies behind the
        URL. Behind a pooler in transaction mode a named prepared statement would outlive its
        transaction on a server connection this client may not get back; there every statement
        is unnamed and parsed with its execution (asyncpg's and SQLAlchemy's statement caches
        off). Direct, both caches stay on. The first connection finds out, with those safe
        settings, which one it is (`behind_pooler`)."""
        unnamed = {"statement_cache_size": 0, "prepared_statement_cache_size": 0}
        if self.pooled is False:
            return None  # the dialect connects with cparams as they are
        connection = dialect.connect(*cargs, **{**cparams, **unnamed})
        if self.pooled is None:
            try:
                self.pooled = connection.run_async(behind_pooler)
            except BaseException:
                connection.close()
                raise
            if not self.pooled:
                connection.close()
                return dialect.connect(*cargs, **cparams)
        return connection

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[AsyncConnection]:
        """A transaction, committed when the block ends, rolled back if it raises. On
        PostgreSQL it is begun and ended on asyncpg itself, on one of `autocommit`'s
        connections, where SQLAlchemy's statements run as they would in its own: SQLAlchemy's
        BEGIN and COMMIT (each through a greenlet and its events) cost several times the
        round trips' own CPU, and the BEGIN carries the commit's durability (`relax_commits`)
        in the same round trip. Statements on asyncpg itself (`fetch_on_asyncpg`) run in it."""
        if self.dialect != "postgresql":
            async with self.engine.begin() as connection:
                yield connection
            return
        async with self.autocommit() as connection:
            driver, _ = await _asyncpg(connection)
            try:
                await driver.execute(_BEGIN[_SYNCHRONOUS.get()])
                yield connection
                await driver.execute("COMMIT")
            except BaseException as failure:
                await _end_failed(connection, driver, shown=isinstance(failure, Exception))
                raise

    def unit(self, atomic: bool = True) -> AbstractAsyncContextManager[AsyncConnection]:
        """Where a unit of work runs: a transaction, or for work whose statements may each
        commit alone (`atomic=False`) on PostgreSQL, a connection outside any: no BEGIN and
        COMMIT, a round trip each. (On SQLite writes always take BEGIN IMMEDIATE's lock.)"""
        if atomic or self.dialect != "postgresql":
            return self.transaction()
        return self.autocommit()

    @asynccontextmanager
    async def autocommit(self) -> AsyncIterator[AsyncConnection]:
        """A connection outside any transaction: each statement commits on its own (on
        SQLite, the caller's work on the driver's thread begins and commits its own)."""
        connection = await self.connect()
        try:
            yield connection
        finally:
            await connection.close()

    async def connect(self) -> AsyncConnection:
        """`autocommit`'s connection, for a caller that keeps it beyond one block; the caller
        closes it (gives it back to the pool)."""
        return await self.engine.connect()

    @asynccontextmanager
    async def transaction_beside(
        self, connection: AsyncConnection
    ) -> AsyncIterator[AsyncConnection]:
        """A transaction for work next to `connection`, one of `autocommit`'s: on SQLite on
        that connection (the only one there is: another would wait for it forever); on
        PostgreSQL on one of its own (`connection` commits each statement by itself)."""
        if self.dialect == "sqlite":
            async with connection.begin():
                yield connection
        else:
            async with self.transaction() as other:
                yield other

    async def on_sqlite_thread(
        self, connection: AsyncConnection, function: Callable[..., T], *args: Any
    ) -> T:
        """Run `function(sqlite3_connection, *args)` on the driver's own thread, inside the
        transaction `connection` holds: one trip from the event loop for a whole unit of work,
        where each statement through SQLAlchemy would be a trip of its own."""
        assert self.dialect == "sqlite"
        adapted = (await _pooled(connection)).dbapi_connection
        assert isinstance(adapted, sqlite_driver.OneTripConnection)
        return await adapted.trip(function, *args)

    async def fetch_on_sqlite(
        self, connection: AsyncConnection, *runs: tuple[Executable, Mapping[str, Any]]
    ) -> list[list[tuple[Any, ...]]]:
        """Run each statement, a module's constant, with its values, in order, on the
        driver's own thread in one trip, past SQLAlchemy's execution layer, inside the
        transaction `connection` holds; the rows of each. For what the worker runs for every
        job and every claim, where that layer (and the greenlet it runs each statement in)
        costs several times what SQLite does. Each statement is compiled once; values and
        rows are converted as SQLAlchemy would (JSON, booleans, floats)."""
        return await self._sqlite_trip(connection, runs, {})

    async def fetch_in(
        self, connection: AsyncConnection, statement: Executable, values: Mapping[str, Any]
    ) -> list[tuple[Any, ...]]:
        """The rows of `statement` (a module's constant) with `values`, in `connection`'s
        transaction, past SQLAlchemy's execution layer: on SQLite `fetch_on_sqlite`; on
        PostgreSQL on asyncpg itself (`fetch_on_asyncpg`), compiled once, its values and
        rows converted as SQLAlchemy would. A list of values is one parameter (`one_of`)."""
        if self.dialect == "sqlite":
            (rows,) = await self.fetch_on_sqlite(connection, (statement, values))
            return rows
        sql, parameters, fixed, columns = _compiled_for_postgresql(statement)
        rows, ready = await _on_asyncpg(connection, sql, _bound(parameters, fixed, values))
        return _converted([tuple(row) for row in rows], _result_converters(sql, columns, ready))

    async def fetch_and_write(
        self, fetches: Sequence[Fetch], writes: Merged, synchronous: str
    ) -> list[list[tuple[Any, ...]]] | None:
        """Reads, then writes (each statement once for all its values), in one trip to
        SQLite's driver thread: the writes in a transaction of their own, committed
        `synchronous`; reads alone need none. The rows of each read. None on PostgreSQL,
        where reads and writes go through a transaction (`unit`) instead."""
        if self.dialect != "sqlite":
            return None
        reads = [(fetch.statement, fetch.values) for fetch in fetches]
        async with self.autocommit() as connection:
            return await self._sqlite_trip(
                connection, reads, writes, commit=synchronous if writes else None
            )

    async def write_all(self, connection: AsyncConnection, writes: Merged) -> None:
        """Run each statement once for all its sets of values, in the transaction
        `connection` holds (`SharedTransactions`), past SQLAlchemy's execution layer: on
        SQLite every statement in one trip to the driver's thread (`fetch_on_sqlite`); on
        PostgreSQL each on asyncpg itself, an executemany for several sets of values."""
        if self.dialect == "sqlite":
            await self._sqlite_trip(connection, (), writes)
            return
        for statement, rows in writes.items():
            sql, parameters, fixed, _ = _compiled_for_postgresql(statement, tuple(rows[0]))
            bound = [_bound(parameters, fixed, row) for row in rows]
            if len(bound) == 1:
                await _on_asyncpg(connection, sql, bound[0])
            else:
                await _executemany_on_asyncpg(connection, sql, bound)

    async def _sqlite_trip(
        self,
        connection: AsyncConnection,
        reads: Sequence[tuple[Executable, Mapping[str, Any]]],
        writes: Merged,
        commit: str | None = None,
    ) -> list[list[tuple[Any, ...]]]:
        """`reads`, then `writes` (each statement once for all its values), in one trip to
        the driver's thread, compiled once each; the rows of each read, converted. `commit`:
        in a write transaction of their own, committed so durably (else in `connection`'s)."""
        compiled = [_compiled_for_sqlite(statement) for statement, _ in reads]
        batches = [
            (sql, [_bound(parameters, fixed, values)])
            for (sql, parameters, fixed, _), (_, values) in zip(compiled, reads, strict=True)
        ]
        for statement, rows in writes.items():
            sql, parameters, fixed, _ = _compiled_for_sqlite(statement, tuple(rows[0]))
            batches.append((sql, [_bound(parameters, fixed, row) for row in rows]))
        if commit is None:
            results = await self.on_sqlite_thread(connection, _run_all, batches)
        else:
            results = await self.on_sqlite_thread(
                connection, sqlite_transaction, commit, _run_all, batches
            )
        return [
            _converted(rows, converters)
            for rows, (*_, converters) in zip(results[: len(reads)], compiled, strict=True)
        ]

    async def fetch_on_asyncpg(
        self, connection: AsyncConnection, statement: str, *args: Any
    ) -> list[Any]:
        """Run `statement` on asyncpg itself in one round trip, past SQLAlchemy's execution
        layer, in `connection`'s transaction (`transaction`), or outside any (`autocommit`),
        where it commits by itself. For the statements every webhook costs, where that layer
        is a large share of the statement's cost. Prepared once per connection and kept with it:
        directly, a named statement; behind a pooler, an unnamed one that asyncpg parses
        again in the same round trip as each run (asked for anew, a description would cost a
        round trip of its own first). PostgreSQL plans a kept statement again after a schema
        change; only one whose result columns changed would be refused, and the webhook
        path's returns none of a table's. A connection found closed is shown to SQLAlchemy,
        which then drops it and the pool's older connections, as it does when one of its own
        statements finds it."""
        rows, _ = await _on_asyncpg(connection, statement, args)
        return rows

    async def prepare_on_asyncpg(self, connection: AsyncConnection, statement: str) -> None:
        """Prepare `statement` on `connection` (one of `autocommit`'s) for `fetch_on_asyncpg`,
        ahead of its first run, which then skips the round trip that plans it."""
        await _prepared(*await _asyncpg(connection), statement)

    async def behind_pooler(self) -> bool:
        """Whether this database is reached through a pooler that may switch server
        connections between transactions (known from the first connection, made here if
        none was yet)."""
        if self.pooled is None:
            async with self.transaction():
                pass
        return bool(self.pooled)

    def session_dsn(self) -> tuple[str, dict[str, Any]]:
        """Where asyncpg opens a connection that keeps its session (LISTEN), with its connect
        arguments: `direct_url` when given, else the database's own URL."""
        if self.direct_url is None:
            url, connect_args = self.engine.url, self.connect_args
        else:
            direct, connect_args = _driver_options(self.direct_url)
            url = make_url(direct)
        return url.set(drivername="postgresql").render_as_string(hide_password=False), connect_args

    def insert(self, table: Table) -> Any:
        """An INSERT that knows this dialect's ON CONFLICT (both dialects spell it alike)."""
        return insert_for(self.dialect, table)

    async def close(self) -> None:
        await self.engine.dispose()


_Convert = Any  # what SQLAlchemy's type converts a value with, or None
_ASYNCPG = postgresql_asyncpg.dialect()  # type: ignore[no-untyped-call]


@functools.cache
def _compiled_for_postgresql(
    statement: Executable, keys: tuple[str, ...] | None = None
) -> tuple[str, list[tuple[str, _Convert]], dict[str, Any], list[Any]]:
    """`statement` as asyncpg runs it (as SQLAlchemy's asyncpg dialect compiles it, `$n`
    parameters with their casts), as `_compiled_for_sqlite` gives SQLite's, with its
    columns' types. `keys`: as `_compiled_for_sqlite` takes them. Its SQL must not depend
    on its values: a list is one parameter (`one_of`), not an expanding IN."""
    assert isinstance(statement, ClauseElement)
    compiled = statement.compile(dialect=_ASYNCPG, column_keys=None if keys is None else list(keys))
    assert isinstance(compiled, SQLCompiler)
    if compiled.post_compile_params:
        raise ValueError(f"an expanding IN cannot run past SQLAlchemy; use one_of: {compiled}")
    parameters = _parameters(compiled, _ASYNCPG)
    exported = getattr(statement, "exported_columns", ())
    columns = [column.type.dialect_impl(_ASYNCPG) for column in exported]
    return str(compiled), parameters, dict(compiled.params), columns


def _parameters(compiled: SQLCompiler, dialect: Any) -> list[tuple[str, _Convert]]:
    """A compiled statement's parameters in order, each with what its type converts a value
    with on the way in."""
    return [
        (name, compiled.binds[name].type.dialect_impl(dialect).bind_processor(dialect))
        for name in compiled.positiontup or ()
    ]


_RESULT_CONVERTERS: dict[str, list[_Convert]] = {}


def _result_converters(
    sql: str, columns: list[Any], ready: asyncpg.prepared_stmt.PreparedStatement[Any]
) -> list[_Convert]:
    """What converts each column of `sql`'s rows, as SQLAlchemy's asyncpg dialect would
    (a float column's, for one, depends on the type PostgreSQL gives it): found at its first
    run, from the types its prepared statement describes."""
    if sql not in _RESULT_CONVERTERS:
        types = [attribute.type.oid for attribute in ready.get_attributes()]
        _RESULT_CONVERTERS[sql] = [
            column.result_processor(_ASYNCPG, oid)
            for column, oid in zip(columns, types, strict=True)
        ]
    return _RESULT_CONVERTERS[sql]


@functools.cache
def _compiled_for_sqlite(
    statement: Executable, keys: tuple[str, ...] | None = None
) -> tuple[str, list[tuple[str, _Convert]], dict[str, Any], list[_Convert]]:
    """`statement` as SQLite's SQL for values with these `keys` (an INSERT takes its columns
    from them, as SQLAlchemy's own execution does); its parameters in order, each with what
    its type converts a value with on the way in (a float's `to_float`, JSON's encoder); the
    values its builder fixed (a LIMIT's); and what converts each column of its rows."""
    assert isinstance(statement, ClauseElement)
    dialect = sqlite.dialect()
    compiled = statement.compile(dialect=dialect, column_keys=None if keys is None else list(keys))
    assert isinstance(compiled, SQLCompiler)
    parameters = _parameters(compiled, dialect)
    columns = getattr(statement, "exported_columns", ())
    converters = [
        column.type.dialect_impl(dialect).result_processor(dialect, None) for column in columns
    ]
    return str(compiled), parameters, dict(compiled.params), converters


def _bound(
    parameters: list[tuple[str, _Convert]], fixed: dict[str, Any], values: Mapping[str, Any]
) -> list[Any]:
    """`values` as a compiled statement's parameters, in order, converted."""
    bound = []
    for name, convert in parameters:
        value = values[name] if name in values else fixed[name]
        bound.append(value if convert is None or value is None else convert(value))
    return bound


def _converted(rows: list[tuple[Any, ...]], converters: list[_Convert]) -> list[tuple[Any, ...]]:
    if not any(converters):
        return rows
    return [
        tuple(
            value if convert is None else convert(value)
            for value, convert in zip(row, converters, strict=True)
        )
        for row in rows
    ]


def _run_all(
    connection: sqlite3.Connection, batches: list[tuple[str, list[list[Any]]]]
) -> list[list[tuple[Any, ...]]]:
    """On the driver's thread: each statement once for each of its sets of parameters, in
    order; the rows of each (an executemany returns none)."""
    results = []
    for sql, rows in batches:
        if len(rows) == 1:
            results.append(connection.execute(sql, rows[0]).fetchall())
        else:
            connection.executemany(sql, rows)
            results.append([])
    return results


_Prepared = dict[str, "asyncpg.prepared_stmt.PreparedStatement[Any]"]


async def _asyncpg(connection: AsyncConnection) -> tuple[asyncpg.Connection, _Prepared]:
    """The asyncpg connection under `connection` (outside any transaction), and the
    statements `fetch_on_asyncpg` prepared on it, kept with it in the pool."""
    pooled = await _pooled(connection)
    assert pooled.dbapi_connection is not None and pooled.dbapi_connection.autocommit
    driver = pooled.driver_connection
    assert isinstance(driver, asyncpg.Connection)
    prepared: _Prepared = pooled.info.setdefault("asyncpg_prepared", {})
    return driver, prepared


async def _on_asyncpg(
    connection: AsyncConnection, statement: str, args: Sequence[Any]
) -> tuple[list[Any], asyncpg.prepared_stmt.PreparedStatement[Any]]:
    """`Database.fetch_on_asyncpg`'s run: the rows, and the statement as prepared."""
    driver, prepared = await _asyncpg(connection)
    try:
        ready = await _prepared(driver, prepared, statement)
        rows: list[Any] = await ready.fetch(*args)
    except Exception:
        prepared.pop(statement, None)  # prepared again at its next run
        await _shown_if_lost(connection, driver)
        raise
    return rows, ready


async def _executemany_on_asyncpg(
    connection: AsyncConnection, statement: str, rows: list[list[Any]]
) -> None:
    """`statement` once for each of `rows`, on asyncpg itself, in one round trip."""
    driver, _ = await _asyncpg(connection)
    try:
        await driver.executemany(statement, rows)
    except Exception:
        await _shown_if_lost(connection, driver)
        raise


async def _prepared(
    driver: asyncpg.Connection, prepared: _Prepared, statement: str
) -> asyncpg.prepared_stmt.PreparedStatement[Any]:
    """`statement` as prepared on `driver`: once, then kept in `prepared`."""
    if statement not in prepared:
        prepared[statement] = await driver.prepare(statement)
    return prepared[statement]


# How a PostgreSQL transaction begins, by the durability of its commit (`relax_commits`):
# NORMAL's survives a crash of the bridge but not always of the server's machine, and waits
# for no WAL flush of its own (the next durable commit flushes it).
_BEGIN = {
    "FULL": "BEGIN ISOLATION LEVEL READ COMMITTED",
    "NORMAL": "BEGIN ISOLATION LEVEL READ COMMITTED; SET LOCAL synchronous_commit TO off",
}


async def _end_failed(connection: AsyncConnection, driver: asyncpg.Connection, shown: bool) -> None:
    """Roll back a transaction of `Database.transaction` that failed. A connection that was
    lost, or cannot roll back (cut off mid-statement by a cancellation), is not given back to
    the pool. One lost under an error is shown to SQLAlchemy (`_shown_if_lost`), whose error
    then replaces it; not under a cancellation (`shown` false), which must stay what the task
    raises, nor once SQLAlchemy has seen it (it invalidates the connection a cancellation
    cuts off in one of its statements)."""
    with contextlib.suppress(Exception):
        if driver.is_in_transaction():
            await driver.execute("ROLLBACK")
    if connection.invalidated or not (driver.is_closed() or driver.is_in_transaction()):
        return
    try:
        if shown:
            await _shown_if_lost(connection, driver)
    finally:
        if not connection.invalidated:
            await connection.invalidate()


async def _shown_if_lost(connection: AsyncConnection, driver: asyncpg.Connection) -> None:
    """A connection found closed is shown to SQLAlchemy, which then drops it and the pool's
    older connections, as it does when one of its own statements finds it; SQLAlchemy's error
    (a disconnect: the database is unavailable) is raised instead of the driver's."""
    if driver.is_closed():
        await connection.exec_driver_sql("SELECT 1")


async def _pooled(connection: AsyncConnection) -> PoolProxiedConnection:
    """The pool's connection under `connection`. Read directly while connected: SQLAlchemy's
    `get_raw_connection` spawns a greenlet, needed only for a connection that must reconnect
    first."""
    sync = connection.sync_connection
    if sync is not None and not sync.invalidated and not sync.closed:
        return sync.connection
    return await connection.get_raw_connection()


async def behind_pooler(connection: asyncpg.Connection) -> bool:
    """Whether `connection` reaches PostgreSQL through a pooler (PgBouncer, Supavisor and
    the like), which answers the startup with a backend key of its own: the process id it
    gives differs from the server process that runs this session's statements. Ask it on a
    connection without a statement cache: then its statement is unnamed and safe either way."""
    server_pid = await connection.fetchval("SELECT pg_backend_pid()")
    return bool(server_pid != connection.get_server_pid())


def one_of(dialect: str, column: ColumnElement[Any], name: str) -> ColumnElement[bool]:
    """`column` is one of the values given as the one parameter `name` (`listed`): a
    statement compiled once for any number of them, which runs past SQLAlchemy's execution
    layer (`Database.fetch_in`, `fetch_on_sqlite`), where an expanding IN could not."""
    if dialect == "postgresql":
        return column == any_(bindparam(name, type_=ARRAY(Text)))
    values = func.json_each(bindparam(name)).table_valued("value")
    return column.in_(select(values.c.value))


def listed(dialect: str, values: Collection[str]) -> Any:
    """`values` as `one_of`'s parameter: on PostgreSQL an array, on SQLite a JSON array."""
    names = list(values)
    return names if dialect == "postgresql" else json.dumps(names)


def insert_for(dialect: str, table: Table) -> Any:
    """`Database.insert` for a dialect named `postgresql` or `sqlite`."""
    return (postgresql.insert if dialect == "postgresql" else sqlite.insert)(table)


def describe_error(error: BaseException) -> str:
    """A database error in one line, from the driver, without the statement or its
    parameters (they hold message content)."""
    cause = error.orig if isinstance(error, DBAPIError) and error.orig is not None else error
    text = str(cause).strip()
    return f"{type(cause).__name__}: {text.splitlines()[0]}" if text else type(cause).__name__


def _driver_options(url: str) -> tuple[str, dict[str, Any]]:
    """Turn libpq-style options (as PaaS add-ons give them) into asyncpg's: `sslmode=` into
    its `ssl` argument; `channel_binding=prefer` or `disable` dropped, as asyncpg binds no
    channel; `channel_binding=require` a ValueError (settings refuse it first, naming the
    variable). Any other option stays in the URL."""
    if not url.startswith("postgresql"):
        return url, {}
    parts = urlsplit(url)
    query = parse_qsl(parts.query, keep_blank_values=True)
    connect_args: dict[str, Any] = {}
    kept = []
    for key, value in query:
        if key == "sslmode":
            if value != "disable":
                connect_args["ssl"] = value
        elif key == "channel_binding":
            if value == "require":
                raise ValueError("channel_binding=require: asyncpg cannot bind the channel")
        else:
            kept.append((key, value))
    return urlunsplit(parts._replace(query=urlencode(kept))), connect_args


def _configure_sqlite(engine: AsyncEngine, *, busy_timeout: float) -> None:
    @event.listens_for(engine.sync_engine, "connect")
    def on_connect(dbapi_connection: Any, _record: Any) -> None:
        # Let us issue BEGIN ourselves (the driver's implicit BEGIN is DEFERRED).
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute(f"PRAGMA busy_timeout={int(busy_timeout * 1000)}")
        _switch_to_wal(cursor)
        cursor.execute("PRAGMA synchronous=FULL")  # and each transaction sets its own
        cursor.execute("PRAGMA foreign_keys=ON")
        # Erased and deleted rows are overwritten with zeros in their pages, not just marked
        # free: some SQLite builds do it by default, others not (`store.disk` relies on it).
        cursor.execute("PRAGMA secure_delete=ON")
        cursor.close()

    @event.listens_for(engine.sync_engine, "begin")
    def on_begin(connection: Any) -> None:
        # The transaction's PRAGMA and BEGIN go with its first statement, in one trip to
        # aiosqlite's thread (`sqlite_driver`). The setting is read here, on the loop, where
        # the ContextVar is the caller's.
        adapted = connection.connection.dbapi_connection
        assert isinstance(adapted, sqlite_driver.OneTripConnection)
        adapted.begin = functools.partial(sqlite_begin, synchronous=_SYNCHRONOUS.get())


def _switch_to_wal(cursor: Any) -> None:
    """SQLite answers "database is locked" at once, without waiting on busy_timeout, when two
    connections switch a new database to WAL together: try again for a few seconds."""
    for attempt in range(30):  # about five seconds in all
        try:
            cursor.execute("PRAGMA journal_mode=WAL")
            return
        except sqlite3.OperationalError:
            # Runs in the driver's own thread, not on the event loop.
            time.sleep(backoff(attempt, first=0.01, cap=0.2))
    cursor.execute("PRAGMA journal_mode=WAL")
