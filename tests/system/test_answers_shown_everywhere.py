"""Both sides see the same conversation: an answer sent to the customer from one destination
is shown in the conversation's thread at every other destination it is routed to (who, where,
the text, its status), and never sent twice; on Slack the thread's first post carries ✅ while
the latest word is ours. In-process app, fake Slack / Telegram / Smstools, real SDK clients."""

from __future__ import annotations

import copy
from typing import Any

from sqlalchemy import select

from bridge.chat.telegram import WORD_JOINER
from bridge.ops import erasure
from bridge.store.schema import outbox
from testkit.fakes.slack import FakeSlack
from testkit.fakes.smstools import FakeSmstools
from testkit.fakes.telegram import FakeTelegram
from tests.support.pipeline_fixtures import rows
from tests.support.reply_fixtures import (
    CONFIG,
    CUSTOMER,
    FORUM,
    LINE,
    bridge_for,
    inbox,
    report,
    slack_event,
)

ANSWERED = "white_check_mark"


def _both_config() -> dict[str, Any]:
    """The replies config with the support line routed to Slack and to the Telegram forum."""
    config = copy.deepcopy(CONFIG)
    config["routes"] = [{"match": {"receiver": LINE}, "to": ["support", "nl-team"]}]
    return config


def _telegram_answer(
    telegram: FakeTelegram, topic: int, text: str, update_id: int
) -> dict[str, Any]:
    return {
        "update_id": update_id,
        "message": {
            "message_id": telegram.post_as_member(FORUM, text),
            "message_thread_id": topic,
            "is_topic_message": True,
            "from": {"id": 123456789, "is_bot": False, "first_name": "Anna", "last_name": "P."},
            "chat": {"id": FORUM, "type": "supergroup", "is_forum": True},
            "date": 1_800_000_000,
            "text": text,
        },
    }


def _in_thread(slack: FakeSlack, root: str) -> list[str]:
    return [p.text or "" for p in slack.posts("C0SUPPORT") if p.thread_ts == root]


def _marks(slack: FakeSlack, root: str) -> list[str]:
    return [r.name for r in slack.reactions("C0SUPPORT") if r.ts == root]


async def test_a_telegram_answer_is_shown_in_the_slack_thread_and_sent_once(
    database_url: str, slack: FakeSlack, telegram: FakeTelegram, smstools: FakeSmstools
) -> None:
    async with bridge_for(database_url, slack, telegram, smstools, _both_config()) as bridge:
        await bridge.webhook(inbox("Can I come on Monday?"))
        root = slack.posts("C0SUPPORT")[0].ts
        topic = telegram.topics(FORUM)[0].message_thread_id
        answer = _telegram_answer(telegram, topic, "Of course, see you Monday!", 950001)
        assert (await bridge.telegram(answer)).status_code == 200
        await bridge.drain()

        assert [(s.to, s.message) for s in smstools.sent()] == [
            ([CUSTOMER], "Of course, see you Monday!")
        ]
        shown = _in_thread(slack, root)
        assert len(shown) == 1, shown
        assert "Anna P." in shown[0] and "nl-team" in shown[0] and "Telegram" in shown[0]
        assert "Of course, see you Monday!" in shown[0]
        assert "accepted" in shown[0].lower()
        # The Telegram topic shows the answer only once: the agent's own message.
        assert not [m for m in telegram.messages(FORUM) if "Of course" in m.plain_text]

        # Its status follows the delivery report, in place.
        await bridge.webhook(report(smstools.sent()[0].messageids[0], 1))
        edits = [e.text or "" for e in slack.edits("C0SUPPORT")]
        assert len(edits) == 1 and "delivered" in edits[0].lower(), edits
        assert "Of course, see you Monday!" in edits[0]
        assert len(_in_thread(slack, root)) == 1
    assert len(smstools.sent()) == 1


