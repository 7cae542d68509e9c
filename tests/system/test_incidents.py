"""On-call incidents end to end, through fake Slack, Telegram and Smstools: an account-wide
cause is one alert with one mention whoever sent, joined by the low-credit notice; it stays
red while quiet, resolves only when its cause is gone, says what was never sent, and tells
whoever was paged with a reply. A lone phone-off failure is only a note in the thread.

Time is an injected clock; the credit watch is checked by hand, as in test_credit.
"""

from __future__ import annotations

from typing import Any

from testkit.fakes.slack import FakeSlack, SlackMessage
from testkit.fakes.smstools import FakeSmstools
from testkit.fakes.telegram import FakeTelegram
from tests.support.alert_fixtures import ONCALL_CHAT, adapters, make_config, report
from tests.support.harness import Clock, RunningBridge, running_bridge
from tests.support.metrics_fixtures import check_credit, watching_credit
from tests.support.spies import statements_through_sqlalchemy

MENTION = "<!subteam^S0ONCALL>"
AGENT_LINE = "32460300000"  # an agent's answer goes out from the line's number
REMINDER = "Reminder: your appointment at the Clinic is tomorrow at 9:30, reply STOP to cancel"


def reminders(count: int, first: int = 0) -> list[dict[str, Any]]:
    """The campaign's messages refused for want of credit."""
    return [
        report(
            5, 2000, receiver=f"3247100{n:04d}", reference="campaign-reminders", content=REMINDER
        )
        for n in range(first, first + count)
    ]


async def deliver(bridge: RunningBridge, clock: Clock, seconds: float) -> None:
    clock.advance(seconds)
    await bridge.worker.drain()


def top_level(slack: FakeSlack, channel: str) -> list[SlackMessage]:
    return [post for post in slack.posts(channel) if post.thread_ts is None]


INTERVAL = 15 * 60  # balance_check_interval's default


async def test_low_credit_and_thirty_failures_from_two_senders_are_one_alert_paging_once(
    database_url: str, slack: FakeSlack, telegram: FakeTelegram, smstools: FakeSmstools
) -> None:
    clock = Clock()
    config = make_config(low_balance=100, routes=[], to=["oncall", "tg-oncall"], group_wait="0s")
    smstools.set_balance(42.5)
    async with watching_credit(database_url, config, slack, telegram, smstools, clock) as bridge:
        await check_credit(bridge, clock, 0)
        (notice,) = slack.posts("C0ONCALL")
        assert notice.text is not None and notice.text.startswith(f"{MENTION} :red_circle: ")
        assert "Smstools credit is low: 42.5 EUR" in notice.text
        await bridge.post(reminders(12))
        await deliver(bridge, clock, 300)
        await bridge.post(reminders(17, first=12))
        await bridge.post([report(5, 2000, sender=AGENT_LINE, content="We moved you to 10:00.")])
        await deliver(bridge, clock, 300)
    (alert,) = slack.posts("C0ONCALL")  # the notice, the campaign and the answer: one alert
    assert alert.ts == notice.ts
    grown, whole = slack.edits("C0ONCALL")
    assert grown.ts == whole.ts == alert.ts
    assert (
        grown.text is not None and "Out of credit: 12 messages from Clinic not sent" in grown.text
    )
    assert whole.text is not None
    assert "Out of credit: 30 messages from Clinic and +32 460 30 00 00 not sent" in whole.text
    assert "credit 42.5 EUR, below alerts.low_balance (100)" in whole.text
    assert whole.text.count("Do: top up the Smstools credit") == 1
    mentions = [post.text for post in slack.posts() if MENTION in (post.text or "")]
    assert len(mentions) == 1  # paged once
    (message,) = telegram.messages(ONCALL_CHAT)
    assert message.plain_text.startswith("@oncall_team 🔴 Smstools credit is low: 42.5 EUR")
    *_, last = telegram.edits(ONCALL_CHAT)
    assert last.message_id == message.message_id
    assert "30 messages from Clinic and +32 460 30 00 00 not sent" in last.plain_text


