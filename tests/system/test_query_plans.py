"""No query on the webhook or worker path reads a whole table: every statement the bridge runs
while receiving (bulk inserts of a group commit included), delivering, alerting, telling
on-call and pruning is put to the planner
(SQLite `EXPLAIN QUERY PLAN`; PostgreSQL `EXPLAIN` with sequential scans switched off), and
none of them scans a table without an index."""

from __future__ import annotations

import asyncio
import re
import sqlite3
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import asyncpg
import pytest

from bridge.jobs import ConversationKey, InboxJob
from bridge.ops import retention
from bridge.settings import normalise_database_url
from bridge.store import outbox as outbox_store
from bridge.store import schema
from bridge.store.db import Database
from bridge.store.migrations import migrate
from bridge.store.outbox import NewJob
from testkit.fakes.slack import FakeSlack
from testkit.fakes.smstools import FakeSmstools
from testkit.fakes.telegram import FakeTelegram
from tests.support import reply_fixtures as replying
from tests.support.alert_fixtures import adapters, make_config, report
from tests.support.harness import Clock, RunningBridge, running_bridge
from tests.support.spies import statements_on_asyncpg

DAY = 86400.0
# The bulk statements of a group commit, which `exercise` must have run (and so explained).
# On PostgreSQL a group's one statement goes through SQLAlchemy when it has reports to plan
# (the same statement runs on asyncpg itself for a group without them).
TABLES = set(schema.metadata.tables)
# A table (or an alias of one, like the claim's `earlier`) read without an index; not the
# rows of a VALUES list (a multi-row INSERT's plan says `SCAN 3 CONSTANT ROWS`), nor a JSON
# array's (`json_each`, a virtual table: the paused destinations a claim skips).
_SQLITE_SCAN = re.compile(
    r"^SCAN (?!(?:\d+ )?CONSTANT ROW)(\w+)\b(?! USING (?:COVERING )?INDEX)(?! VIRTUAL TABLE)"
)
_POSTGRES_SCAN = re.compile(r"Seq Scan on (\w+)")
BULK = {
    "postgresql": {
        "the intake's events and jobs in one statement": re.compile(r"^\s*WITH given_bodies "),
        "the intake's oldest bodies waiting": re.compile(r"WHERE webhook_requests.planned_at IS"),
        "jobs planned after a report": re.compile(r"^INSERT INTO outbox "),
    },
    "sqlite": {
        "jobs planned after a report": re.compile(r"^INSERT INTO outbox "),
        # Run past SQLAlchemy's events, seen in the driver's trace (`recording`):
        "a group's bodies (group_writes)": re.compile(r"^INSERT INTO webhook_requests "),
        "the intake's oldest bodies waiting": re.compile(r"WHERE webhook_requests.planned_at IS"),
        "a claim's admission (Database.fetch_on_sqlite)": re.compile(
            r"^UPDATE outbox SET admitted"
        ),
        "jobs finished together (Database.write_all)": re.compile(
            r"^UPDATE outbox SET status='done'"
        ),
    },
}
_counter = 0


def inbox(sender: str) -> dict[str, Any]:
    global _counter
    _counter += 1
    return {
        "webhook_id": f"wh_plans_{_counter}",
        "webhook_type": "inbox_message",
        "message": {
            "id": f"pl{_counter}",
            "sender": sender,
            "receiver": "32460200000",
            "content": "hello",
            "type": "sms",
        },
    }


