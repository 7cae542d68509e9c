"""What an agent's message must be before it reaches a customer's phone (issue 25, §1 and §3):
internal notes however formatted, members of other workspaces, bot commands, files, anonymous
admins, Telegram links, and the customer's STOP / START. End to end through the real app and
the fake Slack, Telegram and Smstools servers; whatever is not sent gets a note in the thread."""

from __future__ import annotations

import copy
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import pytest
from sqlalchemy import select

from bridge.store import facts as facts_store
from bridge.store import replies as replies_store
from bridge.store.db import Database
from bridge.store.schema import facts
from testkit.fakes.slack import FakeSlack
from testkit.fakes.smstools import FakeSmstools
from testkit.fakes.telegram import GROUP_ANONYMOUS_BOT, FakeTelegram
from tests.support.pipeline_fixtures import rows
from tests.support.reply_fixtures import (
    CONFIG,
    FORUM,
    GROUP,
    GROUP_LINE,
    WA_CUSTOMER,
    Bridge,
    bridge_for,
    inbox,
    notes,
    slack_event,
    thread_of_customer,
)

OTHER_TEAM = "T0OTHER"


@asynccontextmanager
async def bridge_with(
    sqlite_url: str,
    slack: FakeSlack,
    telegram: FakeTelegram,
    smstools: FakeSmstools,
    replies: dict[str, Any],
) -> AsyncIterator[Bridge]:
    """The test bridge with some destinations' `replies` settings replaced."""
    document = copy.deepcopy(CONFIG)
    for name, settings in replies.items():
        document["destinations"][name]["replies"] = settings
    async with bridge_for(sqlite_url, slack, telegram, smstools, document) as bridge:
        yield bridge


def telegram_notes(telegram: FakeTelegram, chat: int) -> list[str]:
    return [m.plain_text for m in telegram.messages(chat) if m.plain_text.startswith("⚠️")]


async def forum_topic(bridge: Bridge, telegram: FakeTelegram) -> int:
    """A WhatsApp customer's topic in the forum (nl-team: replies on, no `allow`)."""
    await bridge.webhook(inbox("Hallo", sender=WA_CUSTOMER, kind="whatsapp"))
    return telegram.topics(FORUM)[0].message_thread_id


_update_ids = iter(range(950_000, 960_000))


def topic_update(telegram: FakeTelegram, topic: int, **content: Any) -> dict[str, Any]:
    """An agent's message in a forum topic, as the Bot API delivers it."""
    message: dict[str, Any] = {
        "message_id": telegram.post_as_member(FORUM, str(content.get("text", ""))),
        "message_thread_id": topic,
        "is_topic_message": True,
        "from": {"id": 123456789, "is_bot": False, "first_name": "Agent"},
        "chat": {"id": FORUM, "type": "supergroup", "is_forum": True, "title": "NL"},
        "date": 1_800_000_000,
        **content,
    }
    return {"update_id": next(_update_ids), "message": message}


def group_update(telegram: FakeTelegram, replying_to: int, **content: Any) -> dict[str, Any]:
    """An agent's reply to the bridge's post in the plain group."""
    message: dict[str, Any] = {
        "message_id": telegram.post_as_member(GROUP, "answer"),
        "from": {"id": 42, "is_bot": False, "first_name": "Agent"},
        "chat": {"id": GROUP, "type": "group", "title": "Support"},
        "date": 1_800_000_000,
        "reply_to_message": {"message_id": replying_to, "chat": {"id": GROUP}, "date": 0},
        **content,
    }
    return {"update_id": next(_update_ids), "message": message}


# -- §1 internal notes ---------------------------------------------------------------------


async def test_internal_notes_are_not_sent_however_the_prefix_is_formatted_on_slack(
    sqlite_url: str, slack: FakeSlack, telegram: FakeTelegram, smstools: FakeSmstools
) -> None:
    async with bridge_for(sqlite_url, slack, telegram, smstools) as bridge:
        thread = await thread_of_customer(bridge, slack)
        for text in (
            "*note:* VIP, give 20% discount max",
            "_Note:_ VIP, give 20% discount max",
            "`note:` VIP, give 20% discount max",
            "&gt; note: VIP, give 20% discount max",
            "  *_NOTE_*: VIP, give 20% discount max",
            "\u201cnote: VIP, give 20% discount max\u201d",
            "Of course, your order ships today.",
        ):
            ts = slack.post_as_member("C0SUPPORT")
            assert (await bridge.slack(slack_event(text, thread, ts))).status_code == 200
        await bridge.drain()
    assert [s.message for s in smstools.sent()] == ["Of course, your order ships today."]
    assert notes(slack) == []  # a note kept internal is what the agent meant: nothing to say


