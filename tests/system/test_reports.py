"""Delivery and read reports: one status per message, notes in live threads, read marks.

Through the whole bridge against fake Slack and Telegram, with an injected clock.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import select

from bridge.settings import normalise_database_url
from bridge.store import reports as report_store
from bridge.store.db import Database
from bridge.store.reports import MessageStatus
from bridge.store.schema import message_status
from testkit.fakes.slack import FakeSlack
from testkit.fakes.telegram import FakeTelegram
from tests.support.alert_fixtures import (
    adapters,
    make_config,
    report,
)
from tests.support.harness import Clock, RunningBridge, running_bridge

CUSTOMER, LINE = "32470999888", "32460200000"


def inbox(message_id: str, content: str = "Is my appointment still on?") -> dict[str, Any]:
    return {
        "webhook_id": f"wh_inbox_{message_id}",
        "webhook_type": "inbox_message",
        "username": "myusername",
        "message": {
            "id": message_id,
            "date": "2026-01-01 08:55:00",
            "sender": CUSTOMER,
            "receiver": LINE,
            "content": content,
            "type": "sms",
        },
    }


def read_report(
    messageid: str, read_at: str = "2026-01-01 09:01:00", content: str = ""
) -> dict[str, Any]:
    return {
        "webhook_id": f"wh_read_{messageid}",
        "webhook_type": "read_report",
        "username": "myusername",
        "message": {
            "messageid": messageid,
            "datetime": "2026-01-01 09:00:00",
            "sender": LINE,
            "receiver": CUSTOMER,
            "delivery_code": "1",
            "delivery_status": "delivered",
            "read_status": "message_read",
            "read_datetime": read_at,
            "content": content,
        },
    }


def reply_to(ours: str, message_id: str, content: str) -> dict[str, Any]:
    """A customer's message answering our message `ours`."""
    event = inbox(message_id, content)
    event["isreply"] = {
        "reply": True,
        "orig_message_content": "Your parcel 5531 will be delivered tomorrow",
        "orig_messageid": ours,
        "orig_messagedate": "2026-01-01 08:00:00",
    }
    return event


async def status(database_url: str, messageid: str) -> MessageStatus | None:
    database = Database(normalise_database_url(database_url))
    try:
        async with database.transaction() as connection:
            return await report_store.get(connection, messageid)
    finally:
        await database.close()


async def counts(database_url: str) -> dict[str, int]:
    """Messages with a status, plus read reports shown in chat and those only recorded."""
    database = Database(normalise_database_url(database_url))
    try:
        async with database.transaction() as connection:
            rows = await connection.execute(
                select(message_status.c.read_at, message_status.c.read_shown)
            )
            statuses = rows.all()
    finally:
        await database.close()
    read = sum(1 for read_at, _ in statuses if read_at is not None)
    shown = sum(1 for _, marked in statuses if (marked or 0) > 0)
    return {
        "messages": len(statuses),
        "read": read,
        "read_shown": shown,
        "read_not_shown": read - shown,
    }


