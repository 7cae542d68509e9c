"""Events not understood are told to on-call, and `smsbridge reprocess` replays them once
today's parser reads them."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

from sqlalchemy import func, insert, select

from bridge.ops import reprocess
from bridge.settings import normalise_database_url
from bridge.store.db import Database
from bridge.store.migrations import migrate
from bridge.store.schema import events, outbox, webhook_requests
from testkit.fakes.slack import FakeSlack
from testkit.fakes.telegram import FakeTelegram
from testkit.processes import BridgeProcess
from tests.support.alert_fixtures import adapters, make_config
from tests.support.harness import Clock, RunningBridge, running_bridge

CUSTOMER = "32470555111"
# What the bridge said of `"content": null` before it read null as an empty message.
OLD_PROBLEM = "message.content: Input should be a valid string"


def old_shape(webhook_id: int = 4711) -> dict[str, Any]:
    """An inbox message as a PHP back end sends it, which older versions did not understand."""
    return {
        "webhook_id": webhook_id,
        "webhook_type": "inbox_message",
        "username": "myusername",
        "message": {
            "id": None,
            "date": 1_764_151_200,
            "sender": CUSTOMER,
            "receiver": "32460200000",
            "content": None,
            "type": "SMS",
        },
        "isreply": False,
    }


async def store_as_older_version(database: Database, event: dict[str, Any], at: float) -> None:
    """Store `event` as an older smsbridge did: kept, not understood, and (its webhook_id
    not being text then) without a webhook_id."""
    raw = json.dumps([event]).encode()
    async with database.transaction() as connection:
        request_id = (
            await connection.execute(
                insert(webhook_requests)
                .values(received_at=at, body=raw)
                .returning(webhook_requests.c.id)
            )
        ).scalar_one()
        await connection.execute(
            insert(events).values(
                request_id=request_id,
                webhook_id=None,
                webhook_type="inbox_message",
                status="unparsed",
                problem=OLD_PROBLEM,
                payload=json.dumps(event, separators=(",", ":")),
                received_at=at,
            )
        )


async def deliver(bridge: RunningBridge, clock: Clock) -> None:
    """Deliver what is due, waiting out the destinations' pace (a post a second)."""
    for _ in range(3):
        await bridge.worker.drain()
        clock.advance(2)


async def count(database: Database, table: Any) -> int:
    async with database.transaction() as connection:
        return int((await connection.execute(select(func.count()).select_from(table))).scalar_one())


async def test_reprocess_delivers_an_event_an_older_version_rejected_once(
    database_url: str, slack: FakeSlack, telegram: FakeTelegram
) -> None:
    clock = Clock()
    config = make_config()
    async with running_bridge(
        database_url, config, adapters(slack, telegram), run_worker=False, now=clock
    ) as bridge:
        database = bridge.worker.database
        await store_as_older_version(database, old_shape(), clock() - 3600)

        dry = await reprocess.reprocess(database, config, None, clock(), dry_run=True)
        assert [replay.outcome for replay in dry.replays] == ["understood"]
        assert "would be replayed" in dry.lines(dry_run=True)[0]
        assert await count(database, outbox) == 0

        first = await reprocess.reprocess(database, config, None, clock())
        await bridge.worker.drain()
        second = await reprocess.reprocess(database, config, None, clock())
        await bridge.worker.drain()
        async with database.transaction() as connection:
            row = (await connection.execute(select(events.c.status, events.c.webhook_id))).one()

    assert [(r.outcome, r.detail) for r in first.replays] == [("understood", "1 job(s) planned")]
    assert second.replays == []
    assert "0 event(s) not understood" in second.lines(dry_run=False)[-1]
    (post,) = slack.posts("C0SUPPORT")
    assert post.text is not None and "(empty message)" in post.text
    assert tuple(row) == ("ok", "4711")


async def test_reprocess_keeps_what_it_still_cannot_read_and_skips_duplicates(
    database_url: str, slack: FakeSlack, telegram: FakeTelegram
) -> None:
    clock = Clock()
    config = make_config()
    unreadable = old_shape(5000) | {"message": {"sender": CUSTOMER}}  # no receiver: meaningless
    async with running_bridge(
        database_url, config, adapters(slack, telegram), run_worker=False, now=clock
    ) as bridge:
        database = bridge.worker.database
        await bridge.post([old_shape(6000)])  # today's bridge understands it at once
        await bridge.plan()
        await store_as_older_version(database, unreadable, clock() - 60)
        await store_as_older_version(database, old_shape(6000), clock() - 30)  # sent twice
        runs = [await reprocess.reprocess(database, config, None, clock()) for _ in range(2)]
        jobs = await count(database, outbox)
    for run in runs:
        assert [(r.outcome, r.detail) for r in run.replays] == [
            ("not_understood", "message.receiver missing"),
            ("duplicate", "webhook_id already stored as event 1"),
        ]
    assert jobs == 1  # the one the webhook planned


