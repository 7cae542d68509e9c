"""The worker itself: it survives the database going away, stops when told, and lets its
process's webhooks be stored first."""

from __future__ import annotations

import asyncio
import io
import logging
import re
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import asyncpg
import pytest

from bridge.chat.console import ConsoleAdapter
from bridge.config import load, parse
from bridge.delivery.claims import Claimer
from bridge.delivery.pacing import Pacer
from bridge.delivery.worker import CLAIM_BATCH, Worker, WorkerOptions
from bridge.jobs import ConversationKey, InboxJob
from bridge.settings import normalise_database_url
from bridge.store import outbox as outbox_store
from bridge.store.db import Database
from bridge.store.migrations import migrate
from tests.conftest import sample
from tests.support.harness import running_bridge, store_webhook, wait_until
from tests.support.pipeline_fixtures import inbox
from tests.support.spies import queries_on_asyncpg, statements_on_asyncpg


async def rename_outbox(database_url: str, old: str, new: str) -> None:
    database = Database(normalise_database_url(database_url))
    try:
        async with database.transaction() as connection:
            await connection.exec_driver_sql(f"ALTER TABLE {old} RENAME TO {new}")
    finally:
        await database.close()


async def test_the_worker_keeps_delivering_after_the_database_was_away(
    database_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    output = io.StringIO()
    adapters = {"console": ConsoleAdapter("console", output)}
    async with running_bridge(database_url, load(None, {}), adapters) as bridge:
        # Past its start-up release of old leases (which nothing retries): the loop's claims
        # are what must outlive the outage.
        await wait_until(lambda: bridge.worker.heartbeat is not None, "the loop went round")
        await rename_outbox(database_url, "outbox", "outbox_away")
        await wait_until(
            lambda: any("cannot claim jobs" in r.getMessage() for r in caplog.records),
            "a claim failed while the outbox was away",
        )
        await rename_outbox(database_url, "outbox_away", "outbox")
        assert (await bridge.post(sample("inbox_message"))).status_code == 200
        await wait_until(lambda: "Order 5531" in output.getvalue(), "delivered", timeout=10)
    errors = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
    assert any("cannot claim jobs" in message for message in errors)
    assert not any("Hello, my parcel" in message for message in errors)


@pytest.mark.postgres
async def test_a_stop_during_a_claim_is_not_lost(postgres_url: str) -> None:
    database = Database(normalise_database_url(postgres_url))
    await migrate(database)
    blocker = await asyncpg.connect(postgres_url)
    # An hour between polls: only the stop itself can end the run in time.
    worker = Worker(database, load(None, {}), {}, options=WorkerOptions(poll_interval=3600))

    async def claim_waits() -> bool:
        waiting = await blocker.fetchval(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
            "AND pid <> pg_backend_pid() AND wait_event_type = 'Lock'"
        )
        return bool(waiting)

    holding = blocker.transaction()
    await holding.start()
    await blocker.execute("LOCK TABLE outbox IN EXCLUSIVE MODE")
    running = asyncio.create_task(worker.run())
    try:
        await wait_until(claim_waits, "the worker's claim waits for the lock")
        await worker.stop()
        await holding.commit()  # the claim goes on, finds nothing, and the run must end
        await wait_until(running.done, "the run ended after the claim")
    finally:
        await blocker.close()
        if not running.done():
            running.cancel()
        await asyncio.gather(running, return_exceptions=True)
        await database.close()


CONFIG = """
destinations:
  fast: {console: {}, max_rate: unlimited}
  paced: {console: {}, max_rate: 1/s}
default: [fast, paced]
"""


@asynccontextmanager
async def claiming(postgres_url: str) -> AsyncIterator[tuple[Database, Claimer]]:
    """A migrated PostgreSQL database and a claimer of its outbox for CONFIG."""
    database = Database(normalise_database_url(postgres_url))
    try:
        await migrate(database)
        config = parse(CONFIG, "test", {})
        pacer = Pacer(database, {name: d.max_rate for name, d in config.destinations.items()})
        yield database, Claimer(database, config, pacer, worker="w", lease=30.0)
    finally:
        await database.close()


@pytest.mark.postgres
async def test_a_claim_without_tokens_to_take_is_one_commit_per_statement_on_postgresql(
    postgres_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with claiming(postgres_url) as (database, claimer):
        for lane in ("fast", "paced"):
            async with database.transaction() as connection:
                payload = InboxJob(conversation=ConversationKey(receiver="L", sender=lane))
                await outbox_store.enqueue(
                    database, connection, event_id=None, destination=lane, payload=payload, now=1.0
                )
        # A claim slowed by a busy machine would add its outbox's ANALYZE to the count.
        claimer.slow_claim = None
        transactions = queries_on_asyncpg(database)
        statements = statements_on_asyncpg(database, monkeypatch)
        # No BEGIN and COMMIT round trips around the bucket read and the lease.
        assert [job.destination for job, _ in (await claimer.claim(["fast"], 10, 2.0)).heads] == [
            "fast"
        ]
        await asyncio.sleep(0)
        assert (len(statements), transactions) == (2, [])
        # Tokens are taken in the claim's transaction: a job over its pace is never leased.
        assert [job.destination for job, _ in (await claimer.claim(["paced"], 10, 2.0)).heads] == [
            "paced"
        ]
        await asyncio.sleep(0)
        assert transactions == ["BEGIN ISOLATION LEVEL READ COMMITTED", "COMMIT"]


async def outbox_rows_planned(database: Database) -> float:
    async with database.transaction() as connection:
        result = await connection.exec_driver_sql(
            "SELECT reltuples FROM pg_class WHERE relname = 'outbox'"
        )
        return float(result.scalar_one())


@pytest.mark.postgres
async def test_a_slow_claim_has_the_outbox_analyzed_once_a_minute_at_most(
    postgres_url: str,
) -> None:
    """A backlog that grew faster than autovacuum looks is planned as a few rows and read
    whole by every claim; a slow claim has its statistics refreshed (here every claim is
    slow), and the next slow claim within the minute does not analyze again."""
    async with claiming(postgres_url) as (database, claimer):
        claimer.slow_claim = 0.0

        async def backlog(senders: range) -> None:
            jobs = [
                outbox_store.NewJob(
                    None,
                    "fast",
                    InboxJob(conversation=ConversationKey(receiver="L", sender=str(n))),
                )
                for n in senders
            ]
            async with database.transaction() as connection:
                await outbox_store.enqueue_many(database, connection, jobs, 1.0)

        await backlog(range(2000))
        await claimer.claim(["fast"], 10, 2.0)
        assert await outbox_rows_planned(database) == 2000
        await backlog(range(2000, 3000))
        await claimer.claim(["fast"], 10, 2.0)
        assert await outbox_rows_planned(database) == 2000  # not again within the minute


FAST = """
destinations:
  fast: {console: {}, max_rate: unlimited}
default: [fast]
"""


@asynccontextmanager
async def worker_with_backlog(
    database_url: str, messages: int, give_way: float
) -> AsyncIterator[tuple[Worker, io.StringIO, asyncio.Event]]:
    """A worker with `messages` customer messages stored for it, one conversation each, giving
    way to webhooks of its process that are being stored (the event, clear: some are)."""
    database = Database(normalise_database_url(database_url))
    output = io.StringIO()
    try:
        await migrate(database)
        for n in range(messages):
            await store_webhook(database, [inbox(f"3247000{n:04d}", f"message {n} .")], time.time())
        adapters = {"fast": ConsoleAdapter("fast", output)}
        options = WorkerOptions(give_way=give_way)
        worker = Worker(database, parse(FAST, "test", {}), adapters, options=options)
        stored = asyncio.Event()
        worker.webhooks_stored = stored
        yield worker, output, stored
    finally:
        await database.close()


def posted(output: io.StringIO) -> int:
    return len(re.findall(r"message \d+ \.", output.getvalue()))


async def test_a_worker_with_more_to_do_lets_its_process_s_webhooks_be_stored_first(
    database_url: str,
) -> None:
    async with worker_with_backlog(database_url, CLAIM_BATCH + 4, give_way=3600) as (
        worker,
        output,
        stored,
    ):
        running = asyncio.create_task(worker.run())
        try:
            await wait_until(lambda: posted(output) == CLAIM_BATCH, "the first round posted")
            await asyncio.sleep(0.3)  # time enough for the next round, were it not waiting
            assert posted(output) == CLAIM_BATCH
            stored.set()
            await wait_until(lambda: posted(output) == CLAIM_BATCH + 4, "the rest posted")
        finally:
            stored.set()  # a stop waits for them too
            await worker.stop()
            await running


async def test_a_worker_giving_way_still_goes_round_while_webhooks_keep_coming(
    database_url: str,
) -> None:
    async with worker_with_backlog(database_url, 3 * CLAIM_BATCH, give_way=0.01) as (
        worker,
        output,
        _,
    ):
        running = asyncio.create_task(worker.run())
        try:
            await wait_until(lambda: posted(output) == 3 * CLAIM_BATCH, "every message posted")
        finally:
            await worker.stop()
            await running


async def test_serve_s_worker_gives_way_to_the_webhooks_its_process_stores(
    database_url: str,
) -> None:
    adapters = {"console": ConsoleAdapter("console", io.StringIO())}
    async with running_bridge(database_url, load(None, {}), adapters, run_worker=False) as bridge:
        assert bridge.worker.webhooks_stored is bridge.app.state.receiver.commits.at_rest