@asynccontextmanager
async def recording(
    database: Database, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[list[tuple[str, Any]]]:
    """Every statement (with its parameters) the database runs meanwhile, as its driver runs
    them: the webhook path and the worker run theirs past SQLAlchemy's events
    (`group_writes`, `Database.fetch_on_sqlite`, `Database.fetch_in`). On SQLite its trace
    (the values written in); on PostgreSQL asyncpg's statements, each executemany's with its
    first set of values (it runs one plan for all of them)."""
    statements: list[tuple[str, Any]] = []

    def record(statement: str, parameters: Any) -> None:
        if statement.lstrip().split(None, 1)[0].upper() in _RUN:
            statements.append((statement, parameters))

    if database.dialect == "sqlite":
        await _trace(database, lambda statement: record(statement, ()))
        try:
            yield statements
        finally:
            await _trace(database, None)
        return
    ran = statements_on_asyncpg(database, monkeypatch)
    try:
        yield statements
    finally:
        for statement, parameters in ran:
            record(statement, parameters)


_RUN = ("SELECT", "INSERT", "UPDATE", "DELETE", "WITH")


async def _trace(database: Database, callback: Callable[[str], None] | None) -> None:
    """Have SQLite's one connection hand each statement it runs to `callback` (None: stop)."""
    async with database.autocommit() as connection:
        await database.on_sqlite_thread(
            connection, lambda driver: driver.set_trace_callback(callback)
        )


async def exercise(bridge: RunningBridge, clock: Clock, slack: FakeSlack) -> None:
    """Receive (alone, and bodies sharing a group commit), deliver (alone, and a customer's
    waiting messages combined into one post), alert, fail for good (a notice to on-call),
    read, and prune."""
    slack.set_error("C0BILLING", "channel_not_found")
    customer = "32470555005"
    first = [inbox(customer)]
    await bridge.post(first)
    await deliver(bridge, clock)
    await bridge.post(
        [
            report(2, 2000, receiver=customer, messageid="pl1"),
            {
                "webhook_id": "wh_plans_read",
                "webhook_type": "read_report",
                "message": {"messageid": "pl1", "sender": "Clinic", "receiver": customer},
            },
            inbox(customer),
        ]
    )
    await deliver(bridge, clock)
    # Sent together, these share one group commit: the bodies' multi-row INSERT, events
    # with and without a webhook_id, several inbox jobs in one INSERT, and a body made only
    # of duplicates whose raw copy is dropped again.
    not_understood = {"webhook_type": "inbox_message"}
    answers = await asyncio.gather(
        bridge.post(
            [inbox(customer), inbox("32470555006"), inbox("32470555006"), inbox("32470555007")]
        ),
        bridge.post([not_understood, not_understood]),
        bridge.post(first),
    )
    assert [answer.status_code for answer in answers] == [200, 200, 200]
    await deliver(bridge, clock)
    await retention.prune(bridge.worker.database, make_config(), clock() + 40 * DAY)


async def deliver(bridge: RunningBridge, clock: Clock) -> None:
    for _ in range(4):
        clock.advance(31)
        await bridge.worker.drain()


async def plans(
    database_url: str, statements: list[tuple[str, Any]], *, seq_scans: bool = True
) -> list[str]:
    """Each statement's plan, one line per step (PostgreSQL's `EXPLAIN` with sequential scans
    switched off unless `seq_scans`, so that one shows only where no index could serve)."""
    if database_url.startswith("sqlite"):
        connection = sqlite3.connect(database_url.removeprefix("sqlite:///"))
        try:
            return [
                "\n".join(
                    row[3] for row in connection.execute(f"EXPLAIN QUERY PLAN {statement}", values)
                )
                for statement, values in statements
            ]
        finally:
            connection.close()
    connection = await asyncpg.connect(database_url)
    try:
        if not seq_scans:
            await connection.execute("SET enable_seqscan = off")
        return [
            "\n".join(row[0] for row in await connection.fetch(f"EXPLAIN {statement}", *values))
            for statement, values in statements
        ]
    finally:
        await connection.close()


async def full_scans(database_url: str, statements: list[tuple[str, Any]]) -> dict[str, str]:
    """Statement → the table it scans whole, for every statement that does."""
    explained = await plans(database_url, statements, seq_scans=False)
    scans: dict[str, str] = {}
    for (statement, _), plan in zip(statements, explained, strict=True):
        if database_url.startswith("sqlite"):
            scans.update(
                (statement, step) for step in plan.splitlines() if _SQLITE_SCAN.match(step)
            )
        else:
            match = _POSTGRES_SCAN.search(plan)
            if match and match[1] in TABLES:
                scans[statement] = plan
    return scans


async def test_no_query_on_the_webhook_or_worker_path_scans_a_whole_table(
    database_url: str, slack: FakeSlack, telegram: FakeTelegram, monkeypatch: pytest.MonkeyPatch
) -> None:
    clock = Clock()
    async with running_bridge(
        database_url, make_config(), adapters(slack, telegram), run_worker=False, now=clock
    ) as bridge:
        async with recording(bridge.worker.database, monkeypatch) as statements:
            await exercise(bridge, clock, slack)
    assert slack.posts("C0ONCALL"), "the alert and the notice were exercised"
    payloads = [p.metadata["event_payload"] for p in slack.posts("C0SUPPORT") if p.metadata]
    combined = [payload for payload in payloads if "combined" in payload]
    assert combined, "a combined post was exercised"
    distinct = list({statement: parameters for statement, parameters in statements}.items())
    assert len(distinct) > 30
    ran = [statement.replace("\n", " ") for statement, _ in distinct]
    dialect = "sqlite" if database_url.startswith("sqlite") else "postgresql"
    bulk = BULK[dialect]
    assert [name for name, pattern in bulk.items() if not any(map(pattern.search, ran))] == []
    assert await full_scans(database_url, distinct) == {}


async def test_no_query_answering_a_customer_scans_a_whole_table(
    database_url: str,
    slack: FakeSlack,
    telegram: FakeTelegram,
    smstools: FakeSmstools,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    async with replying.bridge_for(database_url, slack, telegram, smstools) as bridge:
        database = bridge.running.worker.database
        async with recording(database, monkeypatch) as statements:
            thread = await replying.thread_of_customer(bridge, slack)
            member = slack.post_as_member("C0SUPPORT")
            await bridge.slack(replying.slack_event("On its way", thread, member))
            await bridge.drain()
            (sent,) = smstools.sent()
            await bridge.webhook(replying.report(sent.messageids[0], 1))
            await bridge.webhook(replying.inbox("STOP"))
            member = slack.post_as_member("C0SUPPORT")
            await bridge.slack(replying.slack_event("But wait", thread, member))
            await bridge.drain()
            config = replying.make_config(smstools)
            await retention.prune(database, config, bridge.clock() + 40 * DAY)
    assert len(smstools.sent()) == 1, "the answer and the blocked one were exercised"
    distinct = list({statement: parameters for statement, parameters in statements}.items())
    assert await full_scans(database_url, distinct) == {}


async def test_a_claim_on_sqlite_reads_the_due_jobs_in_order_and_stops_at_the_heads_it_needs(
    sqlite_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A backlog (a campaign's reports, a destination rate-limited for an hour) must not make
    every claim read and sort all the pending jobs, as SQLite's did through the index of
    finished jobs (`outbox_finished`), which its planner took for the way to
    `status = 'pending'`: 30 ms a claim at 34,000 jobs waiting, each holding the one
    connection. (PostgreSQL plans from statistics, which a slow claim has refreshed:
    `test_worker`.)"""
    database = Database(normalise_database_url(sqlite_url))
    try:
        await migrate(database)
        customers = [
            ConversationKey(receiver="32460200000", sender=f"3247{n:07d}") for n in range(50)
        ]
        backlog = [NewJob(None, "support", InboxJob(conversation=key)) for key in customers] * 40
        async with database.transaction() as connection:
            await outbox_store.enqueue_many(database, connection, backlog, 1.0)
        await database.shared.write(outbox_store.finish([1, 2, 3], 2.0))
        async with recording(database, monkeypatch) as statements:
            async with database.transaction() as connection:
                claimed = await outbox_store.claim(
                    database, connection, worker="w", now=10.0, lease=30.0, limit=16
                )
    finally:
        await database.close()
    assert len(claimed) == 16
    admitted, heads, _leases = await plans(sqlite_url, statements)
    assert "USING INDEX outbox_unadmitted" in admitted, admitted
    assert heads.startswith("SEARCH outbox USING INDEX outbox_due"), heads
    assert "TEMP B-TREE" not in heads, heads  # the index gives them in order: no sort