async def settle(bridge: RunningBridge, clock: Clock, seconds: float = 60) -> None:
    """Let due jobs run, stepping past the per-channel pacing (1.2 s)."""
    for _ in range(int(seconds // 2)):
        clock.advance(2)
        await bridge.worker.drain()


async def test_a_late_non_final_report_never_overwrites_a_final_status(
    database_url: str, slack: FakeSlack, telegram: FakeTelegram
) -> None:
    clock = Clock()
    async with running_bridge(
        database_url, make_config(), adapters(slack, telegram), run_worker=False, now=clock
    ) as bridge:
        # Out of order: delivered before submitted; failed before buffered.
        await bridge.post([report(1, messageid="a"), report(0, messageid="a")])
        await bridge.post([report(2, 11, messageid="b")])
        await bridge.post([report(3, messageid="b"), report(0, messageid="b")])
        # In order: submitted, buffered, submitted again (late), delivered.
        await bridge.post([report(0, messageid="c"), report(3, messageid="c")])
        await bridge.post([report(0, messageid="c")])
        await bridge.plan()
        buffered = await status(database_url, "c")
        await bridge.post([report(1, messageid="c")])
        await bridge.plan()
    a, b, c = [await status(database_url, m) for m in "abc"]
    assert a is not None and (a.delivery_code, a.rank) == (1, 10)
    assert b is not None and (b.delivery_code, b.delivery_detail) == (2, 11)
    assert buffered is not None and buffered.delivery_code == 3
    assert c is not None and c.delivery_code == 1


async def test_a_failure_is_noted_in_the_customers_live_thread(
    database_url: str, slack: FakeSlack, telegram: FakeTelegram
) -> None:
    clock = Clock()
    config = make_config(lone_failures="post")  # and posted to on-call without a mention
    async with running_bridge(
        database_url, config, adapters(slack, telegram), run_worker=False, now=clock
    ) as bridge:
        await bridge.post([inbox("900")])
        await settle(bridge, clock, 4)
        await bridge.post([report(2, 10, receiver=CUSTOMER, sender=LINE)])
        await bridge.post([report(2, 10, receiver="32470111222", sender=LINE)])  # no thread
        await settle(bridge, clock)
    root, note = slack.posts("C0SUPPORT")
    assert note.thread_ts == root.ts
    assert note.text is not None
    assert "Not delivered to +32 470 99 98 88" in note.text
    assert "from +32 460 20 00 00 · sent 09:00" in note.text  # its times labelled
    assert "NOT DELIVERED: the receiver's number is invalid or unknown" in note.text
    assert "Your appointment is confirmed" in note.text  # which message did not arrive
    (alert,) = slack.posts("C0ONCALL")
    assert alert.text is not None and "2 messages from +32 460 20 00 00 not sent" in alert.text


async def test_with_lone_failures_note_a_lone_failure_is_only_noted_until_the_group_pages(
    database_url: str, slack: FakeSlack, telegram: FakeTelegram
) -> None:
    clock = Clock()
    config = make_config(routes=[], lone_failures="note")  # page_above: 20, the default
    async with running_bridge(
        database_url, config, adapters(slack, telegram), run_worker=False, now=clock
    ) as bridge:
        await bridge.post([inbox("902")])
        await settle(bridge, clock, 4)
        await bridge.post([report(2, 11, receiver=CUSTOMER, sender=LINE)])
        await settle(bridge, clock)
        root, note = slack.posts("C0SUPPORT")
        assert note.thread_ts == root.ts and note.text is not None
        assert "Not delivered to +32 470 99 98 88" in note.text
        assert slack.posts("C0ONCALL") == []  # a lone per-recipient failure: not posted
        others = [report(2, 11, receiver=f"324701112{n:02d}", sender=LINE) for n in range(24)]
        await bridge.post(others)
        await settle(bridge, clock)
    (alert,) = slack.posts("C0ONCALL")  # 25 > page_above: one alert, with the mention
    assert alert.text is not None and alert.text.startswith("<!subteam^S0ONCALL> ")
    assert "25 messages from +32 460 20 00 00 not sent" in alert.text
    assert len(slack.posts("C0SUPPORT")) == 2  # the others have no thread


async def test_no_note_once_the_conversation_went_quiet(
    sqlite_url: str, slack: FakeSlack, telegram: FakeTelegram
) -> None:
    clock = Clock()
    config = make_config(lone_failures="post")
    async with running_bridge(
        sqlite_url, config, adapters(slack, telegram), run_worker=False, now=clock
    ) as bridge:
        await bridge.post([inbox("901")])
        await settle(bridge, clock, 4)
        clock.advance(2 * 3600)  # idle_after is 1h in the test config
        await bridge.post([report(2, 10, receiver=CUSTOMER, sender=LINE)])
        await settle(bridge, clock)
    assert len(slack.posts("C0SUPPORT")) == 1
    assert len(slack.posts("C0ONCALL")) == 1


async def test_a_read_report_gives_a_thread_line_not_a_reaction(
    database_url: str, slack: FakeSlack, telegram: FakeTelegram
) -> None:
    clock = Clock()
    async with running_bridge(
        database_url, make_config(), adapters(slack, telegram), run_worker=False, now=clock
    ) as bridge:
        # 902 stands for a message the bridge showed (an agent's reply); 903 answers ours-1.
        # Both wait behind the channel's pace, so one post shows them (a combined post).
        await bridge.post([inbox("902"), reply_to("ours-1", "903", "Great, thanks")])
        await settle(bridge, clock, 6)
        await bridge.post([read_report("902"), read_report("902") | {"webhook_id": "again"}])
        parcel = "Your parcel 5531 will be delivered tomorrow"
        await bridge.post([read_report("ours-1", "2026-01-01 09:06:00", parcel)])
        await bridge.post([read_report("unknown-to-the-bridge")])
        await settle(bridge, clock)
    root, *lines = slack.posts("C0SUPPORT")
    assert "\nGreat, thanks\n" in (root.text or "")
    assert slack.reactions() == []
    assert [line.thread_ts for line in lines] == [root.ts, root.ts]
    shown = sorted(line.text or "" for line in lines)
    assert shown == [
        "✓ Read by the customer at 09:01",
        '✓ Read by the customer at 09:06: "Your parcel 5531 will be…"',
    ]
    assert slack.posts("C0ONCALL") == []
    read = await status(database_url, "902")
    assert read is not None and read.read_at == "2026-01-01 09:01:00"
    assert await counts(database_url) == {
        "messages": 3,
        "read": 3,
        "read_shown": 2,
        "read_not_shown": 1,
    }


async def test_a_read_report_is_a_line_in_the_telegram_thread(
    sqlite_url: str, slack: FakeSlack, telegram: FakeTelegram
) -> None:
    clock = Clock()
    config = make_config({"default": ["tg-oncall"]})
    async with running_bridge(
        sqlite_url, config, adapters(slack, telegram), run_worker=False, now=clock
    ) as bridge:
        await bridge.post([reply_to("ours-2", "904", "ok")])
        await settle(bridge, clock, 4)
        await bridge.post([read_report("ours-2", content="See you Monday")])
        await settle(bridge, clock, 4)
    message, line = telegram.messages()
    assert telegram.reactions() == []
    assert line.reply_to_message_id == message.message_id
    assert line.plain_text == '✓ Read by the customer at 09:01: "See you Monday"'
