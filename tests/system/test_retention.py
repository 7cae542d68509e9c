"""Retention: what outlived the `retention:` section goes (content erased, plumbing deleted),
counts stay, live threads carry on, a second run finds nothing, `--dry-run` counts exactly
what a run removes, and the worker prunes once an hour, one process at a time."""

from __future__ import annotations

import asyncio
from typing import Any

import asyncpg
import pytest
from sqlalchemy import func, select

from bridge.cli import main
from bridge.delivery.pacing import Pacer
from bridge.ops import retention
from bridge.settings import normalise_database_url
from bridge.store.db import Database
from bridge.store.migrations import migrate
from bridge.store.retention import ADVISORY_LOCK, CATEGORIES
from bridge.store.schema import (
    alert_groups,
    chat_events,
    chat_messages,
    conversations,
    events,
    message_status,
    outbox,
    pace,
    replies,
    webhook_requests,
)
from testkit.fakes.slack import FakeSlack
from testkit.fakes.smstools import FakeSmstools
from testkit.fakes.telegram import FakeTelegram
from tests.support import reply_fixtures as replying
from tests.support.alert_fixtures import adapters, inbox, make_config, report
from tests.support.harness import Clock, RunningBridge, running_bridge

DAY = 86400.0
QUIET, REGULAR = "32470111001", "32470222002"  # customers


async def query(database: Database, statement: Any) -> list[Any]:
    async with database.transaction() as connection:
        return list(await connection.execute(statement))


async def count(database: Database, table: Any) -> int:
    (row,) = await query(database, select(func.count()).select_from(table))
    return int(row[0])


async def stored_text(database: Database) -> str:
    """Every payload and raw body, as one text to search."""
    payloads = [row.payload for row in await query(database, select(events.c.payload))]
    bodies = [
        bytes(row.body).decode() for row in await query(database, select(webhook_requests.c.body))
    ]
    return "\n".join(payloads + bodies)


async def deliver(bridge: RunningBridge, clock: Clock) -> None:
    """Deliver everything, letting the paced channels' clock move on (a few seconds)."""
    for _ in range(4):
        clock.advance(2)
        await bridge.worker.drain()


async def test_prune_erases_old_content_keeps_counts_and_live_threads(
    database_url: str, slack: FakeSlack, telegram: FakeTelegram
) -> None:
    config = make_config(top={"threads": {"idle_after": "7d"}})
    clock = Clock()
    database = Database(normalise_database_url(database_url))
    try:
        async with running_bridge(
            database_url, config, adapters(slack, telegram), run_worker=False, now=clock
        ) as bridge:
            start = clock()
            # Day 0: one customer writes once and goes quiet, and a message to them fails;
            # the other writes every six days, so their conversation stays live throughout.
            await bridge.post([inbox(QUIET, "quiet secret"), inbox(REGULAR, "regular day 0")])
            await bridge.post([report(2, 2000, receiver=QUIET, messageid="old-fail")])
            await deliver(bridge, clock)
            for day in range(6, 37, 6):
                clock.advance(6 * DAY)
                await bridge.post([inbox(REGULAR, f"regular day {day}")])
                await deliver(bridge, clock)
            (root,) = [
                post.ts for post in slack.posts("C0SUPPORT") if "regular day 0" in (post.text or "")
            ]
            before = {
                table.name: await count(database, table) for table in (events, message_status)
            }

            clock.value = start + 36 * DAY + 3600  # prune an hour after day 36's message
            day_6, day_29 = clock() - 30 * DAY, clock() - 7 * DAY
            planned = await retention.prune(database, config, clock(), dry_run=True)
            pruned = await retention.prune(database, config, clock())
            again = await retention.prune(database, config, clock())
            after = {table.name: await count(database, table) for table in (events, message_status)}

            # The live conversation carries on in its thread after the prune.
            await bridge.post([inbox(REGULAR, "regular after the prune")])
            await deliver(bridge, clock)
        last = slack.posts("C0SUPPORT")[-1]
        text = await stored_text(database)
        statuses = await query(database, select(message_status.c.receiver, message_status.c.sender))
        chats = await query(database, select(conversations.c.sender))
        jobs = await query(database, select(outbox.c.status, outbox.c.finished_at))
        links = await query(database, select(chat_messages.c.created_at))
        groups = await count(database, alert_groups)
    finally:
        await database.close()

    assert pruned.counts == planned.counts and not pruned.busy
    assert pruned.counts["message contents (text and numbers)"] == 4  # days 0 and 6
    assert pruned.counts["raw webhook bodies"] == 3
    assert pruned.counts["conversations no longer live"] == 1
    assert pruned.counts["quiet alert groups"] == 1 and groups == 0
    assert again.total == 0  # a second run finds nothing
    assert "quiet secret" not in text and "regular day 6" not in text and QUIET not in text
    assert "regular day 12" in text and "regular day 36" in text  # younger than 30 days
    assert after == before  # counts intact: every event and status keeps its row
    assert statuses == [("", "")]
    assert [sender for (sender,) in chats] == [REGULAR]  # the quiet customer's went
    assert last.thread_ts == root
    assert last.text is not None and "after the prune" in last.text
    assert all(status == "done" and finished >= day_29 for status, finished in jobs)
    assert all(created >= day_6 for (created,) in links)


