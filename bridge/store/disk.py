"""Old copies of erased rows overwritten on the database's disk (`smsbridge forget`, `prune`).

Erasing a row in SQL leaves its old bytes behind. SQLite with `secure_delete` on (every
connection, `store.db`) zeroes them in the database's pages, but the pages as they were stay
in the `-wal` file until a checkpoint copies the WAL back and truncates it; that needs every
other connection to be reading the newest snapshot, so it is retried and, failing that,
reported. PostgreSQL keeps a row's old versions in the table's heap, and a plain VACUUM only
marks their space free, bytes intact; `VACUUM FULL` writes each table anew without them, once
no transaction that could still see them is open. Backups, PostgreSQL's WAL archive and
replicas are beyond reach (docs/erasure.md).
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Collection
from dataclasses import dataclass

from sqlalchemy import Table, text
from sqlalchemy.ext.asyncio import AsyncConnection

from bridge.retry import backoff
from bridge.store.db import UNAVAILABLE, Database, describe_error

ATTEMPTS = 5
PAUSE = 1.0  # seconds before the second attempt, doubling after
# How long VACUUM FULL waits for a table's lock: webhooks queue behind a waiting VACUUM too.
LOCK_TIMEOUT = "5s"

_NEXT_XID = text("SELECT pg_snapshot_xmax(pg_current_snapshot())::text")
# What could still see a row version erased before the transaction `:next_xid`: a session,
# a prepared transaction or a replication slot whose xmin is older. Until none is left,
# VACUUM FULL copies those versions over. Sessions in every database count: some hold back
# the horizon of all of them (a CREATE DATABASE does), and the others end soon enough.
_OLDER_SNAPSHOTS = text(
    """
    WITH horizon AS (SELECT age(CAST(CAST(:next_xid AS text) AS xid8)::xid) AS age)
    SELECT
      (SELECT count(*) FROM pg_stat_activity, horizon
        WHERE pid <> pg_backend_pid() AND backend_xmin IS NOT NULL
          AND age(backend_xmin) > horizon.age)
      + (SELECT count(*) FROM pg_prepared_xacts, horizon
          WHERE age(transaction) > horizon.age)
      + (SELECT count(*) FROM pg_replication_slots, horizon
          WHERE xmin IS NOT NULL AND age(xmin) > horizon.age)
    """
)


@dataclass(frozen=True)
class Scrubbed:
    """What became of the old copies: `done` once they are overwritten; `detail` says how,
    or why they are not yet."""

    done: bool
    detail: str


async def scrub(
    database: Database,
    tables: Collection[Table],
    *,
    attempts: int = ATTEMPTS,
    pause: float = PAUSE,
) -> Scrubbed:
    """Overwrite what erasing and deleting rows of `tables` (committed before this call)
    left on the disk. A database that cannot do it now is no exception: the reason is
    returned, and running it again later finishes the work."""
    if database.dialect == "sqlite":
        return await _sqlite(database, attempts, pause)
    return await _postgresql(database, tables, attempts, pause)


def _checkpoint(connection: sqlite3.Connection) -> bool:
    """On the driver's thread, outside any transaction: whether the WAL was copied back and
    truncated (SQLite waits `busy_timeout` for other connections first)."""
    busy, _log, _copied = connection.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
    return not busy


async def _sqlite(database: Database, attempts: int, pause: float) -> Scrubbed:
    why = ""
    for attempt in range(attempts):
        try:
            async with database.autocommit() as connection:
                if await database.on_sqlite_thread(connection, _checkpoint):
                    return Scrubbed(
                        True,
                        "SQLite: erased rows zeroed in the database (secure_delete), "
                        "the WAL checkpointed and truncated",
                    )
            why = "other connections kept reading or writing"
        except UNAVAILABLE as error:
            why = describe_error(error)
        if attempt + 1 < attempts:
            await asyncio.sleep(backoff(attempt, first=pause, cap=8 * pause))
    return Scrubbed(
        False, f"SQLite: the WAL still holds old copies ({why}; tried {attempts} times)"
    )


async def _postgresql(
    database: Database, tables: Collection[Table], attempts: int, pause: float
) -> Scrubbed:
    remaining = sorted({table.name for table in tables})
    why = ""
    next_xid: str | None = None
    for attempt in range(attempts):
        try:
            async with database.autocommit() as connection:
                if next_xid is None:
                    next_xid = str((await connection.execute(_NEXT_XID)).scalar_one())
                query = _OLDER_SNAPSHOTS.bindparams(next_xid=next_xid)
                older = int((await connection.execute(query)).scalar_one())
                if older:
                    why = f"{older} older transaction(s) or slot(s) could still see them"
                else:
                    await _rewrite(connection, remaining)
                    if not remaining:
                        return Scrubbed(
                            True,
                            "PostgreSQL: tables rewritten without old row versions "
                            f"(VACUUM FULL: {', '.join(sorted({t.name for t in tables}))})",
                        )
        except UNAVAILABLE as error:
            why = describe_error(error)
        if attempt + 1 < attempts:
            await asyncio.sleep(backoff(attempt, first=pause, cap=8 * pause))
    return Scrubbed(
        False,
        f"PostgreSQL: old row versions still in {', '.join(remaining)} "
        f"({why}; tried {attempts} times)",
    )


async def _rewrite(connection: AsyncConnection, names: list[str]) -> None:
    """VACUUM FULL each table in turn (each commits by itself), taking its name off `names`
    once done: what is left when a lock could not be had in time (which raises) is still to
    do."""
    quote = connection.dialect.identifier_preparer.quote
    await connection.exec_driver_sql(f"SET lock_timeout = '{LOCK_TIMEOUT}'")
    try:
        while names:
            await connection.exec_driver_sql(f"VACUUM (FULL) {quote(names[0])}")
            names.pop(0)
    finally:
        await connection.exec_driver_sql("RESET lock_timeout")
