"""Reply chains (issue 25, §3): in a Telegram group without topics a conversation is a chain of
replies, and an answer to any message of it (the bridge's posts, its own notes, a colleague's
answer) reaches the customer; in a supergroup the chain's root (`message_thread_id`) finds the
conversation even when the message replied to is unknown; a reply in another chain is still
ignored. On Slack the thread is the chain: an answer in it after a note is sent. End to end
through the real app and the fake Slack, Telegram and Smstools servers."""

from __future__ import annotations

import copy
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from sqlalchemy import select

from bridge.chat.telegram import TelegramAdapter
from bridge.config import build
from bridge.store.schema import chat_events
from testkit.fakes.slack import FakeSlack
from testkit.fakes.smstools import FakeSmstools
from testkit.fakes.telegram import FakeTelegram
from tests.support.harness import Clock, running_bridge
from tests.support.pipeline_fixtures import rows
from tests.support.reply_fixtures import (
    CONFIG,
    GROUP,
    GROUP_LINE,
    Bridge,
    adapters,
    env,
    inbox,
    notes,
    slack_event,
    thread_of_customer,
)

SUPERGROUP, SUPERGROUP_LINE = -1009876543210, "32460400000"


@asynccontextmanager
async def chains_bridge(
    database_url: str, slack: FakeSlack, telegram: FakeTelegram, smstools: FakeSmstools
) -> AsyncIterator[Bridge]:
    """The test bridge, plus `super`: a supergroup without topics that answers by replies."""
    document = copy.deepcopy(CONFIG)
    document["destinations"]["super"] = {
        "telegram": {"chat_id": SUPERGROUP},
        "max_rate": "unlimited",
        "replies": True,
    }
    document["routes"].insert(0, {"match": {"receiver": SUPERGROUP_LINE}, "to": ["super"]})
    chats = dict(adapters(slack, telegram))
    chats["super"] = TelegramAdapter(
        "super", FakeTelegram.TOKEN, SUPERGROUP, topics=False, api_url=telegram.url, timeout=2.0
    )
    clock = Clock()
    async with running_bridge(
        database_url,
        build(document, "test config", env(smstools)),
        chats,
        run_worker=False,
        now=clock,
        env=env(smstools),
    ) as running:
        yield Bridge(running, clock)


_update_ids = iter(range(970_000, 980_000))


def chain_update(
    telegram: FakeTelegram,
    chat: int,
    text: str,
    *,
    replying_to: int | None,
    root: int | None = None,
    agent: int = 42,
    **content: Any,
) -> dict[str, Any]:
    """An agent's message in a group, replying to `replying_to` (None: the message replied to
    was deleted, so Telegram leaves `reply_to_message` out). In a supergroup Telegram also
    names the chain's first message, `root`, as `message_thread_id`."""
    message: dict[str, Any] = {
        "message_id": telegram.post_as_member(chat, text),
        "from": {"id": agent, "is_bot": False, "first_name": f"Agent {agent}"},
        "chat": {"id": chat, "type": "supergroup" if chat == SUPERGROUP else "group"},
        "date": 1_800_000_000,
        "text": text,
        **content,
    }
    if replying_to is not None:
        message["reply_to_message"] = {"message_id": replying_to, "chat": {"id": chat}, "date": 0}
    if root is not None:
        message["message_thread_id"] = root
    return {"update_id": next(_update_ids), "message": message}


def telegram_notes(telegram: FakeTelegram, chat: int) -> list[tuple[int, str]]:
    """(message id, text) of the bridge's notes in the chat."""
    return [
        (m.message_id, m.plain_text)
        for m in telegram.messages(chat)
        if m.plain_text.startswith("⚠️")
    ]


async def test_a_reply_to_a_colleagues_answer_is_sent_to_the_customer_once(
    database_url: str, slack: FakeSlack, telegram: FakeTelegram, smstools: FakeSmstools
) -> None:
    async with chains_bridge(database_url, slack, telegram, smstools) as bridge:
        await bridge.webhook(inbox("Bonjour, ma commande ?", receiver=GROUP_LINE))
        posted = telegram.messages(GROUP)[0].message_id
        first = chain_update(telegram, GROUP, "Bonjour, je regarde.", replying_to=posted)
        assert (await bridge.telegram(first)).status_code == 200
        colleague = chain_update(
            telegram,
            GROUP,
            "Elle part demain.",
            replying_to=first["message"]["message_id"],
            agent=43,
        )
        assert (await bridge.telegram(colleague)).status_code == 200
        assert (await bridge.telegram(colleague)).status_code == 200  # Telegram retries it
        await bridge.drain()
        third = chain_update(
            telegram,
            GROUP,
            "Bonne journée !",
            replying_to=colleague["message"]["message_id"],
        )
        assert (await bridge.telegram(third)).status_code == 200
        await bridge.drain()
    assert [(s.sender, s.message) for s in smstools.sent()] == [
        (GROUP_LINE, "Bonjour, je regarde."),
        (GROUP_LINE, "Elle part demain."),
        (GROUP_LINE, "Bonne journée !"),
    ]
    assert telegram_notes(telegram, GROUP) == []


