"""Wake workers when jobs are planned: LISTEN/NOTIFY on PostgreSQL.

A NOTIFY sent inside the planning transaction is delivered only if it commits, and may still
be lost (a listener reconnecting): workers also poll, so a lost NOTIFY costs latency only.
SQLite has no NOTIFY; there the web process wakes its in-process worker directly.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

import asyncpg
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection

from bridge.retry import backoff
from bridge.store.db import Database

log = logging.getLogger(__name__)

CHANNEL = "smsbridge_outbox"


async def announce(database: Database, connection: AsyncConnection) -> None:
    """Tell listening workers that jobs are due (sent when the transaction commits)."""
    if database.dialect == "postgresql":
        await connection.execute(text(f"NOTIFY {CHANNEL}"))


async def listen(database: Database, on_notify: Callable[[], None]) -> None:
    """Call `on_notify` for every NOTIFY until cancelled; reconnect after losing the server.

    Every (re)connection also calls `on_notify` once: a NOTIFY may have been missed meanwhile.
    """
    dsn = database.engine.url.set(drivername="postgresql").render_as_string(hide_password=False)
    failures = 0
    while True:
        try:
            connection = await asyncpg.connect(dsn, **database.connect_args)
        except (OSError, asyncpg.PostgresError) as error:
            log.warning("cannot LISTEN for new jobs (%s); polling meanwhile", type(error).__name__)
            await asyncio.sleep(backoff(failures, first=1.0, cap=30.0))
            failures += 1
            continue
        failures = 0
        try:
            await connection.add_listener(CHANNEL, lambda *_: on_notify())
            on_notify()
            while True:  # a half-open connection is only found by using it
                await asyncio.sleep(30)
                await connection.fetchval("SELECT 1", timeout=10)
        except (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError) as error:
            log.warning("LISTEN connection lost (%s); reconnecting", type(error).__name__)
        finally:
            if not connection.is_closed():
                await connection.close()