async def test_the_worker_holds_back_a_reply_whose_plain_text_starts_with_the_prefix(
    sqlite_url: str, slack: FakeSlack, telegram: FakeTelegram, smstools: FakeSmstools
) -> None:
    async with bridge_for(sqlite_url, slack, telegram, smstools) as bridge:
        thread = await thread_of_customer(bridge, slack)
        ts = slack.post_as_member("C0SUPPORT")
        # Only the plain text shows the prefix: the link's label becomes the start of the SMS.
        event = slack_event("<https://crm.example/42|Note:> VIP, 20% max", thread, ts)
        assert (await bridge.slack(event)).status_code == 200
        await bridge.drain()
    assert smstools.sent() == []
    (note,) = notes(slack)
    assert "was not sent" in note and "note:" in note
    assert [r.name for r in slack.reactions("C0SUPPORT") if r.ts == ts] == ["-1"]


async def test_internal_notes_are_not_sent_however_they_are_quoted_on_telegram(
    sqlite_url: str, slack: FakeSlack, telegram: FakeTelegram, smstools: FakeSmstools
) -> None:
    async with bridge_for(sqlite_url, slack, telegram, smstools) as bridge:
        topic = await forum_topic(bridge, telegram)
        bold = [{"type": "bold", "offset": 1, "length": 5}]
        quote = [{"type": "blockquote", "offset": 0, "length": 20}]
        for content in (
            {"text": '"Note: VIP customer"'},
            {"text": "«note:» VIP customer", "entities": bold},
            {"text": "> note: VIP customer"},
            {"text": "\u200b NOTE: VIP customer", "entities": quote},
            {
                "caption": "'note: damaged box'",
                "photo": [{"file_id": "p", "width": 1, "height": 1}],
            },
            {"text": "Goedemiddag!"},
        ):
            assert (
                await bridge.telegram(topic_update(telegram, topic, **content))
            ).status_code == 200
        await bridge.drain()
    assert [s.message for s in smstools.sent()] == ["Goedemiddag!"]
    assert telegram_notes(telegram, FORUM) == []


# -- §1 Slack Connect outsiders ------------------------------------------------------------


async def test_a_member_of_another_workspace_cannot_answer_and_the_thread_says_why(
    sqlite_url: str, slack: FakeSlack, telegram: FakeTelegram, smstools: FakeSmstools
) -> None:
    async with bridge_with(
        sqlite_url, slack, telegram, smstools, {"support": {"prefix": "note:"}}
    ) as bridge:
        remembered = await rows(sqlite_url, select(facts.c.key, facts.c.value))
        assert ("slack_team:support", FakeSlack.TEAM_ID) in remembered  # from auth.test
        thread = await thread_of_customer(bridge, slack)
        outsider = slack.post_as_member("C0SUPPORT")
        shared = slack_event(
            "Sure, 50% off!",
            thread,
            outsider,
            user="U0PARTNER",
            team=OTHER_TEAM,
            user_team=OTHER_TEAM,
        )
        assert (await bridge.slack(shared)).status_code == 200
        member = slack.post_as_member("C0SUPPORT")
        ours = slack_event(
            "It ships today.", thread, member, user="U0AGENT", team="T0FAKE", user_team="T0FAKE"
        )
        assert (await bridge.slack(ours)).status_code == 200
        await bridge.drain()
    assert [s.message for s in smstools.sent()] == ["It ships today."]
    (note,) = notes(slack)
    assert "was not sent" in note and "another" in note and "replies.allow" in note
    assert [r.name for r in slack.reactions("C0SUPPORT") if r.ts == outsider] == ["-1"]


