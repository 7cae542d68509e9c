"""`smsbridge forget NUMBER`: the customer's content and number are gone from every table,
counts stay, other customers' threads carry on, what was not delivered yet is not posted,
and a second run finds nothing."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest
from sqlalchemy import func, select

from bridge import erasure
from bridge.cli import main
from bridge.settings import normalise_database_url
from bridge.store.db import Database
from bridge.store.schema import (
    alert_groups,
    chat_messages,
    conversations,
    events,
    message_status,
    outbox,
    webhook_requests,
)
from tests.alert_fixtures import Clock, adapters, make_config, report
from tests.fakes.slack import FakeSlack
from tests.fakes.telegram import FakeTelegram
from tests.harness import RunningBridge, running_bridge

CUSTOMER, SHOWN = "32470333003", "+32 470 33 30 03"
OTHER = "32470444004"
LINE = "32460200000"
_counter = 0


def inbox(sender: str, content: str) -> dict[str, Any]:
    global _counter
    _counter += 1
    return {
        "webhook_id": f"wh_erasure_{_counter}",
        "webhook_type": "inbox_message",
        "message": {
            "id": f"er{_counter}",
            "sender": sender,
            "receiver": LINE,
            "content": content,
            "type": "sms",
        },
    }


def read(receiver: str, messageid: str) -> dict[str, Any]:
    global _counter
    _counter += 1
    return {
        "webhook_id": f"wh_erasure_read_{_counter}",
        "webhook_type": "read_report",
        "message": {"messageid": messageid, "sender": LINE, "receiver": receiver},
    }


async def deliver(bridge: RunningBridge, clock: Clock) -> None:
    for _ in range(4):
        clock.advance(31)  # past the alerts' group_wait and the channels' pacing
        await bridge.worker.drain()


async def snapshot(database: Database) -> dict[str, Any]:
    async with database.transaction() as connection:

        async def all_of(*columns: Any) -> list[Any]:
            return [tuple(row) for row in await connection.execute(select(*columns))]

        counts = {}
        for table in (events, message_status, outbox, alert_groups):
            query = select(func.count()).select_from(table)
            counts[table.name] = (await connection.execute(query)).scalar_one()
        return {
            "counts": counts,
            "payloads": [p for (p,) in await all_of(events.c.payload)],
            "bodies": [bytes(b).decode() for (b,) in await all_of(webhook_requests.c.body)],
            "statuses": await all_of(message_status.c.receiver, message_status.c.sender),
            "senders": [s for (s,) in await all_of(conversations.c.sender)],
            "lanes": [lane for (lane,) in await all_of(outbox.c.lane)],
            "jobs": await all_of(outbox.c.status, outbox.c.last_error),
            "groups": await all_of(
                alert_groups.c.count, alert_groups.c.receivers, alert_groups.c.others
            ),
            "links": (
                await connection.execute(select(func.count()).select_from(chat_messages))
            ).scalar_one(),
        }


async def test_forget_erases_a_customer_and_leaves_the_rest(
    database_url: str, slack: FakeSlack, telegram: FakeTelegram
) -> None:
    config = make_config(top={"threads": {"idle_after": "7d"}})
    clock = Clock()
    database = Database(normalise_database_url(database_url))
    try:
        async with running_bridge(
            database_url, config, adapters(slack, telegram), run_worker=False, now=clock
        ) as bridge:
            # Both customers in one body, failures to both (one alert group), a read report.
            await bridge.post([inbox(CUSTOMER, "my secret plan"), inbox(OTHER, "other text")])
            await deliver(bridge, clock)
            await bridge.post(
                [
                    report(2, 2000, receiver=CUSTOMER, messageid="m-c"),
                    report(2, 2000, receiver=OTHER, messageid="m-o"),
                    read(CUSTOMER, "er1"),
                ]
            )
            await deliver(bridge, clock)
            # One more message from the customer, not delivered yet.
            await bridge.post([inbox(CUSTOMER, "my second secret")])
            before = await snapshot(database)

            erased = await erasure.forget(database, CUSTOMER, clock())
            again = await erasure.forget(database, CUSTOMER, clock())

            posted = len(slack.posts("C0SUPPORT"))
            await bridge.post([inbox(OTHER, "other after")])
            await deliver(bridge, clock)
        after = await snapshot(database)
    finally:
        await database.close()

    everything = json.dumps({key: after[key] for key in after if key != "counts"})
    assert CUSTOMER not in everything and "secret" not in everything
    assert "other text" in everything and OTHER in everything
    assert after["counts"]["events"] == before["counts"]["events"] + 1  # OTHER's new one
    assert after["counts"]["message_status"] == before["counts"]["message_status"]
    assert after["counts"]["alert_groups"] == before["counts"]["alert_groups"] == 1
    ((count, receivers, others),) = after["groups"]
    assert (count, json.loads(receivers), others) == (2, [OTHER], 1)  # still two failures
    assert after["senders"] == [OTHER]
    assert sorted(after["statuses"]) == [("", ""), ("", ""), (OTHER, "Clinic")]
    # The message not delivered yet is closed, not posted, and not a dead letter.
    assert (
        "done",
        "not delivered: erased on request (smsbridge forget)",
    ) in after["jobs"]
    assert all(status == "done" for status, _ in after["jobs"])
    customer_posts = [p for p in slack.posts() if "my second secret" in (p.text or "")]
    assert customer_posts == [] and len(slack.posts("C0SUPPORT")) == posted + 1
    # The other customer's thread carries on.
    root = next(p.ts for p in slack.posts("C0SUPPORT") if "other text" in (p.text or ""))
    assert slack.posts("C0SUPPORT")[-1].thread_ts == root
    assert erased.events == 4 and erased.raw_bodies == 3 and erased.statuses == 2
    assert (erased.conversations, erased.alert_groups, erased.closed_jobs) == (1, 1, 1)
    assert erased.chat_links == 2  # the message, and the failure note in its thread
    assert not again.anything and again.lines() == [f"nothing stored about {SHOWN}"]


async def test_forget_command_prints_what_it_erased_and_refuses_a_non_number(
    sqlite_url: str,
    slack: FakeSlack,
    telegram: FakeTelegram,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    clock = Clock()
    async with running_bridge(
        sqlite_url, make_config(), adapters(slack, telegram), run_worker=False, now=clock
    ) as bridge:
        await bridge.post([inbox(CUSTOMER, "my secret plan")])
        await deliver(bridge, clock)
    monkeypatch.setenv("DATABASE_URL", sqlite_url)
    assert await asyncio.to_thread(main, ["forget", SHOWN]) == 0
    printed = capsys.readouterr().out.splitlines()
    assert await asyncio.to_thread(main, ["forget", "0032470333003"]) == 0
    again = capsys.readouterr().out
    assert await asyncio.to_thread(main, ["forget", "0470 33 30 03"]) == 1
    refused = capsys.readouterr().err
    assert printed[0] == f"erased what was stored about {SHOWN}:"
    assert "  events: 1 (text and numbers erased; each still counted)" in printed
    assert "  raw webhook bodies: 1 deleted" in printed
    assert "  conversations: 1 deleted, with 1 chat message link(s)" in printed
    root = slack.posts("C0SUPPORT")[0].ts
    assert f"  support: chat C0SUPPORT, thread {root}" in printed
    assert again == f"nothing stored about {SHOWN}\n"
    assert "international format" in refused
