"""A destination that is behind gets a conversation's waiting messages as one post: each with
its own time line, in order, within the platform's size limits; every gateway message id it
shows maps to it; a lone message, one with a token free, or a destination with
`combine: false` is posted on its own as before."""

from __future__ import annotations

import re
import time
from collections import defaultdict

import pytest
from sqlalchemy import select

from bridge.chat.slack import SlackAdapter
from bridge.jobs import ConversationKey, InboxJob, Kind
from bridge.store import outbox as outbox_store
from bridge.store import reports as reports_store
from bridge.store.db import Database
from bridge.store.outbox import NewJob
from bridge.store.schema import chat_messages, outbox
from testkit.fakes.slack import FakeSlack, SlackMessage
from testkit.fakes.telegram import FakeTelegram
from tests.support.harness import Clock, RunningBridge, running_bridge, wait_until
from tests.support.pipeline_fixtures import (
    FORUM,
    LINE_FR,
    LINE_NL,
    adapters,
    at,
    inbox,
    paced_config,
    rows,
)

SLACK_PACE = 1.1  # a little over the 1.03 s a Slack channel is paced at by default
TELEGRAM_PACE = 3.2  # a little over the 60/19 s of a Telegram group


_CONTENT = re.compile(r"^(\d+):(\d+)$")


def shown(text: str | None) -> list[str]:
    """The `customer:n` messages a post shows, in order (its fallback text's body lines)."""
    return [line for line in (text or "").split("\n") if _CONTENT.match(line)]


def block_kinds(post: SlackMessage) -> list[str]:
    return [block["type"] for block in post.blocks or []]


async def step(bridge: RunningBridge, clock: Clock, seconds: float, times: int = 1) -> None:
    for _ in range(times):
        clock.advance(seconds)
        await bridge.worker.drain()


# -- the decisions -----------------------------------------------------------------------


# -- what a combined post looks like ---------------------------------------------------


# -- the outbox ---------------------------------------------------------------------------


def inbox_job(event_id: int, sender: str = "32470000001", destination: str = "support") -> NewJob:
    key = ConversationKey(receiver=LINE_NL, sender=sender)
    return NewJob(event_id, destination, InboxJob(conversation=key))


async def test_followers_are_the_due_inbox_jobs_right_behind_the_head_and_are_leased(
    database: Database,
) -> None:
    from bridge.jobs import FailureNoteJob

    key = ConversationKey(receiver=LINE_NL, sender="32470000001")
    async with database.transaction() as connection:
        await outbox_store.enqueue_many(
            database,
            connection,
            [
                inbox_job(1),
                inbox_job(2),
                inbox_job(3, sender="32470000002"),  # another conversation
                inbox_job(4),
                NewJob(5, "support", FailureNoteJob(conversation=key, conversation_id=1)),
                inbox_job(6),
            ],
            now=10.0,
        )
        later = NewJob(7, "support", InboxJob(conversation=key), due=99.0)
        await outbox_store.enqueue_many(database, connection, [inbox_job(8), later], now=11.0)
    async with database.transaction() as connection:
        heads = await outbox_store.claim(
            database, connection, worker="w", now=20.0, lease=30, limit=10
        )
        head = next(job for job, _ in heads if job.event_id == 1)
        followers = await outbox_store.claim_followers(
            connection, head, kind=Kind.INBOX, worker="w", now=20.0, lease=30, limit=10
        )
    # Up to the failure note, which must land between the messages around it.
    assert [job.event_id for job in followers] == [2, 4]
    assert not any(job.unsure for job in followers)
    async with database.transaction() as connection:
        again = await outbox_store.claim_followers(
            connection, head, kind=Kind.INBOX, worker="w2", now=21.0, lease=30, limit=10
        )
        assert again == []  # leased: nobody else takes them meanwhile
        limited = await outbox_store.claim_followers(
            connection, head, kind=Kind.INBOX, worker="w", now=60.0, lease=30, limit=1
        )
    assert [job.event_id for job in limited] == [2]
    assert limited[0].unsure  # leased before and not finished: it may be in a post already


# -- end to end ---------------------------------------------------------------------------