async def test_a_member_of_another_workspace_named_in_allow_may_answer(
    sqlite_url: str, slack: FakeSlack, telegram: FakeTelegram, smstools: FakeSmstools
) -> None:
    async with bridge_for(sqlite_url, slack, telegram, smstools) as bridge:  # allow: U0OTHER
        thread = await thread_of_customer(bridge, slack)
        ts = slack.post_as_member("C0SUPPORT")
        event = slack_event("On its way.", thread, ts, user="U0OTHER", user_team=OTHER_TEAM)
        await bridge.slack(event)
        await bridge.drain()
    assert [s.message for s in smstools.sent()] == ["On its way."]


# -- §1 bot commands -----------------------------------------------------------------------


async def test_a_message_that_is_only_a_bot_command_is_not_sent_and_gets_a_note(
    sqlite_url: str, slack: FakeSlack, telegram: FakeTelegram, smstools: FakeSmstools
) -> None:
    async with bridge_for(sqlite_url, slack, telegram, smstools) as bridge:
        topic = await forum_topic(bridge, telegram)
        for command in ("/start", "/x@SomeBot"):
            entities = [{"type": "bot_command", "offset": 0, "length": len(command)}]
            update = topic_update(telegram, topic, text=command, entities=entities)
            assert (await bridge.telegram(update)).status_code == 200
        await bridge.drain()
    assert smstools.sent() == []
    said = [n.replace("\u2060", "") for n in telegram_notes(telegram, FORUM)]  # inert commands
    assert len(said) == 2 and all("was not sent" in n and "bot command" in n for n in said)
    assert "/start" in said[0] and "/x@SomeBot" in said[1]


# -- §3 Slack files ------------------------------------------------------------------------


def file_share(text: str, thread: str, ts: str) -> dict[str, Any]:
    """A `message` event of subtype `file_share`, shaped as in bolt-python's own test fixture
    (tests/scenario_tests_async/test_message_file_share.py), in the customer's thread."""
    envelope = slack_event(text, thread, ts, subtype="file_share", upload=False)
    envelope["event"] |= {
        "files": [
            {
                "id": "F111",
                "created": 1652227642,
                "timestamp": 1652227642,
                "name": "file.png",
                "title": "file.png",
                "mimetype": "image/png",
                "filetype": "png",
                "pretty_type": "PNG",
                "user": "U0AGENT",
                "size": 92582,
                "mode": "hosted",
                "is_external": False,
                "is_public": True,
                "url_private": "https://files.slack.com/files-pri/T0FAKE-F111/file.png",
                "permalink": "https://fake.slack.com/files/U0AGENT/F111/file.png",
            }
        ],
        "display_as_bot": False,
        "team": "T0FAKE",
        "event_ts": ts,
        "channel_type": "channel",
        "client_msg_id": "ca088267-717f-41a8-9db8-c98ae14ad6a0",
    }
    if text:
        envelope["event"]["blocks"] = [
            {
                "type": "rich_text",
                "block_id": "ba4",
                "elements": [
                    {"type": "rich_text_section", "elements": [{"type": "text", "text": text}]}
                ],
            }
        ]
    return envelope


async def test_a_slack_answer_with_a_file_sends_its_text_and_notes_that_the_file_was_not(
    sqlite_url: str, slack: FakeSlack, telegram: FakeTelegram, smstools: FakeSmstools
) -> None:
    async with bridge_for(sqlite_url, slack, telegram, smstools) as bridge:
        thread = await thread_of_customer(bridge, slack)
        with_text = slack.post_as_member("C0SUPPORT")
        await bridge.slack(file_share("Here is your invoice.", thread, with_text))
        await bridge.drain()
        alone = slack.post_as_member("C0SUPPORT")
        await bridge.slack(file_share("", thread, alone))
        await bridge.drain()
    assert [s.message for s in smstools.sent()] == ["Here is your invoice."]
    sent_note, refused_note = notes(slack)
    assert "sent as text only" in sent_note and "was not sent" not in sent_note
    assert "was not sent" in refused_note and "only text can be sent" in refused_note
    assert [r.name for r in slack.reactions("C0SUPPORT") if r.ts == with_text] == ["ok_hand"]
    assert [r.name for r in slack.reactions("C0SUPPORT") if r.ts == alone] == ["-1"]


# -- §3 anonymous Telegram group admins ----------------------------------------------------


def anonymous(**content: Any) -> dict[str, Any]:
    """What an admin who remains anonymous sends as: GroupAnonymousBot, on behalf of the group."""
    return {
        "from": dict(GROUP_ANONYMOUS_BOT),
        "sender_chat": {"id": GROUP, "type": "group", "title": "Support"},
        **content,
    }