async def test_a_slack_answer_is_shown_in_the_telegram_topic_escaped(
    sqlite_url: str, slack: FakeSlack, telegram: FakeTelegram, smstools: FakeSmstools
) -> None:
    slack.add_member("U0AGENT", "Marie")
    async with bridge_for(sqlite_url, slack, telegram, smstools, _both_config()) as bridge:
        await bridge.webhook(inbox("Do you sell fish?"))
        root = slack.posts("C0SUPPORT")[0].ts
        topic = telegram.topics(FORUM)[0].message_thread_id
        text = "&lt;b&gt;Fish &amp; chips&lt;/b&gt; every Friday"
        await bridge.slack(slack_event(text, root, slack.post_as_member("C0SUPPORT")))
        await bridge.drain()

        assert [s.message for s in smstools.sent()] == ["<b>Fish & chips</b> every Friday"]
        posted = [
            m
            for m in telegram.messages(FORUM)
            if m.message_thread_id == topic and "Fish" in m.plain_text
        ]
        assert len(posted) == 1, posted
        # Escaped as customer text is: HTML-escaped, and `/b` kept from being a command by
        # Telegram's invisible word joiner.
        assert "&lt;b&gt;Fish &amp; chips&lt;/\u2060b&gt;" in posted[0].text
        shown = [posted[0].plain_text.replace(WORD_JOINER, "")]
        assert "<b>Fish & chips</b> every Friday" in shown[0]
        assert "Marie" in shown[0] and "support" in shown[0] and "Slack" in shown[0]
        # Nothing was added to the Slack thread: its agents see the answer already.
        assert not [t for t in _in_thread(slack, root) if "Fish" in t]


async def test_a_conversation_with_one_destination_gets_no_mirror(
    sqlite_url: str, slack: FakeSlack, telegram: FakeTelegram, smstools: FakeSmstools
) -> None:
    async with bridge_for(sqlite_url, slack, telegram, smstools, copy.deepcopy(CONFIG)) as bridge:
        await bridge.webhook(inbox("Hello?"))
        root = slack.posts("C0SUPPORT")[0].ts
        await bridge.slack(slack_event("Hi there", root, slack.post_as_member("C0SUPPORT")))
        await bridge.drain()
    kinds = [kind for (kind,) in await rows(sqlite_url, select(outbox.c.kind))]
    assert [s.message for s in smstools.sent()] == ["Hi there"]
    assert "reply" in kinds and "answer_shown" not in kinds
    assert telegram.messages() == [] and _in_thread(slack, root) == []
    # Its own thread is still marked answered.
    assert _marks(slack, root) == [ANSWERED]


async def test_the_slack_root_is_marked_after_an_answer_until_the_customer_writes_again(
    sqlite_url: str, slack: FakeSlack, telegram: FakeTelegram, smstools: FakeSmstools
) -> None:
    async with bridge_for(sqlite_url, slack, telegram, smstools, _both_config()) as bridge:
        await bridge.webhook(inbox("Is it ready?"))
        root = slack.posts("C0SUPPORT")[0].ts
        topic = telegram.topics(FORUM)[0].message_thread_id
        assert _marks(slack, root) == []

        # An answer from Telegram marks the Slack root.
        await bridge.telegram(_telegram_answer(telegram, topic, "Yes, come by", 950101))
        await bridge.drain()
        assert _marks(slack, root) == [ANSWERED]

        # The customer writes again: the mark goes.
        bridge.clock.advance(60)
        await bridge.webhook(inbox("Thanks, on my way"))
        assert _marks(slack, root) == []

        # An answer from Slack itself marks it again.
        bridge.clock.advance(60)
        await bridge.slack(slack_event("See you", root, slack.post_as_member("C0SUPPORT")))
        await bridge.drain()
        assert _marks(slack, root) == [ANSWERED]

        # A further customer message after it removes it once more.
        bridge.clock.advance(60)
        await bridge.webhook(inbox("Here now"))
        assert _marks(slack, root) == []
    assert [s.message for s in smstools.sent()] == ["Yes, come by", "See you"]


async def test_forgetting_the_customer_blanks_what_the_shown_answer_carried(
    sqlite_url: str, slack: FakeSlack, telegram: FakeTelegram, smstools: FakeSmstools
) -> None:
    async with bridge_for(sqlite_url, slack, telegram, smstools, _both_config()) as bridge:
        await bridge.webhook(inbox("Can I come on Monday?"))
        topic = telegram.topics(FORUM)[0].message_thread_id
        await bridge.telegram(_telegram_answer(telegram, topic, "See you Monday!", 950201))
        await bridge.drain()
        query = select(outbox.c.payload).where(outbox.c.kind == "answer_shown")
        (before,) = [payload for (payload,) in await rows(sqlite_url, query)]
        assert before["text"] == "See you Monday!" and before["author"] == "Anna P."
        await erasure.forget(bridge.running.worker.database, CUSTOMER, bridge.clock())
        (after,) = [payload for (payload,) in await rows(sqlite_url, query)]
    assert after["text"] == "" and after["author"] == ""
    assert after["conversation"]["sender"] == ""