async def test_a_reply_to_the_bridges_own_note_is_sent(
    sqlite_url: str, slack: FakeSlack, telegram: FakeTelegram, smstools: FakeSmstools
) -> None:
    async with chains_bridge(sqlite_url, slack, telegram, smstools) as bridge:
        await bridge.webhook(inbox("Bonjour", receiver=GROUP_LINE))
        posted = telegram.messages(GROUP)[0].message_id
        photo = [{"file_id": "x", "width": 1, "height": 1}]
        await bridge.telegram(chain_update(telegram, GROUP, "", replying_to=posted, photo=photo))
        command = [{"type": "bot_command", "offset": 0, "length": 6}]
        await bridge.telegram(
            chain_update(telegram, GROUP, "/start", replying_to=posted, entities=command)
        )
        await bridge.drain()
        (media_note, media_text), (command_note, command_text) = telegram_notes(telegram, GROUP)
        assert "only text can be sent" in media_text and "bot command" in command_text
        await bridge.telegram(
            chain_update(telegram, GROUP, "Le texte, alors.", replying_to=media_note)
        )
        await bridge.telegram(
            chain_update(telegram, GROUP, "Pardon, voici.", replying_to=command_note)
        )
        await bridge.drain()
    assert [(s.sender, s.message) for s in smstools.sent()] == [
        (GROUP_LINE, "Le texte, alors."),
        (GROUP_LINE, "Pardon, voici."),
    ]


async def test_a_supergroup_reply_is_found_by_its_chains_root_when_its_message_is_unknown(
    sqlite_url: str, slack: FakeSlack, telegram: FakeTelegram, smstools: FakeSmstools
) -> None:
    async with chains_bridge(sqlite_url, slack, telegram, smstools) as bridge:
        await bridge.webhook(inbox("Hello", receiver=SUPERGROUP_LINE))
        root = telegram.messages(SUPERGROUP)[0].message_id
        # Another bot's message in the chain, which the bridge never saw.
        unknown = telegram.post_as_member(SUPERGROUP, "a reminder bot's message")
        replying = chain_update(
            telegram, SUPERGROUP, "Yes, it ships today.", replying_to=unknown, root=root
        )
        deleted = chain_update(
            telegram, SUPERGROUP, "Tracking follows.", replying_to=None, root=root
        )
        for update in (replying, deleted):
            assert (await bridge.telegram(update)).status_code == 200
        await bridge.drain()
    assert [(s.sender, s.message) for s in smstools.sent()] == [
        (SUPERGROUP_LINE, "Yes, it ships today."),
        (SUPERGROUP_LINE, "Tracking follows."),
    ]


async def test_a_reply_in_an_unrelated_chain_is_still_ignored(
    sqlite_url: str, slack: FakeSlack, telegram: FakeTelegram, smstools: FakeSmstools
) -> None:
    async with chains_bridge(sqlite_url, slack, telegram, smstools) as bridge:
        await bridge.webhook(inbox("Bonjour", receiver=GROUP_LINE))
        await bridge.webhook(inbox("Hello", receiver=SUPERGROUP_LINE))
        lunch = telegram.post_as_member(GROUP, "Lunch at noon?")
        answer = chain_update(telegram, GROUP, "Yes!", replying_to=lunch)
        again = chain_update(
            telegram, GROUP, "Me too.", replying_to=answer["message"]["message_id"]
        )
        elsewhere = telegram.post_as_member(SUPERGROUP, "Stand-up moved")
        in_super = chain_update(telegram, SUPERGROUP, "Ok.", replying_to=elsewhere, root=elsewhere)
        rootless = chain_update(telegram, SUPERGROUP, "Noted.", replying_to=None, root=elsewhere)
        for update in (answer, again, in_super, rootless):
            assert (await bridge.telegram(update)).status_code == 200
        await bridge.drain()
    statuses = await rows(sqlite_url, select(chat_events.c.status).order_by(chat_events.c.id))
    assert smstools.sent() == []
    assert [status for (status,) in statuses] == ["not in a bridged thread"] * 4
    assert telegram_notes(telegram, GROUP) == telegram_notes(telegram, SUPERGROUP) == []


async def test_a_slack_answer_in_the_thread_after_a_note_is_sent(
    sqlite_url: str, slack: FakeSlack, telegram: FakeTelegram, smstools: FakeSmstools
) -> None:
    async with chains_bridge(sqlite_url, slack, telegram, smstools) as bridge:
        thread = await thread_of_customer(bridge, slack)
        too_long = "é€" + "😀" * 101
        await bridge.slack(slack_event(too_long, thread, slack.post_as_member("C0SUPPORT")))
        await bridge.drain()
        (note,) = notes(slack)
        assert "was not sent" in note
        shorter = slack_event(
            "Short and sweet.", thread, slack.post_as_member("C0SUPPORT"), user="U0OTHER"
        )
        assert (await bridge.slack(shorter)).status_code == 200
        await bridge.drain()
    assert [s.message for s in smstools.sent()] == ["Short and sweet."]