async def test_the_worker_prunes_at_start_then_once_an_hour(
    sqlite_url: str, slack: FakeSlack, telegram: FakeTelegram
) -> None:
    brief = {"raw_bodies": "10m", "content": "10m", "done_jobs": "10m", "dead_letters": "10m"}
    config = make_config(top={"retention": brief})
    clock = Clock()
    database = Database(normalise_database_url(sqlite_url))
    try:
        async with running_bridge(
            sqlite_url, config, adapters(slack, telegram), now=clock
        ) as bridge:
            await rounds(bridge, 2)  # the first round pruned (nothing yet)
            await bridge.post([inbox(QUIET, "quiet secret")])
            for _ in range(100):  # delivered: its job is done and its content not needed
                if slack.posts("C0SUPPORT"):
                    break
                await asyncio.sleep(0.05)
            clock.advance(30 * 60)  # past the 10 minutes, within the hour
            await rounds(bridge, 3)
            kept = await stored_text(database)
            clock.advance(31 * 60)  # an hour since the last prune
            for _ in range(100):
                if "quiet secret" not in await stored_text(database):
                    break
                await asyncio.sleep(0.05)
            pruned = await stored_text(database)
    finally:
        await database.close()
    assert "quiet secret" in kept
    assert "quiet secret" not in pruned


async def rounds(bridge: RunningBridge, count: int) -> None:
    """Wait until the delivery loop has gone round `count` more times."""
    for _ in range(count):
        seen = bridge.worker.heartbeat
        for _ in range(200):
            await asyncio.sleep(0.05)
            if bridge.worker.heartbeat != seen:
                break


@pytest.mark.postgres
async def test_one_process_prunes_at_a_time(postgres_url: str) -> None:
    config = make_config()
    database = Database(normalise_database_url(postgres_url))
    other = await asyncpg.connect(postgres_url)
    try:
        await migrate(database)
        await other.execute(f"SELECT pg_advisory_lock({ADVISORY_LOCK})")  # another pruner
        busy = await retention.prune(database, config, 1_900_000_000.0)
        await other.execute(f"SELECT pg_advisory_unlock({ADVISORY_LOCK})")
        free = await retention.prune(database, config, 1_900_000_000.0)
    finally:
        await other.close()
        await database.close()
    assert busy.busy and busy.total == 0
    assert "another process is pruning" in busy.lines()[-1]
    assert not free.busy and len(free.counts) == len(CATEGORIES)


