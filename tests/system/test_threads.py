"""A conversation's Telegram topic closed by a moderator does not cost a message: the bridge
reopens it, or, when the bot may not, opens a new topic that says why it exists."""

from __future__ import annotations

from typing import Any

from sqlalchemy import select

from bridge.chat.telegram import TelegramAdapter
from bridge.config import Config, build
from bridge.store.schema import outbox
from testkit.fakes.telegram import FakeTelegram
from tests.support.harness import running_bridge

FORUM = -1005000000001
CUSTOMER = "32470000042"
_counter = 0


def config() -> Config:
    document: dict[str, Any] = {
        "destinations": {
            "forum": {"telegram": {"chat_id": FORUM, "topics": True}, "max_rate": "unlimited"}
        },
        "default": ["forum"],
    }
    return build(document, "test config", {"TELEGRAM_BOT_TOKEN": FakeTelegram.TOKEN})


def adapters(telegram: FakeTelegram) -> dict[str, TelegramAdapter]:
    return {
        "forum": TelegramAdapter(
            "forum", FakeTelegram.TOKEN, FORUM, topics=True, api_url=telegram.url
        )
    }


def inbox(content: str) -> dict[str, Any]:
    global _counter
    _counter += 1
    return {
        "webhook_id": f"wh_threads_{_counter}",
        "webhook_type": "inbox_message",
        "message": {
            "id": f"th{_counter}",
            "sender": CUSTOMER,
            "receiver": "32460200000",
            "content": content,
            "type": "whatsapp",
        },
    }


async def test_a_closed_topic_is_reopened_and_the_conversation_stays_in_it(
    sqlite_url: str, telegram: FakeTelegram
) -> None:
    async with running_bridge(sqlite_url, config(), adapters(telegram), run_worker=False) as bridge:
        await bridge.post([inbox("one")])
        await bridge.worker.drain()
        (topic,) = telegram.topics(FORUM)
        telegram.close_topic(FORUM, topic.message_thread_id)
        await bridge.post([inbox("two")])
        await bridge.worker.drain()
    assert len(telegram.topics(FORUM)) == 1 and len(telegram.calls("reopenForumTopic")) == 1
    assert [m.message_thread_id for m in telegram.messages(FORUM)] == [topic.message_thread_id] * 2


async def test_a_closed_topic_the_bot_may_not_reopen_is_replaced_by_a_new_one_that_says_so(
    database_url: str, telegram: FakeTelegram
) -> None:
    telegram.fail_method("reopenForumTopic", 400, "Bad Request: not enough rights to manage topics")
    async with running_bridge(
        database_url, config(), adapters(telegram), run_worker=False
    ) as bridge:
        await bridge.post([inbox("one")])
        await bridge.worker.drain()
        (closed,) = telegram.topics(FORUM)
        telegram.close_topic(FORUM, closed.message_thread_id)
        await bridge.post([inbox("two")])
        await bridge.worker.drain()
        await bridge.post([inbox("three")])
        await bridge.worker.drain()
        async with bridge.worker.database.transaction() as connection:
            statuses = list(await connection.execute(select(outbox.c.status)))
    old, new = telegram.topics(FORUM)
    in_new = [
        m.plain_text
        for m in telegram.messages(FORUM)
        if m.message_thread_id == (new.message_thread_id)
    ]
    assert new.name == old.name and new.name.startswith("+32 470 00 00 42")
    assert len(in_new) == 3
    assert in_new[0].startswith("This conversation continues here")
    assert "may not reopen" in in_new[0]
    assert in_new[1].endswith("two") and in_new[2].endswith("three")
    assert [status for (status,) in statuses] == ["done"] * 3  # nothing dead-lettered
