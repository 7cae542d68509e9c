"""`smsbridge forget NUMBER`: the customer's content and number are gone from every table,
counts stay, other customers' threads carry on, what was not delivered yet is not posted,
and a second run finds nothing."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest
from sqlalchemy import func, select

from bridge.cli import main
from bridge.ops import erasure
from bridge.settings import normalise_database_url
from bridge.store.db import Database
from bridge.store.schema import (
    alert_groups,
    chat_events,
    chat_messages,
    conversations,
    events,
    message_status,
    opt_outs,
    outbox,
    replies,
    webhook_requests,
)
from testkit.fakes.slack import FakeSlack
from testkit.fakes.smstools import FakeSmstools
from testkit.fakes.telegram import FakeTelegram
from tests.support import reply_fixtures as replying
from tests.support.alert_fixtures import LINE, adapters, inbox, make_config, report
from tests.support.harness import Clock, RunningBridge, running_bridge

CUSTOMER, SHOWN = "32470333003", "+32 470 33 30 03"
OTHER = "32470444004"
_counter = 0


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
        for table in (events, message_status, outbox, alert_groups, chat_events):
            query = select(func.count()).select_from(table)
            counts[table.name] = (await connection.execute(query)).scalar_one()
        return {
            "counts": counts,
            "payloads": [p for (p,) in await all_of(events.c.payload)],
            "bodies": [bytes(b).decode() for (b,) in await all_of(webhook_requests.c.body)],
            "statuses": await all_of(message_status.c.receiver, message_status.c.sender),
            "senders": [s for (s,) in await all_of(conversations.c.sender)],
            "lanes": [lane for (lane,) in await all_of(outbox.c.lane)],
            "job_payloads": [p for (p,) in await all_of(outbox.c.payload)],
            "jobs": await all_of(outbox.c.status, outbox.c.last_error, outbox.c.kind),
            "groups": await all_of(
                alert_groups.c.count, alert_groups.c.receivers, alert_groups.c.others
            ),
            "group_keys": await all_of(alert_groups.c.group_key, alert_groups.c.labels),
            "chat_events": [b for (b,) in await all_of(chat_events.c.body)],
            "replies": await all_of(replies.c.conversation_id, replies.c.messageid),
            "opt_outs": await all_of(opt_outs.c.receiver, opt_outs.c.sender),
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
            first = inbox(CUSTOMER, "my secret plan")
            await bridge.post([first, inbox(OTHER, "other text")])
            await deliver(bridge, clock)
            await bridge.post(
                [
                    report(2, 2000, receiver=CUSTOMER, messageid="m-c"),
                    report(2, 2000, receiver=OTHER, messageid="m-o"),
                    read(CUSTOMER, first["message"]["id"]),
                ]
            )
            await deliver(bridge, clock)
            # One more message from the customer, planned but not delivered yet.
            await bridge.post([inbox(CUSTOMER, "my second secret")])
            await bridge.plan()
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
    assert (count, receivers, others) == (2, [OTHER], 1)  # still two failures
    assert after["senders"] == [OTHER]
    assert sorted(after["statuses"]) == [("", ""), ("", ""), (OTHER, "Clinic")]
    # The message not delivered yet is closed, not posted, and not a dead letter; what is
    # still pending is the alert's own: a check whether the group went quiet.
    assert ("done", "not delivered: erased on request (smsbridge forget)", "inbox") in after["jobs"]
    assert {kind for status, _, kind in after["jobs"] if status != "done"} <= {"alert"}
    customer_posts = [p for p in slack.posts() if "my second secret" in (p.text or "")]
    assert customer_posts == [] and len(slack.posts("C0SUPPORT")) == posted + 1
    # The other customer's thread carries on.
    root = next(p.ts for p in slack.posts("C0SUPPORT") if "other text" in (p.text or ""))
    assert slack.posts("C0SUPPORT")[-1].thread_ts == root
    assert erased.events == 4 and erased.raw_bodies == 3 and erased.statuses == 2
    assert (erased.conversations, erased.alert_groups, erased.closed_jobs) == (1, 1, 1)
    assert erased.chat_links == 3  # the message, and the failure note and read line after it
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


async def test_a_group_keyed_by_the_customer_is_rekeyed_and_the_others_keep_grouping(
    database_url: str, slack: FakeSlack, telegram: FakeTelegram
) -> None:
    config = make_config(
        routes=[
            {"match": {"delivery_code_detail": [2006]}, "to": ["oncall"], "group_by": ["receiver"]}
        ]
    )
    clock = Clock()
    database = Database(normalise_database_url(database_url))
    try:
        async with running_bridge(
            database_url, config, adapters(slack, telegram), run_worker=False, now=clock
        ) as bridge:
            await bridge.post([report(2, 2006, receiver=CUSTOMER, messageid="g-c1")])
            await bridge.post([report(2, 2006, receiver=OTHER, messageid="g-o1")])
            await deliver(bridge, clock)
            await erasure.forget(database, CUSTOMER, clock())
            # After the erasure, both customers fail again: OTHER's group counts it, and
            # the forgotten customer's new failure starts a group of its own.
            await bridge.post([report(2, 2006, receiver=OTHER, messageid="g-o2")])
            await bridge.post([report(2, 2006, receiver=CUSTOMER, messageid="g-c2")])
            await deliver(bridge, clock)
        async with database.transaction() as connection:
            groups = (
                await connection.execute(
                    select(
                        alert_groups.c.group_key, alert_groups.c.labels, alert_groups.c.count
                    ).order_by(alert_groups.c.id)
                )
            ).all()
    finally:
        await database.close()

    (forgotten_key, forgotten, one), (other_key, other, two), (new_key, new, fresh) = groups
    assert forgotten == {"receiver": "forgotten"} and one == 1 and CUSTOMER not in forgotten_key
    assert other == {"receiver": OTHER} and two == 2
    assert new == {"receiver": CUSTOMER} and fresh == 1
    assert {json.dumps(json.loads(k)["route"]) for k in (forgotten_key, other_key, new_key)} == {
        json.dumps(json.loads(other_key)["route"])
    }


async def test_forget_erases_what_agents_wrote_the_replies_and_the_opt_out(
    database_url: str, slack: FakeSlack, telegram: FakeTelegram, smstools: FakeSmstools
) -> None:
    customer, other = replying.CUSTOMER, "32470555005"
    database = Database(normalise_database_url(database_url))
    try:
        async with replying.bridge_for(database_url, slack, telegram, smstools) as bridge:
            thread = await replying.thread_of_customer(bridge, slack)
            await bridge.webhook(replying.inbox("A question of mine", sender=other))
            other_thread = slack.posts("C0SUPPORT")[-1].ts
            said = [
                replying.slack_event("Your parcel ships today", thread, member(slack)),
                replying.slack_event("note: a difficult customer", thread, member(slack)),
                replying.slack_event("The other answer", other_thread, member(slack)),
            ]
            for event in said:
                assert (await bridge.slack(event)).status_code == 200
            await bridge.drain()
            await bridge.webhook(replying.inbox("STOP"))
            # One more answer, not sent yet when the customer asks to be forgotten.
            pending = replying.slack_event("Are you still there?", thread, member(slack))
            assert (await bridge.slack(pending)).status_code == 200
            before = await snapshot(database)

            erased = await erasure.forget(database, customer, bridge.clock())
            again = await erasure.forget(database, customer, bridge.clock())
            await bridge.drain()
        after = await snapshot(database)
    finally:
        await database.close()

    everything = json.dumps({key: after[key] for key in after if key != "counts"})
    for gone in (customer, "Your parcel", "difficult customer", "still there"):
        assert gone not in everything, gone
    assert "The other answer" in everything and other in everything
    assert after["counts"] == before["counts"]  # every row still counted
    assert after["opt_outs"] == []
    assert len(after["replies"]) == 1  # the other customer's
    # Nothing more: one answer to each (two lanes, delivered in either order).
    assert sorted(sent.to for sent in smstools.sent()) == sorted([[customer], [other]])
    assert (erased.replies, erased.chat_events, erased.opt_outs) == (2, 3, 1)
    assert erased.closed_jobs == 1  # the answer not sent yet
    assert any("opt-outs: 1 deleted" in line for line in erased.lines())
    assert not again.anything


def member(slack: FakeSlack) -> str:
    return slack.post_as_member("C0SUPPORT")


async def test_forget_takes_the_customer_out_of_bodies_not_planned_yet(
    database_url: str, slack: FakeSlack, telegram: FakeTelegram
) -> None:
    """A worker that is down or behind leaves bodies waiting: the customer's events in them
    are taken out before they are ever planned; the other customers' events go on."""
    config = make_config()
    clock = Clock()
    async with running_bridge(
        database_url, config, adapters(slack, telegram), run_worker=False, now=clock
    ) as bridge:
        database = bridge.worker.database
        await bridge.post([inbox(CUSTOMER, "my secret"), inbox(OTHER, "other text")])
        await bridge.post([inbox(SHOWN, "my other secret")])  # written as the gateway may
        erased = await erasure.forget(database, CUSTOMER, clock())
        await deliver(bridge, clock)
        after = await snapshot(database)
    assert erased.waiting == 2 and erased.anything
    assert "  events not planned yet: 2 taken out of their bodies (never shown)" in erased.lines()
    everything = json.dumps(after)
    assert "secret" not in everything and CUSTOMER not in everything
    assert "other text" in everything and after["counts"]["events"] == 1
    posts = json.dumps([post.blocks for post in slack.posts("C0SUPPORT")])
    assert "other text" in posts and "secret" not in posts