async def test_since_leaves_older_events_alone(
    sqlite_url: str, slack: FakeSlack, telegram: FakeTelegram
) -> None:
    clock = Clock()
    config = make_config()
    async with running_bridge(
        sqlite_url, config, adapters(slack, telegram), run_worker=False, now=clock
    ) as bridge:
        database = bridge.worker.database
        await store_as_older_version(database, old_shape(1), clock() - 7200)
        await store_as_older_version(database, old_shape(2), clock() - 60)
        recent = await reprocess.reprocess(database, config, clock() - 3600, clock())
        rest = await reprocess.reprocess(database, config, None, clock())
    assert [r.event_id for r in recent.replays] == [2]
    assert [r.event_id for r in rest.replays] == [1]


def test_the_command_says_what_it_would_do_then_does_it_once(
    tmp_path: Path, sqlite_url: str
) -> None:
    async def prepare() -> None:
        database = Database(normalise_database_url(sqlite_url))
        try:
            await migrate(database)
            await store_as_older_version(database, old_shape(), 1_800_000_000.0)
        finally:
            await database.close()

    asyncio.run(prepare())
    env = {"DATABASE_URL": sqlite_url}
    outputs: list[str] = []
    for args in (["--dry-run"], ["--since", "2027-02-01"], [], []):
        log_path = tmp_path / f"reprocess-{len(outputs)}.log"
        command = BridgeProcess(["reprocess", *args], env, log_path).start()
        assert command.wait() == 0, command.output()
        outputs.append(command.output())
    dry, too_late, first, second = outputs
    assert "event 1 (inbox_message, received 2027-01-15 08:00:00 UTC): would be replayed" in dry
    assert "0 event(s) not understood" in too_late
    assert "event 1 (inbox_message, received 2027-01-15 08:00:00 UTC): replayed" in first
    assert "1 event(s) not understood: 1 replayed" in first
    assert "0 event(s) not understood: 0 replayed" in second
    assert CUSTOMER not in first and "+32 470" not in first


async def test_events_not_understood_are_one_notice_per_reason_per_repeat_interval(
    database_url: str, slack: FakeSlack, telegram: FakeTelegram
) -> None:
    clock = Clock()
    config = make_config()
    no_receiver = {
        "webhook_type": "inbox_message",
        "message": {"sender": CUSTOMER, "content": "secret words"},
    }
    unknown = {"webhook_type": "call_forwarding", "message": {"from": CUSTOMER}}
    async with running_bridge(
        database_url, config, adapters(slack, telegram), run_worker=False, now=clock
    ) as bridge:
        await bridge.post([no_receiver | {"webhook_id": "a1"}, unknown | {"webhook_id": "u1"}])
        await bridge.post([no_receiver | {"webhook_id": "a2"}])
        await deliver(bridge, clock)
        told_first = slack.posts("C0ONCALL")
        clock.advance(3600)  # within repeat_interval (4 h): nothing new is said
        await bridge.post([no_receiver | {"webhook_id": "a3"}])
        await deliver(bridge, clock)
        told_within = slack.posts("C0ONCALL")
        clock.advance(4 * 3600 - 80)  # 4 h since the first notice; a3 within the last 4 h
        await bridge.post([no_receiver | {"webhook_id": "a4"}])
        await deliver(bridge, clock)
        told_after = slack.posts("C0ONCALL")

    assert len(told_first) == 2 and len(told_within) == 2 and len(told_after) == 3
    texts = [post.text or "" for post in told_after]
    missing, kind, again = texts
    assert "Smstools events not understood: inbox_message" in missing
    assert "2 in the last 4 h" in missing and "message.receiver missing" in missing
    assert "smsbridge reprocess" in missing and "<!subteam^S0ONCALL>" in missing
    assert "call_forwarding" in kind and "webhook_type 'call_forwarding' unknown" in kind
    assert "Smstools dashboard" in kind
    assert "2 in the last 4 h" in again  # a3 and a4: the interval before the notice
    for text in texts:
        assert "secret words" not in text and CUSTOMER not in text and "470 55" not in text
    assert slack.posts("C0SUPPORT") == []
