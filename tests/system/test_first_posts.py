"""A customer's first post says each thing once (the author, the thread's title, the time
only when it tells something), and only the customer's words notify: through the real app,
payloads read back from the fake Slack and Telegram."""

from __future__ import annotations

from typing import Any

from testkit.fakes.slack import FakeSlack
from testkit.fakes.smstools import FakeSmstools
from testkit.fakes.telegram import FakeTelegram
from tests.support.reply_fixtures import FORUM, WA_CUSTOMER, bridge_for, inbox, report

NOW_IN_BRUSSELS = "2027-01-15 09:00:00"  # the harness clock's start, on the account's clock


def dated(content: str, date: str, **kwargs: Any) -> dict[str, Any]:
    event = inbox(content, **kwargs)
    event["message"]["date"] = date
    event["timezone"] = "Europe/Brussels"
    return event


def small_print(blocks: list[dict[str, Any]]) -> list[str]:
    return [
        element["text"]
        for block in blocks
        if block["type"] == "context"
        for element in block["elements"]
    ]


async def test_slack_names_the_customer_once_and_the_notification_starts_with_their_words(
    sqlite_url: str, slack: FakeSlack, telegram: FakeTelegram, smstools: FakeSmstools
) -> None:
    async with bridge_for(sqlite_url, slack, telegram, smstools) as bridge:
        await bridge.webhook(dated("Where is *my* <order>?", NOW_IN_BRUSSELS))
    (post,) = slack.posts("C0SUPPORT")
    assert post.params["username"] == "+32 470 12 34 56"  # chat:write.customize: the author
    assert post.text is not None and post.text.startswith("Where is *my* &lt;order&gt;?\n")
    blocks = post.blocks or []
    sections = [block["text"]["text"] for block in blocks if block["type"] == "section"]
    assert sections == []  # no bold number under the number
    assert "+32 470 12 34 56" not in " ".join(small_print(blocks))
    # Written now: the post's own time says when, so no gateway time.
    assert small_print(blocks) == ["to +32 460 20 00 00", "SMS"]


async def test_slack_shows_a_late_messages_gateway_time_on_each_readers_clock(
    sqlite_url: str, slack: FakeSlack, telegram: FakeTelegram, smstools: FakeSmstools
) -> None:
    async with bridge_for(sqlite_url, slack, telegram, smstools) as bridge:
        await bridge.webhook(dated("Sent from the plane", "2027-01-15 08:58:59"))
    (post,) = slack.posts("C0SUPPORT")
    written = 1_800_000_000 - 61
    assert small_print(post.blocks or [])[-1] == (
        f"<!date^{written}^{{date_short_pretty}} {{time}}|2027-01-15 08:58:59 (Europe/Brussels)>"
    )
    assert post.text is not None and post.text.startswith("Sent from the plane\n")


async def test_telegram_topics_first_bubble_is_the_customers_words_and_only_they_notify(
    sqlite_url: str, slack: FakeSlack, telegram: FakeTelegram, smstools: FakeSmstools
) -> None:
    async with bridge_for(sqlite_url, slack, telegram, smstools) as bridge:
        await bridge.webhook(
            dated("Goedemorgen, mijn pakket?", NOW_IN_BRUSSELS, sender=WA_CUSTOMER, kind="whatsapp")
        )
        (topic,) = telegram.topics(FORUM)
        (first,) = telegram.messages(FORUM)
        assert topic.name == "+32 470 99 99 99 · +32 460 20 00 00 · WhatsApp"
        assert first.plain_text == "Goedemorgen, mijn pakket?"  # nothing of the topic's name
        assert not first.params.get("disable_notification")

        # An answer from the topic that the gateway then fails for want of credit: the note
        # for the agents is silent.
        message_id = telegram.post_as_member(FORUM, "Morgen komt het, tot dan!")
        await bridge.telegram(
            {
                "update_id": 930001,
                "message": {
                    "message_id": message_id,
                    "message_thread_id": first.message_thread_id,
                    "is_topic_message": True,
                    "from": {"id": 123456789, "is_bot": False, "first_name": "Agent"},
                    "chat": {"id": FORUM, "type": "supergroup", "is_forum": True},
                    "date": 1_800_000_000,
                    "text": "Morgen komt het, tot dan!",
                },
            }
        )
        await bridge.drain()
        (sent,) = smstools.sent()
        failed = report(sent.messageids[0], 5)
        failed["message"] |= {"delivery_code_detail": "2000", "receiver": WA_CUSTOMER}
        await bridge.webhook(failed)
    (note,) = [m for m in telegram.messages(FORUM) if m.plain_text.startswith("⚠️")]
    assert note.plain_text == (
        "⚠️ Your answer “Morgen komt het, tot…” not sent: the account is out of credit; "
        "on-call has been told — send it again once credit is back"
    )
    assert note.params.get("disable_notification") == "true"  # as the form field arrives
    assert note.message_thread_id == first.message_thread_id