async def test_an_anonymous_group_admin_answers_when_allow_is_not_set(
    sqlite_url: str, slack: FakeSlack, telegram: FakeTelegram, smstools: FakeSmstools
) -> None:
    async with bridge_for(sqlite_url, slack, telegram, smstools) as bridge:
        await bridge.webhook(inbox("Bonjour", receiver=GROUP_LINE))
        posted = telegram.messages(GROUP)[0].message_id
        update = group_update(telegram, posted, **anonymous(text="Bonjour, c'est noté."))
        assert (await bridge.telegram(update)).status_code == 200
        channel = group_update(
            telegram,
            posted,
            text="Forwarded from the linked channel",
            sender_chat={"id": -1009876543210, "type": "channel", "title": "News"},
            **{"from": {"id": 777000, "is_bot": False, "first_name": "Telegram"}},
        )
        assert (await bridge.telegram(channel)).status_code == 200
        await bridge.drain()
    assert [(s.sender, s.message) for s in smstools.sent()] == [
        (GROUP_LINE, "Bonjour, c'est noté.")
    ]
    assert telegram_notes(telegram, GROUP) == []


@pytest.mark.parametrize(
    ("author", "said"),
    [
        (anonymous(), "anonymous group admin"),
        ({"from": {"id": 43, "is_bot": False, "first_name": "Temp"}}, 'starts with "note:"'),
    ],
    ids=["an anonymous admin", "a member not in allow"],
)
async def test_who_is_not_named_in_allow_cannot_answer_and_the_thread_is_told_why(
    sqlite_url: str,
    slack: FakeSlack,
    telegram: FakeTelegram,
    smstools: FakeSmstools,
    author: dict[str, Any],
    said: str,
) -> None:
    async with bridge_with(
        sqlite_url, slack, telegram, smstools, {"group": {"allow": [42]}}
    ) as bridge:
        await bridge.webhook(inbox("Bonjour", receiver=GROUP_LINE))
        posted = telegram.messages(GROUP)[0].message_id
        await bridge.telegram(group_update(telegram, posted, **author, text="Refusé"))
        await bridge.telegram(group_update(telegram, posted, **author, text="note: interne"))
        await bridge.telegram(group_update(telegram, posted, text="Signé"))
        await bridge.drain()
    assert [s.message for s in smstools.sent()] == ["Signé"]
    (note,) = telegram_notes(telegram, GROUP)  # none for the internal note
    assert "“Refusé" in note and "was not sent" in note and "replies.allow" in note
    assert said in note


# -- §3 Telegram links ---------------------------------------------------------------------


async def test_telegram_text_links_are_sent_as_label_and_url_in_texts_and_captions(
    sqlite_url: str, slack: FakeSlack, telegram: FakeTelegram, smstools: FakeSmstools
) -> None:
    async with bridge_for(sqlite_url, slack, telegram, smstools) as bridge:
        topic = await forum_topic(bridge, telegram)
        # UTF-16 offsets: 📦 counts two code units, é one.
        text = "📦 Voilà: see the tracking page, or call us."
        link = {"type": "text_link", "offset": 14, "length": 17, "url": "https://t.example/42"}
        bold = {"type": "bold", "offset": 0, "length": 8}
        await bridge.telegram(topic_update(telegram, topic, text=text, entities=[bold, link]))
        await bridge.drain()
        caption = "Your parcel, and the receipt."
        photo = [{"file_id": "p", "width": 1, "height": 1}]
        receipt = {"type": "text_link", "offset": 17, "length": 11, "url": "https://r.example/7"}
        update = topic_update(
            telegram, topic, caption=caption, caption_entities=[receipt], photo=photo
        )
        await bridge.telegram(update)
        await bridge.drain()
    assert [s.message for s in smstools.sent()] == [
        "📦 Voilà: see the tracking page (https://t.example/42), or call us.",
        "Your parcel, and the receipt (https://r.example/7).",
    ]
    (note,) = telegram_notes(telegram, FORUM)
    assert "sent as text only" in note


# -- §3 STOP and START ---------------------------------------------------------------------