async def test_an_incident_stays_red_while_quiet_and_resolves_when_credit_is_back(
    database_url: str, slack: FakeSlack, telegram: FakeTelegram, smstools: FakeSmstools
) -> None:
    clock = Clock()
    config = make_config(
        low_balance=100, routes=[], to=["oncall", "tg-oncall"], resolve_after="10m"
    )
    smstools.set_balance(42.5)
    async with watching_credit(database_url, config, slack, telegram, smstools, clock) as bridge:
        await check_credit(bridge, clock, 0)
        await bridge.post(reminders(29))
        await bridge.post([report(5, 2000, sender=AGENT_LINE, content="We moved you to 10:00.")])
        await deliver(bridge, clock, 30)
        await deliver(bridge, clock, 600)  # ten minutes without a new failure
        for _ in range(8):  # two hours, still low: still open
            await check_credit(bridge, clock, INTERVAL)
        (alert,) = slack.posts("C0ONCALL")
        quiet = slack.edits("C0ONCALL")[-1]
        assert quiet.text is not None and quiet.text.startswith(f"{MENTION} :red_circle: ")
        assert "no new failures since " in quiet.text
        assert "Do: top up the Smstools credit" in quiet.text and "Receivers:" in quiet.text
        assert "green" not in quiet.text and "Resolved" not in quiet.text
        smstools.set_balance(500)
        await check_credit(bridge, clock, INTERVAL)
        await deliver(bridge, clock, 3600)
    top = top_level(slack, "C0ONCALL")
    assert [post.ts for post in top] == [alert.ts]  # nothing new at the top of the channel
    resolved = slack.edits("C0ONCALL")[-1]
    (reply,) = [post for post in slack.posts("C0ONCALL") if post.thread_ts == alert.ts]
    assert reply.text is not None and reply.text.startswith(f"{MENTION} :large_green_circle: ")
    text = resolved.text  # the alert, edited: everything, once
    assert text is not None
    assert ":large_green_circle: Resolved: Out of credit: 30 messages" in text
    assert "resolved " in text and "credit is back above 100" in text
    assert "Why: the account is out of credit" in text
    assert "Do: top up the Smstools credit" in text
    assert "Still undone: 30 messages were never sent" in text
    assert "• 29 × reference campaign-reminders" in text
    assert "“Reminder: your appointment at the Clinic is tomorrow…”" in text
    assert "• 1 × no reference" in text and "“We moved you to 10:00.”" in text
    assert "Send these again now that credit is back." in text
    # The reply under it pages with what is over, what is undone and the next step, and
    # does not repeat what the alert just above it says.
    assert reply.text is not None and "credit is back above 100" in reply.text
    assert ":large_green_circle: Resolved " in reply.text
    assert "Still undone: 30 messages were never sent" in reply.text
    assert "Send these again now that credit is back." in reply.text
    for said_above in ("Why:", "Do:", "campaign-reminders", "Reminder: your appointment"):
        assert said_above not in reply.text
    (message,) = [m for m in telegram.messages(ONCALL_CHAT) if m.reply_to_message_id is None]
    (answer,) = [m for m in telegram.messages(ONCALL_CHAT) if m.reply_to_message_id]
    assert answer.reply_to_message_id == message.message_id
    assert answer.plain_text.startswith("@oncall_team 🟢 Resolved ")
    assert "Smstools credit" not in answer.plain_text and "Why:" not in answer.plain_text
    assert "Send these again now that credit is back." in answer.plain_text
    assert telegram.edits(ONCALL_CHAT)[-1].plain_text.startswith("🟢 Resolved: ")


async def test_a_delivered_message_from_its_sender_resolves_a_refused_sender_incident(
    database_url: str, slack: FakeSlack, telegram: FakeTelegram
) -> None:
    clock = Clock()
    config = make_config(routes=[], group_wait="0s", resolve_after="10m")
    async with running_bridge(
        database_url, config, adapters(slack, telegram), run_worker=False, now=clock
    ) as bridge:
        await bridge.post([report(5, 2005, receiver=f"3247100000{n}") for n in range(3)])
        await bridge.post([report(5, 2005, sender="Shop")])
        await deliver(bridge, clock, 0)
        await bridge.post([report(1, sender="Other")])  # another sender's success: no sign
        await deliver(bridge, clock, 3600)
        (alert,) = slack.posts("C0ONCALL")
        assert alert.text is not None
        assert "Sender name refused: 4 messages from Clinic and Shop not sent" in alert.text
        assert slack.edits("C0ONCALL")[-1].text is not None
        assert ":red_circle:" in (slack.edits("C0ONCALL")[-1].text or "")
        await bridge.post([report(1, sender="Shop")])
        await deliver(bridge, clock, 1)
    (reply,) = [post for post in slack.posts("C0ONCALL") if post.thread_ts == alert.ts]
    assert reply.text is not None
    assert "Resolved " in reply.text and "messages are delivered again" in reply.text
    assert "Still undone: 4 messages were never sent" in reply.text
    assert "Resolved: Sender name refused: 4 messages" in (slack.edits("C0ONCALL")[-1].text or "")
    assert "Send these again now that it is fixed." in reply.text


