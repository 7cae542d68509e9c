"""Wake workers when webhook bodies are stored or jobs planned: LISTEN/NOTIFY on PostgreSQL.

A NOTIFY sent inside the planning transaction is delivered only if it commits, and may still
be lost (a listener reconnecting): workers also poll, so a lost NOTIFY costs latency only.
The web side wakes its own process's worker directly, at once, and its NOTIFY names that
worker, which does not hear it (`announce`'s sender). SQLite has no NOTIFY.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

import asyncpg
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection

from bridge.retry import backoff
from bridge.store.db import UNAVAILABLE, Database

log = logging.getLogger(__name__)

CHANNEL = "smsbridge_outbox"
HEARING_TIMEOUT = 5.0  # seconds a new LISTEN waits for its own test NOTIFY


async def announce(database: Database, connection: AsyncConnection, sender: str = "") -> None:
    """Tell listening workers that jobs are due (sent when the transaction commits). A worker
    that planned them and claims next anyway names itself as `sender`: it does not hear it."""
    if database.dialect == "postgresql":
        await connection.execute(
            text("SELECT pg_notify(:channel, :sender)"), {"channel": CHANNEL, "sender": sender}
        )


async def listen(
    database: Database,
    on_notify: Callable[[], None],
    own: str = "",
) -> None:
    """Call `on_notify` for every NOTIFY until cancelled (but those `own` sent, when given:
    `announce`'s sender); reconnect after losing the server.

    Every (re)connection also calls `on_notify` once: a NOTIFY may have been missed meanwhile.
    LISTEN needs a session of its own: it runs on `database.direct_url` when set. Behind a
    pooler without it, or when a LISTEN does not hear its own test NOTIFY (a pooler in
    transaction mode hands the session's server connection to others), this returns and the
    workers only poll.
    """
    failures = 0
    while True:
        try:
            if await _listen_once(database, on_notify, own):
                return
            failures = 0
        except UNAVAILABLE as error:
            log.warning("cannot LISTEN for new jobs (%s); polling meanwhile", type(error).__name__)
            await asyncio.sleep(backoff(failures, first=1.0, cap=30.0))
            failures += 1


async def _listen_once(database: Database, on_notify: Callable[[], None], own: str) -> bool:
    """Listen on one connection until it is lost (False), or find that LISTEN cannot hear
    here (True: poll instead)."""
    if database.direct_url is None and await database.behind_pooler():
        log.info(
            "the database is behind a connection pooler, where LISTEN cannot hear: polling "
            "for new jobs (set DATABASE_DIRECT_URL to a direct connection to be woken at once)"
        )
        return True
    dsn, connect_args = database.session_dsn()
    connection = await asyncpg.connect(dsn, **connect_args)
    try:
        heard = asyncio.Event()

        def notified(_connection: object, _pid: int, _channel: str, sender: str) -> None:
            heard.set()
            if not own or sender != own:
                on_notify()

        await connection.add_listener(CHANNEL, notified)
        async with database.transaction() as planning:
            await announce(database, planning)  # the first wake-up, and the hearing test
        try:
            async with asyncio.timeout(HEARING_TIMEOUT):
                await heard.wait()
        except TimeoutError:
            log.warning(
                "LISTEN on %s does not hear NOTIFY (a connection pooler in transaction mode?): "
                "polling for new jobs; set DATABASE_DIRECT_URL to a direct connection to be "
                "woken at once",
                "DATABASE_DIRECT_URL" if database.direct_url else "DATABASE_URL",
            )
            return True
        while True:  # a half-open connection is only found by using it
            await asyncio.sleep(30)
            await connection.fetchval("SELECT 1", timeout=10)
    except UNAVAILABLE as error:
        log.warning("LISTEN connection lost (%s); reconnecting", type(error).__name__)
        return False
    finally:
        if not connection.is_closed():
            await connection.close()