@pytest.mark.parametrize("word", ["Stop.", "STOP!", " stop ", "stop", "¡Stop!"])
async def test_a_stop_word_with_punctuation_opts_the_customer_out_and_the_thread_says_so(
    sqlite_url: str, slack: FakeSlack, telegram: FakeTelegram, smstools: FakeSmstools, word: str
) -> None:
    async with bridge_for(sqlite_url, slack, telegram, smstools) as bridge:
        thread = await thread_of_customer(bridge, slack)
        await bridge.webhook(inbox(word))
        await bridge.slack(slack_event("But wait!", thread, slack.post_as_member("C0SUPPORT")))
        await bridge.drain()
    assert smstools.sent() == []
    opted_out, refused = notes(slack)
    assert "opted out" in opted_out and "START" in opted_out
    assert "was not sent" in refused and "STOP" in refused


async def test_stop_inside_a_sentence_is_a_message_not_an_opt_out(
    sqlite_url: str, slack: FakeSlack, telegram: FakeTelegram, smstools: FakeSmstools
) -> None:
    async with bridge_for(sqlite_url, slack, telegram, smstools) as bridge:
        thread = await thread_of_customer(bridge, slack)
        await bridge.webhook(inbox("stop please"))
        await bridge.slack(slack_event("Stopped.", thread, slack.post_as_member("C0SUPPORT")))
        await bridge.drain()
    assert [s.message for s in smstools.sent()] == ["Stopped."]
    assert notes(slack) == []


@pytest.mark.parametrize("word", ["START", "unstop!"])
async def test_start_or_unstop_undoes_an_opt_out_and_the_thread_says_so(
    sqlite_url: str, slack: FakeSlack, telegram: FakeTelegram, smstools: FakeSmstools, word: str
) -> None:
    async with bridge_for(sqlite_url, slack, telegram, smstools) as bridge:
        thread = await thread_of_customer(bridge, slack)
        await bridge.webhook(inbox("STOP"))
        await bridge.webhook(inbox(word))
        await bridge.slack(slack_event("Welcome back!", thread, slack.post_as_member("C0SUPPORT")))
        await bridge.drain()
    assert [s.message for s in smstools.sent()] == ["Welcome back!"]
    opted_out, opted_in = notes(slack)
    assert "opted out" in opted_out and "opted back in" in opted_in


async def test_start_words_are_configurable_beside_stop_words(
    sqlite_url: str, slack: FakeSlack, telegram: FakeTelegram, smstools: FakeSmstools
) -> None:
    settings = {"allow": ["U0AGENT"], "stop_words": ["ARRET"], "start_words": ["REPRISE"]}
    async with bridge_with(sqlite_url, slack, telegram, smstools, {"support": settings}) as bridge:
        thread = await thread_of_customer(bridge, slack)
        await bridge.webhook(inbox("Arrêt"))  # not the configured word: a message
        await bridge.webhook(inbox("arret."))
        await bridge.slack(slack_event("Blocked", thread, slack.post_as_member("C0SUPPORT")))
        await bridge.drain()
        await bridge.webhook(inbox("START"))  # not a start word here: still opted out
        await bridge.slack(slack_event("Blocked too", thread, slack.post_as_member("C0SUPPORT")))
        await bridge.drain()
        await bridge.webhook(inbox("Reprise"))
        await bridge.slack(slack_event("Sent", thread, slack.post_as_member("C0SUPPORT")))
        await bridge.drain()
    assert [s.message for s in smstools.sent()] == ["Sent"]


# -- the store, on SQLite and PostgreSQL -----------------------------------------------------


async def test_the_slack_team_is_replaced_and_an_opt_out_undone_on_both_databases(
    database: Database,
) -> None:
    async with database.transaction() as connection:
        await facts_store.remember_slack_team(database, connection, "support", "T0OLD")
        await facts_store.remember_slack_team(database, connection, "support", "T0NEW")
        assert await facts_store.slack_team(connection, "support") == "T0NEW"
        assert await facts_store.slack_team(connection, "other") is None
        await replies_store.opt_out(database, connection, "line", "customer", 1.0)
        await replies_store.opt_out(database, connection, "line", "customer", 2.0)
        assert await replies_store.opted_out(connection, "line", "customer")
        await replies_store.opt_in(connection, "line", "customer")
        await replies_store.opt_in(connection, "line", "customer")
        assert not await replies_store.opted_out(connection, "line", "customer")