async def test_prune_command_prints_what_it_removes_and_dry_run_removes_nothing(
    sqlite_url: str,
    slack: FakeSlack,
    telegram: FakeTelegram,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    clock = Clock()
    clock.value = 1_000_000_000.0  # long ago: everything it stores is past its retention
    async with running_bridge(
        sqlite_url, make_config(), adapters(slack, telegram), run_worker=False, now=clock
    ) as bridge:
        await bridge.post([inbox(QUIET, "quiet secret")])
        await deliver(bridge, clock)
    monkeypatch.setenv("DATABASE_URL", sqlite_url)
    monkeypatch.delenv("BRIDGE_CONFIG", raising=False)
    assert await asyncio.to_thread(main, ["prune", "--dry-run"]) == 0
    dry = capsys.readouterr().out
    assert await asyncio.to_thread(main, ["prune"]) == 0
    real = capsys.readouterr().out
    assert await asyncio.to_thread(main, ["prune"]) == 0
    again = capsys.readouterr().out
    assert dry.splitlines()[0] == (
        "retention: raw bodies 30d, message content 30d, done jobs 7d, dead letters 30d"
    )
    assert "message contents (text and numbers): 1 would be erased" in dry
    assert "raw webhook bodies: 1 would be deleted" in dry
    assert "message contents (text and numbers): 1 erased" in real
    assert "raw webhook bodies: 1 deleted" in real
    assert "delivered jobs: 1 deleted" in real
    assert "raw webhook bodies: 0 deleted" in again


async def test_what_agents_wrote_goes_with_the_content_unless_its_answer_is_still_to_send(
    database_url: str, slack: FakeSlack, telegram: FakeTelegram, smstools: FakeSmstools
) -> None:
    config = replying.make_config(smstools)
    database = Database(normalise_database_url(database_url))
    try:
        async with replying.bridge_for(database_url, slack, telegram, smstools) as bridge:
            thread = await replying.thread_of_customer(bridge, slack)
            member = slack.post_as_member("C0SUPPORT")
            await bridge.slack(replying.slack_event("Sent a month ago", thread, member))
            await bridge.drain()
            # An answer whose job has not run yet (a worker down for a month, say).
            member = slack.post_as_member("C0SUPPORT")
            await bridge.slack(replying.slack_event("Still to send", thread, member))
            bridge.clock.advance(31 * DAY)
            pruned = await retention.prune(database, config, bridge.clock())
            bodies = [body for (body,) in await query(database, select(chat_events.c.body))]
            states = [state for (state,) in await query(database, select(replies.c.state))]
            await bridge.drain()
    finally:
        await database.close()

    assert pruned.counts["agents' chat messages (text)"] == 1
    assert pruned.counts["agents' replies"] == 1  # the settled one
    assert pruned.counts["conversations no longer live"] == 0  # a reply still needs it
    assert not any("Sent a month ago" in body for body in bodies)
    assert any("Still to send" in body for body in bodies) and len(bodies) == 2
    assert states == ["planned"]
    assert [sent.message for sent in smstools.sent()] == ["Sent a month ago", "Still to send"]


async def test_a_destinations_pace_goes_once_at_rest_and_not_while_it_holds_anyone_back(
    database: Database,
) -> None:
    """A pace row holds no customer data and serves only while its bucket is not full or a
    429 pauses it: once at rest it is pruned, and the destination posts at once as before."""
    config = make_config()
    pacer = Pacer(database, {name: d.max_rate for name, d in config.destinations.items()})
    start = 1_900_000_000.0
    async with database.transaction() as connection:
        assert await pacer.take(connection, "support", start) is not None  # then quiet
        await pacer.pause(connection, "oncall", start + 2 * retention.EVERY, start)  # a 429
    async with database.transaction() as connection:
        assert await pacer.take(connection, "billing", start + retention.EVERY - 60) is not None
    pruned = await retention.prune(database, config, start + retention.EVERY + 1)
    kept = [name for (name,) in await query(database, select(pace.c.destination))]
    async with database.transaction() as connection:
        waiting = await pacer.waiting(connection, ["support", "oncall"], start + retention.EVERY)

    assert pruned.counts["destinations' pace at rest"] == 1
    assert sorted(kept) == ["billing", "oncall"]  # one used lately, one still paused
    assert list(waiting) == ["oncall"]  # support has its full bucket, as a new row would