async def test_a_body_of_delivered_reports_reads_the_open_incidents_once_and_still_resolves(
    database_url: str, slack: FakeSlack, telegram: FakeTelegram
) -> None:
    clock = Clock()
    config = make_config(routes=[], group_wait="0s", resolve_after="10m")
    async with running_bridge(
        database_url, config, adapters(slack, telegram), run_worker=False, now=clock
    ) as bridge:
        await bridge.post([report(5, 2005, receiver=f"3247100000{n}") for n in range(3)])
        await deliver(bridge, clock, 3600)
        statements = statements_through_sqlalchemy(bridge.app.state.receiver.commits.database)
        delivered = [report(1, sender="Other", receiver=f"3247200000{n}") for n in range(5)]
        await bridge.post([*delivered, report(1, sender="Clinic")])
        await bridge.plan()
        reads = [s for s in statements if "FROM alert_groups" in s and "cleared_at IS NULL" in s]
        await deliver(bridge, clock, 1)
    assert len(reads) == 1  # not once for each of the six delivered messages
    (alert,) = top_level(slack, "C0ONCALL")
    (reply,) = [post for post in slack.posts("C0ONCALL") if post.thread_ts == alert.ts]
    assert reply.text is not None and "messages are delivered again" in reply.text
    assert "Resolved: Sender name refused" in (slack.edits("C0ONCALL")[-1].text or "")


async def test_a_lone_phone_off_failure_is_a_thread_note_and_no_on_call_post_by_default(
    database_url: str, slack: FakeSlack, telegram: FakeTelegram
) -> None:
    clock = Clock()
    customer, line = "32470999888", "32460200000"
    first = {
        "webhook_id": "wh_inbox_lone",
        "webhook_type": "inbox_message",
        "username": "myusername",
        "message": {
            "id": "lone",
            "date": "2026-01-01 08:55:00",
            "sender": customer,
            "receiver": line,
            "content": "Is my appointment still on?",
            "type": "sms",
        },
    }
    async with running_bridge(
        database_url, make_config(), adapters(slack, telegram), run_worker=False, now=clock
    ) as bridge:
        await bridge.post([first])
        await deliver(bridge, clock, 4)
        await bridge.post([report(2, 11, receiver=customer, sender=line)])
        await deliver(bridge, clock, 30)
        await deliver(bridge, clock, 2 * 86400)  # past any quiet check
    root, note = slack.posts("C0SUPPORT")
    assert note.thread_ts == root.ts and note.text is not None
    assert "Not delivered to +32 470 99 98 88" in note.text
    assert slack.posts("C0ONCALL") == [] and slack.edits("C0ONCALL") == []


async def test_a_posted_lone_failure_shows_no_red_and_gets_no_quiet_edit(
    database_url: str, slack: FakeSlack, telegram: FakeTelegram
) -> None:
    clock = Clock()
    config = make_config(routes=[], lone_failures="post", resolve_after="10m")
    async with running_bridge(
        database_url, config, adapters(slack, telegram), run_worker=False, now=clock
    ) as bridge:
        await bridge.post([report(2, 11)])
        await deliver(bridge, clock, 30)
        await deliver(bridge, clock, 3600)
    (alert,) = slack.posts("C0ONCALL")
    assert alert.text is not None and alert.text.startswith("Not delivered: 1 message from Clinic")
    assert ":red_circle:" not in alert.text and "<!" not in alert.text
    assert slack.edits("C0ONCALL") == []