async def test_after_a_60_s_outage_100_messages_from_10_customers_arrive_in_10_posts_in_order(
    database_url: str, slack: FakeSlack, telegram: FakeTelegram, capsys: pytest.CaptureFixture[str]
) -> None:
    clock = Clock()
    customers = [f"3247{c:07d}" for c in range(10)]
    async with running_bridge(
        database_url, paced_config(), adapters(slack, telegram), run_worker=False, now=clock
    ) as bridge:
        slack.set_down(status=503)
        for n in range(10):  # a body every 6 s of the outage, a message from each customer
            body = [at(inbox(c, f"{c}:{n}"), f"2026-11-26 10:0{n}:00") for c in customers]
            assert (await bridge.post(body)).json() == {"received": 10}
            await step(bridge, clock, 6)
        assert slack.posts() == []
        slack.reset()
        recovered_at = clock()
        while sum(len(shown(p.text)) for p in slack.posts()) < 100:
            assert clock() - recovered_at < 15 * 60, "not caught up 15 minutes after the outage"
            await step(bridge, clock, SLACK_PACE)
        await step(bridge, clock, 60, times=3)  # nothing more comes
        caught_up = clock() - recovered_at

    posts = slack.posts("C0SUPPORT")
    assert len(posts) == 10  # one per customer: everything each wrote waited behind the outage
    threads: dict[str, list[str]] = defaultdict(list)
    roots = {}
    for post in posts:
        customer = shown(post.text)[0].split(":")[0]
        if post.thread_ts is None:
            assert customer not in roots
            roots[customer] = post.ts
        else:
            assert post.thread_ts == roots[customer]
        threads[customer] += shown(post.text)
        # each message under its own time line: the first with the full one, then `SMS · 10:0n`
        assert block_kinds(post).count("context") == len(shown(post.text))
    assert threads == {c: [f"{c}:{n}" for n in range(10)] for c in customers}
    assert await rows(database_url, select(outbox.c.status).distinct()) == [("done",)]
    with capsys.disabled():
        print(
            f"\n100 messages from 10 customers after a 60 s Slack outage: {len(posts)} posts, "
            f"caught up {caught_up - 180:.0f} s (paced clock) after the outage"
        )


async def test_a_lone_message_goes_at_once_and_so_do_messages_with_a_token_free(
    sqlite_url: str, slack: FakeSlack, telegram: FakeTelegram
) -> None:
    """No combining for a lone message, for a destination without a pace (a token is always
    free), nor with `combine: false`: one post per message, each posted as soon as it may."""
    clock = Clock()
    config = paced_config(sales={"combine": False}, **{"nl-team": {"max_rate": "unlimited"}})
    async with running_bridge(
        sqlite_url, config, adapters(slack, telegram), run_worker=False, now=clock
    ) as bridge:
        await bridge.post([inbox("32470000001", "1:0")])
        await bridge.worker.drain()
        assert [shown(p.text) for p in slack.posts("C0SUPPORT")] == [["1:0"]]  # at once
        await step(bridge, clock, SLACK_PACE)
        await bridge.post([inbox("32470000001", "1:1")])  # a token is free: at once, alone
        await bridge.worker.drain()
        assert [shown(p.text) for p in slack.posts("C0SUPPORT")] == [["1:0"], ["1:1"]]

        await bridge.post([inbox("32470000002", f"2:{n}", kind="whatsapp") for n in range(3)])
        await bridge.post([inbox("32470000003", f"3:{n}", receiver=LINE_FR) for n in range(3)])
        await step(bridge, clock, SLACK_PACE, times=5)
    assert [shown(m.plain_text) for m in telegram.messages(FORUM)] == [["2:0"], ["2:1"], ["2:2"]]
    assert [shown(p.text) for p in slack.posts("C0SALES")] == [["3:0"], ["3:1"], ["3:2"]]


async def test_combined_posts_keep_order_and_split_at_slacks_block_and_size_limits(
    sqlite_url: str, slack: FakeSlack, telegram: FakeTelegram
) -> None:
    clock = Clock()
    filler = "word " * 1600  # 8,000 characters: three rich_text blocks
    async with running_bridge(
        sqlite_url, paced_config(), adapters(slack, telegram), run_worker=False, now=clock
    ) as bridge:
        await bridge.post([inbox("32470000001", f"1:{n}") for n in range(30)])
        await bridge.post([inbox("32470000002", f"2:{n}\n{filler}") for n in range(10)])
        await step(bridge, clock, SLACK_PACE, times=10)
    first = [p for p in slack.posts("C0SUPPORT") if shown(p.text)[0].startswith("1:")]
    # A message holds 45 blocks (Slack allows 50): the first message's line, channel and time,
    # its words, then a time line and the words of each later one; then the thread's next post.
    assert [len(shown(p.text)) for p in first] == [22, 8]
    assert [m for p in first for m in shown(p.text)] == [f"1:{n}" for n in range(30)]
    assert [len(block_kinds(p)) for p in first] == [1 + 2 * 22 - 1, 2 * 8]
    # 36,000 characters a message: four of 8,000, then the next post.
    second = [p for p in slack.posts("C0SUPPORT") if shown(p.text)[0].startswith("2:")]
    assert [len(shown(p.text)) for p in second] == [4, 4, 2]
    assert [m for p in second for m in shown(p.text)] == [f"2:{n}" for n in range(10)]
    assert not any("(1/2)" in (p.text or "") for p in slack.posts())


async def test_combined_telegram_posts_stay_within_4096_characters_and_a_long_message_goes_alone(
    sqlite_url: str, slack: FakeSlack, telegram: FakeTelegram
) -> None:
    clock = Clock()
    sizes = [1500, 1500, 5000, 1500, 1500, 100]
    body = [
        inbox("32470000001", f"9:{n}\n" + "x" * (size - 1) + "\nend", kind="whatsapp")
        for n, size in enumerate(sizes)
    ]
    async with running_bridge(
        sqlite_url, paced_config(), adapters(slack, telegram), run_worker=False, now=clock
    ) as bridge:
        await bridge.post(body)
        await step(bridge, clock, TELEGRAM_PACE, times=10)
    messages = telegram.messages(FORUM)
    assert [shown(m.plain_text) for m in messages] == [
        ["9:0", "9:1"],  # a third of 1,500 would pass 4,096
        ["9:2"],  # 5,000 characters: alone, in two parts
        [],
        ["9:3", "9:4", "9:5"],
    ]
    assert [m.plain_text.count("end") for m in messages] == [2, 0, 1, 3]  # nothing cut off
    assert "(1/2)" in messages[1].plain_text and "(2/2)" in messages[2].plain_text


