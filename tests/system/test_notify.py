"""On PostgreSQL a NOTIFY wakes idle workers at once; polling is only the fallback.

A listener also wakes its worker once each time it (re)connects, so these tests spend that
wake-up before a job is planned: only the NOTIFY can then bring the job.
"""

from __future__ import annotations

import asyncio
import io

import asyncpg
import pytest

from bridge.chat.console import ConsoleAdapter
from bridge.config import load
from bridge.delivery.worker import Worker, WorkerOptions
from bridge.settings import normalise_database_url
from bridge.store import wakeups
from bridge.store.db import Database
from bridge.store.migrations import migrate
from tests.conftest import sample
from tests.support.harness import store_webhook, wait_until
from tests.support.spies import statements_on_asyncpg

pytestmark = pytest.mark.postgres


async def other_backends(observer: asyncpg.Connection) -> list[asyncpg.Record]:
    """What the other connections to the test database are doing (seen outside any
    transaction: inside one, pg_stat_activity is a snapshot taken once)."""
    backends: list[asyncpg.Record] = await observer.fetch(
        "SELECT pid, query, state, wait_event_type FROM pg_stat_activity "
        "WHERE datname = current_database() AND pid <> pg_backend_pid()"
    )
    return backends


async def test_a_listener_is_called_once_for_connecting_then_once_per_committed_announce(
    postgres_url: str,
) -> None:
    database = Database(normalise_database_url(postgres_url))
    wakes = 0

    def on_notify() -> None:
        nonlocal wakes
        wakes += 1

    async def woken(times: int) -> bool:
        return wakes >= times

    listening = asyncio.create_task(wakeups.listen(database, on_notify))
    try:
        await wait_until(lambda: woken(1), "the listener connected")
        with pytest.raises(RuntimeError):
            async with database.transaction() as connection:
                await wakeups.announce(database, connection)
                raise RuntimeError("planning failed: the transaction rolls back")
        async with database.transaction() as connection:
            await wakeups.announce(database, connection)
        await wait_until(lambda: woken(2), "the committed announce arrived")
        # NOTIFYs arrive in commit order: a rolled-back one would have come before it.
        assert wakes == 2
    finally:
        listening.cancel()
        await asyncio.gather(listening, return_exceptions=True)
        await database.close()


def _polling_hourly(database: Database, output: io.StringIO) -> Worker:
    """A worker delivering to the console into `output`, that polls once an hour: only a
    wake-up or a NOTIFY brings it work sooner."""
    return Worker(
        database,
        load(None, {}),
        {"console": ConsoleAdapter("console", output)},
        options=WorkerOptions(poll_interval=3600),
    )


async def test_a_planned_job_wakes_a_worker_in_another_process_without_polling(
    postgres_url: str,
) -> None:
    web, worker_db = (Database(normalise_database_url(postgres_url)) for _ in range(2))
    await migrate(web)
    observer, blocker = [await asyncpg.connect(postgres_url) for _ in range(2)]
    blocker_pid = blocker.get_server_pid()
    output = io.StringIO()
    worker = _polling_hourly(worker_db, output)

    async def listening_while_first_claim_waits() -> bool:
        backends = await other_backends(observer)
        listening = any(b["query"].startswith("LISTEN") and b["state"] == "idle" for b in backends)
        return listening and any(b["wait_event_type"] == "Lock" for b in backends)

    async def idle() -> bool:
        backends = await other_backends(observer)
        return all(b["state"] == "idle" for b in backends if b["pid"] != blocker_pid)

    async def delivered() -> bool:
        return "Order 5531" in output.getvalue()

    # Hold the worker's first claim until its listener has connected, so the wake-up for
    # connecting is spent on that claim (which finds nothing) and not on the job below.
    holding = blocker.transaction()
    await holding.start()
    await blocker.execute("LOCK TABLE outbox IN EXCLUSIVE MODE")
    running = asyncio.create_task(worker.run())
    try:
        await wait_until(listening_while_first_claim_waits, "listening while the first claim waits")
        await holding.commit()
        await wait_until(idle, "the first claim is done and the worker idle")
        await wait_until(idle, "the worker still idle")  # its wake-up cleared, nothing pending
        await store_webhook(web, sample("inbox_message"), 1.0)
        await wait_until(delivered, "the job delivered by a worker that polls once an hour")
    finally:
        await blocker.close()  # lets a claim still waiting go, so the worker can stop
        await worker.stop()
        await running
        await observer.close()
        await web.close()
        await worker_db.close()


