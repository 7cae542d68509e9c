"""Shared transactions: the small units of work of many tasks, in one transaction.

The worker's jobs each read before their post, record it and finish, a few statements each.
On SQLite every transaction holds the only connection, with a BEGIN and a COMMIT of its own,
while webhooks wait for it; on PostgreSQL each costs its round trips. Work handed in while
a shared transaction runs waits for it, and the next takes all of it at once: under load the
transactions grow, not their number. Each caller still returns only once its work is
committed, so what it does next (a post, an SMS) sees the same guarantees as with a
transaction of its own. On PostgreSQL, work that needs no transaction (`atomic=False`) and
finds nobody to share one with runs on its own connection outside any: its statement is its
one round trip, without a BEGIN and a COMMIT around it.

Work that only writes, and needs nothing back, is handed in as `Writes`: statements with
their parameters. The writes of every task in one shared transaction run together, each
statement once for all of them (an executemany: on PostgreSQL one round trip each; on SQLite
all of them in one trip to the driver's thread), where each task's statement would otherwise
make a trip of its own. They run after the transaction's other work: no task waits for
another's write before its commit, so none can tell.

A read of one statement is handed in as `Fetch`, and gets its rows back. On SQLite a shared
transaction made only of reads and writes runs in one trip to the driver's thread: the reads,
then the writes with their BEGIN and COMMIT (reads alone need no transaction there).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Mapping, Sequence
from contextlib import AbstractAsyncContextManager
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

from sqlalchemy import Executable
from sqlalchemy.ext.asyncio import AsyncConnection

T = TypeVar("T")
Work = Callable[[AsyncConnection], Awaitable[Any]]
Write = tuple[Executable, Mapping[str, Any]]  # a statement that returns nothing, its parameters
Merged = dict[Executable, list[Mapping[str, Any]]]  # each statement with all its parameters


@dataclass(frozen=True)
class Writes:
    """One task's writes, which commit together. Writes of one statement run together when
    they share the statement object: a module's constant, not one built per call. Each
    statement runs where it first appears among the transaction's writes, so a task's writes
    must not depend on one another's order."""

    rows: Sequence[Write]


@dataclass(frozen=True)
class Fetch:
    """One task's read: a statement (a module's constant) and its values; its rows come back
    as tuples. Reads need no transaction of their own: on SQLite a shared transaction of
    reads and writes alone runs in one trip to the driver's thread."""

    statement: Executable
    values: Mapping[str, Any]


class Store(Protocol):
    """What shared transactions run on (`Database`)."""

    def unit(self, atomic: bool) -> AbstractAsyncContextManager[AsyncConnection]: ...

    async def fetch_in(
        self, connection: AsyncConnection, statement: Executable, values: Mapping[str, Any]
    ) -> list[tuple[Any, ...]]: ...

    async def write_all(self, connection: AsyncConnection, writes: Merged) -> None: ...

    async def fetch_and_write(
        self, fetches: Sequence[Fetch], writes: Merged, synchronous: str
    ) -> list[list[tuple[Any, ...]]] | None: ...


@dataclass(frozen=True)
class _Waiting:
    work: Work | Writes | Fetch
    done: asyncio.Future[Any]
    synchronous: str  # how durable its caller's commits are (`db.relax_commits`)
    atomic: bool  # whether its statements must commit together


class SharedTransactions:
    """Runs handed-in work in shared transactions, one at a time, each in the order given.

    `synchronous` is the caller's durability (a ContextVar holding "FULL" or "NORMAL"): a
    shared transaction commits as durably as its strictest work asks. `database` opens them
    (`Database.unit`: a transaction, or where no work needs one, on PostgreSQL, a connection
    whose statements each commit alone) and runs reads and merged writes
    (`Database.fetch_in`, `Database.write_all`, `Database.fetch_and_write`).
    """

    def __init__(self, database: Store, synchronous: ContextVar[str]) -> None:
        self._database = database
        self._synchronous = synchronous
        self._waiting: list[_Waiting] = []
        self._running: asyncio.Task[None] | None = None

    async def run(
        self, work: Callable[[AsyncConnection], Awaitable[T]], *, atomic: bool = True
    ) -> T:
        """Run `work(connection)` in the next shared transaction; return its result once
        committed. Its failure is its own: the others are then run again, each alone. A
        caller cancelled meanwhile does not take its work back: it may still commit.

        `atomic=False`: each of its statements may commit alone (it writes with one statement
        at most, and reads under READ COMMITTED see a fresh snapshot per statement anyway)."""
        result: T = await self._hand_in(work, atomic)
        return result

    async def write(self, writes: Writes) -> None:
        """Run `writes` in the next shared transaction, together with the other tasks' (see
        the module's docstring); return once committed. A single statement needs no
        transaction of its own."""
        await self._hand_in(writes, atomic=len(writes.rows) > 1)

    async def fetch(
        self, statement: Executable, values: Mapping[str, Any]
    ) -> list[tuple[Any, ...]]:
        """Run the read `statement` with `values` in the next shared transaction, together
        with the other tasks' work (see `Fetch`); its rows."""
        rows: list[tuple[Any, ...]] = await self._hand_in(Fetch(statement, values), atomic=False)
        return rows

    async def _hand_in(self, work: Work | Writes | Fetch, atomic: bool) -> Any:
        done: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._waiting.append(_Waiting(work, done, self._synchronous.get(), atomic))
        if self._running is None:
            self._running = asyncio.create_task(self._run_all(), name="shared-transactions")
        return await done

    async def _run_all(self) -> None:
        try:
            while self._waiting:
                batch, self._waiting = self._waiting, []
                await self._run_batch(batch)
        finally:
            self._running = None

    async def _run_batch(self, batch: list[_Waiting]) -> None:
        strict = any(waiting.synchronous != "NORMAL" for waiting in batch)
        self._synchronous.set("FULL" if strict else "NORMAL")
        try:
            results = await self._together(batch)
        except Exception as error:
            if len(batch) == 1:
                _settle(batch[0].done, error=error)
                return
            for waiting in batch:  # which one failed is not known: each alone
                await self._run_batch([waiting])
            return
        for waiting, result in zip(batch, results, strict=True):
            _settle(waiting.done, result=result)

    async def _together(self, batch: list[_Waiting]) -> list[Any]:
        merged: Merged = {}
        for waiting in batch:
            if isinstance(waiting.work, Writes):
                for statement, parameters in waiting.work.rows:
                    merged.setdefault(statement, []).append(parameters)
        if all(isinstance(waiting.work, (Writes, Fetch)) for waiting in batch):
            fetches = [w.work for w in batch if isinstance(w.work, Fetch)]
            read = await self._database.fetch_and_write(fetches, merged, self._synchronous.get())
            if read is not None:  # in one go (SQLite)
                rows = iter(read)
                return [next(rows) if isinstance(w.work, Fetch) else None for w in batch]
        atomic = len(batch) > 1 or batch[0].atomic
        async with self._database.unit(atomic) as connection:
            results: list[Any] = []
            for waiting in batch:
                if isinstance(waiting.work, Writes):
                    results.append(None)
                elif isinstance(waiting.work, Fetch):
                    work = waiting.work
                    results.append(
                        await self._database.fetch_in(connection, work.statement, work.values)
                    )
                else:
                    results.append(await waiting.work(connection))
            if merged:
                await self._database.write_all(connection, merged)
            return results


def _settle(
    done: asyncio.Future[Any], *, result: Any = None, error: Exception | None = None
) -> None:
    if done.done():  # its caller is gone (cancelled): nobody to tell
        return
    if error is None:
        done.set_result(result)
    else:
        done.set_exception(error)