async def test_every_gateway_id_of_a_combined_post_maps_to_it_and_its_read_line_finds_it(
    database_url: str, slack: FakeSlack, telegram: FakeTelegram
) -> None:
    clock = Clock()
    answer = inbox("32470000001", "Great, thanks")
    answer["isreply"] = {
        "reply": True,
        "orig_message_content": "Your parcel 5531 will be delivered tomorrow",
        "orig_messageid": "ours-7",
        "orig_messagedate": "2026-11-26 08:00:00",
    }
    body = [inbox("32470000001", "Hello"), answer, inbox("32470000001", "Bye")]
    read = {
        "webhook_id": "wh_read_ours_7",
        "webhook_type": "read_report",
        "message": {
            "messageid": "ours-7",
            "datetime": "2026-11-26 08:00:00",
            "sender": LINE_NL,
            "receiver": "32470000001",
            "delivery_code": "1",
            "read_status": "message_read",
            "read_datetime": "2026-11-26 09:06:00",
        },
    }
    async with running_bridge(
        database_url, paced_config(), adapters(slack, telegram), run_worker=False, now=clock
    ) as bridge:
        await bridge.post(body)
        await step(bridge, clock, SLACK_PACE, times=3)
        await bridge.post([read])
        await step(bridge, clock, SLACK_PACE, times=3)
        database = bridge.worker.database
        async with database.transaction() as connection:
            places = [
                await reports_store.shown_at(connection, event["message"]["id"]) for event in body
            ]
    combined, line = slack.posts("C0SUPPORT")
    assert (combined.text or "").split("\n")[:-1] == [  # the customer's words first
        "Hello",
        "SMS · 10:00",
        "> Your parcel 5531 will be delivered tomorrow",  # what the second message answers
        "> _2026-11-26 08:00:00_",
        "Great, thanks",
        "SMS · 10:00",
        "Bye",
    ]
    assert line.thread_ts == combined.ts and line.text == "✓ Read by the customer at 09:06"
    assert {(p.chat, p.message) for (p,) in places} == {("C0SUPPORT", combined.ts)}
    recorded = await rows(
        database_url,
        select(
            chat_messages.c.gateway_messageid,
            chat_messages.c.message,
            chat_messages.c.part,
            chat_messages.c.outbox_id,
        ).order_by(chat_messages.c.id),
    )
    assert [row[:3] for row in recorded[:3]] == [
        (event["message"]["id"], combined.ts, 0) for event in body
    ]
    first, *others = [row[3] for row in recorded[:3]]
    assert combined.metadata == {
        "event_type": "smsbridge_post",
        "event_payload": {"job": first, "part": 0, "combined": [{"job": j} for j in others]},
    }


async def test_a_combined_post_that_landed_unrecorded_is_found_and_never_posted_again(
    sqlite_url: str, slack: FakeSlack, telegram: FakeTelegram
) -> None:
    """The post outlived its request (Slack slower than the client's timeout): the retry
    finds it by its metadata, records the messages it shows, and posts only the newer ones,
    after it, in its thread."""
    clock = Clock()
    clock.value = time.time()  # the look-up compares the job's time with Slack's clock
    chat = adapters(slack, telegram)
    chat["support"] = SlackAdapter(
        "support", "xoxb-test", "C0SUPPORT", base_url=slack.api_url, timeout=0.3
    )
    customer = "32470000001"
    async with running_bridge(
        sqlite_url, paced_config(), chat, run_worker=False, now=clock
    ) as bridge:
        slack.set_slow(1.0)
        await bridge.post([inbox(customer, f"1:{n}") for n in range(3)])
        await bridge.worker.drain()  # times out; the post lands a moment later
        await wait_until(lambda: len(slack.posts()) == 1, "the late post landed")
        slack.set_slow(0)
        await bridge.post([inbox(customer, f"1:{n}") for n in range(3, 5)])
        await step(bridge, clock, 60, times=3)
    landed, rest = slack.posts("C0SUPPORT")
    assert shown(landed.text) == ["1:0", "1:1", "1:2"]
    assert shown(rest.text) == ["1:3", "1:4"] and rest.thread_ts == landed.ts
    assert slack.calls("conversations.history")  # it looked before posting again
    recorded = await rows(
        sqlite_url, select(chat_messages.c.message).order_by(chat_messages.c.outbox_id)
    )
    assert recorded == [(landed.ts,)] * 3 + [(rest.ts,)] * 2
    assert await rows(sqlite_url, select(outbox.c.status).distinct()) == [("done",)]


# -- the config --------------------------------------------------------------------------


# -- a crash ------------------------------------------------------------------------------