async def test_a_worker_woken_by_its_own_process_claims_once_for_what_it_stored(
    postgres_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    web, worker_db = (Database(normalise_database_url(postgres_url)) for _ in range(2))
    await migrate(web)
    output = io.StringIO()
    worker = _polling_hourly(worker_db, output)
    statements = statements_on_asyncpg(worker_db, monkeypatch)

    def claims() -> int:
        return sum("SKIP LOCKED" in statement for statement, _ in statements)

    def plans() -> int:
        return sum("SELECT webhook_requests.id" in statement for statement, _ in statements)

    async def settled() -> bool:
        before = claims()
        await asyncio.sleep(0.2)  # a claim woken meanwhile would have started by now
        return claims() == before

    running = asyncio.create_task(worker.run())
    try:
        # The claims at start and for connecting the listener (hearing once it answered).
        await wait_until(lambda: claims() >= 2, "the listener connected")
        await wait_until(settled, "the worker idle")
        at_rest, planned_at_rest = claims(), plans()
        # The web side wakes its process's worker as soon as its commit returns, and that
        # commit's NOTIFY names the worker, which does not hear it: one claim, not two.
        await store_webhook(web, sample("inbox_message"), 1.0, sender=worker.name)
        worker.wake()
        await wait_until(lambda: "Order 5531" in output.getvalue(), "the job delivered")
        await wait_until(settled, "the worker idle again")
        assert claims() - at_rest == 2  # the job's, and one once it finished
        assert plans() - planned_at_rest == 1  # with the job's: a finished job stores nothing
    finally:
        await worker.stop()
        await running
        await web.close()
        await worker_db.close()


def _inbox(webhook_id: str, content: str) -> list[dict[str, object]]:
    event = sample("inbox_message")[0]
    message = {**event["message"], "content": content}
    return [{**event, "webhook_id": webhook_id, "message": message}]


async def test_a_body_stored_while_a_round_plans_is_planned_next_round_not_next_poll(
    postgres_url: str,
) -> None:
    """A wake-up during a round (bodies stored meanwhile) is kept past it: a worker that
    polls once an hour plans the second body right after the round that planned the first."""
    web, worker_db = (Database(normalise_database_url(postgres_url)) for _ in range(2))
    await migrate(web)
    observer, blocker = [await asyncpg.connect(postgres_url) for _ in range(2)]
    output = io.StringIO()
    worker = _polling_hourly(worker_db, output)

    async def round_waits_for_the_lock() -> bool:
        return any(b["wait_event_type"] == "Lock" for b in await other_backends(observer))

    async def listening_and_idle() -> bool:
        backends = [b for b in await other_backends(observer) if b["pid"] != blocker_pid]
        listening = any(b["query"].startswith("LISTEN") for b in backends)
        return listening and all(b["state"] == "idle" for b in backends)

    blocker_pid = blocker.get_server_pid()
    running = asyncio.create_task(worker.run())
    try:
        await wait_until(listening_and_idle, "the worker listening, its first rounds done")
        await wait_until(listening_and_idle, "the worker still idle")
        # Both stores name the worker, which does not hear them: only `wake()` (the web side of
        # its process) wakes it, as in `serve`.
        await store_webhook(web, _inbox("wh_first", "first body"), 1.0, sender=worker.name)
        holding = blocker.transaction()
        await holding.start()
        await blocker.execute("SELECT id FROM webhook_requests FOR UPDATE")
        worker.wake()
        await wait_until(round_waits_for_the_lock, "the round waiting at the first body")
        await store_webhook(web, _inbox("wh_second", "second body"), 2.0, sender=worker.name)
        worker.wake()
        await holding.commit()
        await wait_until(lambda: "second body" in output.getvalue(), "the second body delivered")
        assert "first body" in output.getvalue()
    finally:
        await blocker.close()
        await worker.stop()
        await running
        await observer.close()
        await web.close()
        await worker_db.close()
