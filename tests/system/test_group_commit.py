"""Group commit: concurrent webhooks share commits, each answered only once its body is
stored; the intake then stores each event once and plans it; nothing lost, nothing twice."""

from __future__ import annotations

import asyncio
import io
import itertools
import json
import logging
import os
import sqlite3
import time
from typing import Any

import pytest
from sqlalchemy import event, func, select, update

from bridge.chat.console import ConsoleAdapter
from bridge.config import load
from bridge.intake.group_commit import IN_FLIGHT, KEEP, GroupCommit
from bridge.intake.ingest import Body
from bridge.intake.planning import Intake
from bridge.settings import normalise_database_url
from bridge.store import outbox as outbox_store
from bridge.store.db import Database
from bridge.store.migrations import migrate
from bridge.store.schema import events, outbox, webhook_requests
from testkit.processes import free_port
from tests.support.harness import TOKEN, plan_all, running_bridge
from tests.support.pipeline_fixtures import inbox

CONFIG = load(None, {})


def console() -> dict[str, ConsoleAdapter]:
    return {"console": ConsoleAdapter("console", io.StringIO())}


async def bodies_stored(database: Database, raw: bytes) -> int:
    async with database.transaction() as connection:
        query = select(func.count()).where(webhook_requests.c.body == raw)
        return int((await connection.execute(query)).scalar_one())


async def stored_ids(database: Database, webhook_ids: list[str]) -> set[str]:
    async with database.transaction() as connection:
        found = await connection.execute(
            select(events.c.webhook_id).where(events.c.webhook_id.in_(webhook_ids))
        )
        return {row[0] for row in found}


async def test_hundreds_of_concurrent_webhooks_share_commits_and_each_is_answered_once_stored(
    database_url: str,
) -> None:
    # 300 bodies of 1-3 events over fewer distinct ids: many repeat an id another body also
    # carries, some in the same group commit, some after it.
    bodies = [
        [
            inbox(f"3247000{(n * 7 + k) % 400:04d}", "hi", webhook_id=f"wh_{(n * 7 + k) % 400}")
            for k in range(1 + n % 3)
        ]
        for n in range(300)
    ]
    distinct = len({event["webhook_id"] for body in bodies for event in body})
    checker = Database(normalise_database_url(database_url))
    url = f"/webhooks/smstools/{TOKEN}"
    try:
        async with running_bridge(database_url, CONFIG, console(), run_worker=False) as bridge:

            async def send(body: list[dict[str, Any]]) -> None:
                raw = json.dumps(body).encode()
                response = await bridge.client.post(url, content=raw)
                assert response.json() == {"received": len(body)}
                # Answered only after the commit: another connection already sees the body.
                assert await bodies_stored(checker, raw) >= 1

            await asyncio.gather(*(send(body) for body in bodies))
            commits: GroupCommit = bridge.app.state.receiver.commits
            assert 1 <= commits.groups < len(bodies)  # bodies did share commits
            async with checker.transaction() as connection:  # in the order they are planned
                query = select(webhook_requests.c.body).order_by(webhook_requests.c.id)
                stored = [json.loads(row[0]) for row in await connection.execute(query)]
            await bridge.plan()
        async with checker.transaction() as connection:
            count = select(func.count())
            assert (await connection.execute(count.select_from(events))).scalar_one() == distinct
            assert (await connection.execute(count.select_from(outbox))).scalar_one() == distinct
            requests = (await connection.execute(count.select_from(webhook_requests))).scalar_one()
    finally:
        await checker.close()
    assert len(stored) == len(bodies)
    # A body whose every event was stored before it is deleted once planned (a resend).
    seen: set[str] = set()
    adding = 0
    for body in stored:
        ids = {event["webhook_id"] for event in body}
        adding += not ids <= seen
        seen |= ids
    assert requests == adding < len(bodies)


async def test_when_a_group_commit_fails_every_request_in_it_gets_503_and_one_log_line(
    sqlite_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    async with running_bridge(sqlite_url, CONFIG, console(), run_worker=False) as bridge:
        database = Database(normalise_database_url(sqlite_url))
        async with database.transaction() as connection:
            await connection.exec_driver_sql("DROP TABLE webhook_requests")
        await database.close()
        answers = await asyncio.gather(
            *(bridge.post([inbox("32470000001", "hi")]) for _ in range(20))
        )
        commits: GroupCommit = bridge.app.state.receiver.commits
    assert {answer.status_code for answer in answers} == {503}
    assert {answer.headers["retry-after"] for answer in answers} == {"5"}
    assert all("send it again" in answer.json()["error"] for answer in answers)
    lines = [record for record in caplog.records if record.levelno >= logging.WARNING]
    assert 1 <= len(lines) == commits.groups < len(answers)  # one per group, not per request
    for line in lines:
        assert line.name == "bridge.http.webhook" and line.exc_info is None
        assert line.getMessage().startswith("could not store a ") and "\n" not in line.getMessage()
    assert any("a group of" in line.getMessage() for line in lines)


async def test_a_request_that_goes_away_leaves_the_commit_it_shares_alone(
    database: Database,
) -> None:
    commits = GroupCommit(database, lambda _error, _bodies: None)
    events = [inbox("32470000001", f"hi {n}", webhook_id=f"wh_gone_{n}") for n in range(3)]
    submits = [
        asyncio.create_task(commits.submit(Body(json.dumps([event]).encode(), [event], 1.0)))
        for event in events
    ]
    await asyncio.sleep(0)  # all three wait for the commit the first one started
    submits[1].cancel()
    await asyncio.gather(submits[0], submits[2])
    assert submits[1].cancelled()
    await commits.close()
    await plan_all(Intake(database, CONFIG, time.time))
    assert await stored_ids(database, [event["webhook_id"] for event in events]) == {
        "wh_gone_0",
        "wh_gone_1",
        "wh_gone_2",
    }  # the body of the request that went away was stored all the same


def _body(*items: dict[str, Any]) -> Body:
    return Body(json.dumps(list(items)).encode(), list(items), 1.0)


async def test_bodies_that_arrive_together_share_a_commit_instead_of_the_first_going_alone(
    database: Database,
) -> None:
    commits = GroupCommit(database, lambda _error, _bodies: None)
    events = [inbox(f"3247000000{n}", "hi", webhook_id=f"wh_together_{n}") for n in range(6)]
    await asyncio.gather(*(commits.submit(_body(event)) for event in events))
    # One group per commit that may be in flight (these are six conversations), where the
    # first body used to start a commit of its own and the others waited for it.
    assert commits.groups == IN_FLIGHT[database.dialect]
    await commits.close()


async def stream_of_webhooks(
    commits: GroupCommit,
    clients: int,
    until: float,
    spread: int = 0,
    busy: float = 0.0,
    slow: float = 0.0,
) -> int:
    """`clients` senders, each sending its next webhook once the last is answered (after up
    to 3 × `spread` passes of the event loop, as answers and requests that cross a network
    arrive one by one), until `until` (monotonic); returns how many were answered. Each
    answer holds the event loop for `busy` seconds (as sending it does); the last sender
    waits `slow` seconds before it sends again."""
    answered = 0

    async def client(number: int) -> None:
        nonlocal answered
        sent = 0
        while time.monotonic() < until:
            event = inbox(f"3247{number:07d}", "hi", webhook_id=f"wh_stream_{number}_{sent}")
            sent += 1
            await commits.submit(Body(json.dumps([event]).encode(), [event], 1.0))
            answered += 1
            time.sleep(busy)
            if slow and number == clients - 1:
                await asyncio.sleep(slow)
            for _ in range(number % 4 * spread):
                await asyncio.sleep(0)

    await asyncio.gather(*(client(number) for number in range(clients)))
    return answered


class Checkouts:
    """Counts the connections taken from a database's pool from now on."""

    def __init__(self, database: Database) -> None:
        self.count = 0
        event.listen(database.engine.sync_engine.pool, "checkout", self._add)

    def _add(self, *_args: Any) -> None:
        self.count += 1


async def test_groups_under_load_share_a_connection_and_give_it_back_once_none_wait(
    database: Database,
) -> None:
    checkouts = Checkouts(database)
    commits = GroupCommit(database, lambda _error, _bodies: None)
    answered = await stream_of_webhooks(commits, clients=16, until=time.monotonic() + 1.0)
    assert answered > 0 and commits.groups > 1
    # A group's connection went on to the next group while bodies waited (each checkout
    # and check-in costs about what storing a group of eight does) ...
    assert checkouts.count < commits.groups / 2
    # ... and went back to the pool once no group took it: nothing is held while idle.
    await asyncio.wait_for(commits.at_rest.wait(), timeout=5)
    assert database.engine.sync_engine.pool.checkedout() == 0  # type: ignore[attr-defined]
    await commits.close()


async def test_senders_answered_by_a_commit_share_the_next_one_with_those_that_waited(
    sqlite_url: str,
) -> None:
    """One group at a time (SQLite): sixteen senders, each sending again once answered,
    commit together instead of in two alternating halves of eight."""
    database = Database(normalise_database_url(sqlite_url))
    await migrate(database)
    commits = GroupCommit(database, lambda _error, _bodies: None)
    answered = await stream_of_webhooks(commits, clients=16, until=time.monotonic() + 1.0, spread=2)
    await commits.close()
    await database.close()
    assert answered / commits.groups > 12  # about 16; 8 without waiting for them


async def test_bodies_that_waited_commit_even_when_the_answered_senders_do_not_come_back(
    sqlite_url: str,
) -> None:
    database = Database(normalise_database_url(sqlite_url))
    await migrate(database)
    commits = GroupCommit(database, lambda _error, _bodies: None)
    first = asyncio.create_task(commits.submit(_body(inbox("32470000001", "a"))))
    while commits.groups == 0:  # the first body's commit is under way
        await asyncio.sleep(0)
    second = asyncio.create_task(commits.submit(_body(inbox("32470000002", "b"))))
    # The first sender sends nothing more: the second body waits for it (COMEBACK at most),
    # then commits.
    await asyncio.wait_for(asyncio.gather(first, second), timeout=10)
    assert commits.groups == 2
    await commits.close()
    await database.close()


async def test_groups_keep_their_connection_while_the_loop_is_busy_with_the_answers(
    sqlite_url: str,
) -> None:
    """The connection waits for the next group while the event loop sends a group's answers
    (here 16 × 0.1 ms) and the group waits for its senders, one of them slow, instead of
    going back to the pool (SQLite: one group at a time, each waiting for its senders)."""
    database = Database(normalise_database_url(sqlite_url))
    await migrate(database)
    checkouts = Checkouts(database)
    commits = GroupCommit(database, lambda _error, _bodies: None)
    seconds = 1.0
    await stream_of_webhooks(
        commits, clients=16, until=time.monotonic() + seconds, busy=0.0001, slow=0.01
    )
    await commits.close()
    await database.close()
    # About one checkout every KEEP (20 in the second); 50-60 when it went back whenever
    # the wait for the senders outlasted IDLE.
    assert checkouts.count < 1.5 * seconds / KEEP


async def test_a_steady_stream_of_webhooks_leaves_the_worker_its_turn_on_the_connection(
    database: Database,
) -> None:
    """On SQLite the webhooks' connection is the pool's only one; kept from group to group
    for at most KEEP seconds, it still reaches a worker's transaction between groups."""
    commits = GroupCommit(database, lambda _error, _bodies: None)
    stream = asyncio.create_task(
        stream_of_webhooks(commits, clients=16, until=time.monotonic() + 2.0)
    )
    await asyncio.sleep(0.5)  # well into the stream
    started = time.monotonic()
    async with database.transaction() as connection:
        await connection.execute(select(func.count()).select_from(outbox))
    waited = time.monotonic() - started
    assert not stream.done()
    await stream
    await commits.close()
    # Not a benchmark: a turn comes within KEEP (0.05 s) plus a group's commit; the margin
    # allows a busy CI box. Without the bound it would wait for the whole stream.
    assert waited < 1.0


@pytest.mark.postgres
async def test_the_webhook_statement_is_prepared_on_the_connections_groups_take_before_any_webhook(
    postgres_url: str,
) -> None:
    database = Database(normalise_database_url(postgres_url))
    await migrate(database)
    try:
        # Other work (the worker, readiness) opened more connections than groups take.
        others = [await database.connect() for _ in range(IN_FLIGHT["postgresql"] + 2)]
        for connection in others:
            await connection.close()
        commits = GroupCommit(database, lambda error, bodies: None)
        await commits.warm()
        # The groups that may commit at once each take a connection from the pool, as the
        # first webhooks' groups would: every one already holds the statement, named, in
        # its PostgreSQL session.
        taken = [await database.connect() for _ in range(IN_FLIGHT["postgresql"])]
        try:
            for connection in taken:
                found = await connection.exec_driver_sql(
                    "SELECT statement FROM pg_prepared_statements"
                )
                assert any("INSERT INTO webhook_requests" in row[0] for row in found)
        finally:
            for connection in taken:
                await connection.close()
    finally:
        await database.close()


async def test_preparing_ahead_with_the_database_down_is_one_warning_and_no_error(
    caplog: pytest.LogCaptureFixture,
) -> None:
    database = Database(f"postgresql+asyncpg://bridge@127.0.0.1:{free_port()}/bridge", timeout=2)
    try:
        commits = GroupCommit(database, lambda error, bodies: None)
        with caplog.at_level(logging.WARNING, logger="bridge.intake.group_commit"):
            await commits.warm()  # the first groups prepare it then
        (warning,) = caplog.records
        assert warning.getMessage().startswith("webhook statements not prepared ahead: ")
    finally:
        await database.close()


async def _pages_a_group_writes(database: Database, path: str, senders: list[str]) -> int:
    """The pages (WAL frames) one group commit of an inbox message from each sender writes
    on SQLite, from a WAL checkpointed empty."""
    with sqlite3.connect(path) as raw:
        busy, _, _ = raw.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
        page_size = raw.execute("PRAGMA page_size").fetchone()[0]
    assert busy == 0, "nothing else reads or writes meanwhile"
    await _store(database, [_numbered(sender, "hello") for sender in senders])
    return (os.path.getsize(f"{path}-wal") - 32) // (page_size + 24)


_numbered_ids = itertools.count()


def _numbered(sender: str, content: str) -> dict[str, Any]:
    """An inbox message whose webhook_id sorts after every earlier one: its index's pages
    are the same whatever other tests ran before."""
    return inbox(sender, content, webhook_id=f"wh_pages_{next(_numbered_ids):08d}")


async def _store(database: Database, messages: list[dict[str, Any]]) -> None:
    """One group commit of one body per message, as the webhook path stores them, then the
    intake's planning of them."""
    commits = GroupCommit(database, lambda _error, _bodies: None)
    bodies = [Body(json.dumps([message]).encode(), [message], 1000.0) for message in messages]
    await asyncio.gather(*(commits.submit(body) for body in bodies))
    await commits.close()
    await plan_all(Intake(database, CONFIG, time.time))


async def test_on_sqlite_a_group_commit_writes_no_more_pages_with_thousands_of_jobs_waiting(
    sqlite_url: str,
) -> None:
    """A backlog (a destination rate-limited for an hour, a web process alone) must not make
    every webhook dearer. In the lanes' index each conversation's next job is a leaf page of
    its own: a group commit writing it wrote (and synced) a page more per conversation in the
    group once the backlog spread over that many leaves. Jobs go in outside it; claims admit
    them."""
    database = Database(normalise_database_url(sqlite_url))
    path = sqlite_url.removeprefix("sqlite:///")
    await migrate(database)
    customers = [f"3247{n:07d}" for n in range(200)]
    talking = customers[::4][:48]

    async def four_thousand_jobs_in_their_lanes() -> None:  # 20 from each customer
        for chunk in range(20):
            await _store(database, [_numbered(sender, f"waiting {chunk}") for sender in customers])
        async with database.transaction() as connection:  # admitted, none due yet
            claimed = await outbox_store.claim(
                database, connection, worker="w", now=0.0, lease=30.0, limit=16
            )
        assert claimed == []

    try:
        await four_thousand_jobs_in_their_lanes()
        async with database.transaction() as connection:  # all delivered: nothing waits
            await connection.execute(update(outbox).values(status=outbox_store.DONE))
        caught_up = await _pages_a_group_writes(database, path, talking)
        await four_thousand_jobs_in_their_lanes()
        behind = await _pages_a_group_writes(database, path, talking)
    finally:
        await database.close()
    # An index page split here and there (each several pages), not a page per conversation:
    # with the lanes' index written on the webhook path this was 33 against 74.
    assert behind - caught_up < len(talking) / 2, (caught_up, behind)
