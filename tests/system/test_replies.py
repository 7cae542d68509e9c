"""Agents answer from the Slack or Telegram thread, end to end in-process: signed Slack event /
Telegram update → stored → outbox → worker → fake Smstools `/message/send` → reports →
reaction on the agent's message, through the real SDK clients."""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

import pytest
from sqlalchemy import select

from bridge.store.schema import outbox
from testkit.fakes.slack import FakeSlack
from testkit.fakes.smstools import FakeSmstools
from testkit.fakes.telegram import FakeTelegram
from tests.support.metrics_fixtures import scrape, unexpected_labels, value
from tests.support.pipeline_fixtures import rows
from tests.support.reply_fixtures import (
    CUSTOMER,
    FORUM,
    GROUP,
    GROUP_LINE,
    LINE,
    WA_CUSTOMER,
    bridge_for,
    env,
    inbox,
    notes,
    report,
    sign,
    slack_event,
    thread_of_customer,
)


async def test_a_signed_slack_reply_is_sent_once_even_when_slack_retries(
    sqlite_url: str, slack: FakeSlack, telegram: FakeTelegram, smstools: FakeSmstools
) -> None:
    async with bridge_for(sqlite_url, slack, telegram, smstools) as bridge:
        thread = await thread_of_customer(bridge, slack)
        ts = slack.post_as_member("C0SUPPORT")
        event = slack_event("It left *today* &amp; arrives <https://t.example/1|here>", thread, ts)
        assert (await bridge.slack(event)).status_code == 200
        again = await bridge.slack(event)  # Slack's retry (X-Slack-Retry-Num), same event_id
        assert again.status_code == 200 and again.json()["duplicate"] is True
        await bridge.drain()

        sent = smstools.sent()
        assert len(sent) == 1
        assert sent[0].sender == LINE and sent[0].to == [CUSTOMER]
        assert sent[0].message == "It left today & arrives here (https://t.example/1)"
        assert sent[0].reference is not None and sent[0].reference.startswith("smsbridge-")
        assert [r.name for r in slack.reactions("C0SUPPORT") if r.ts == ts] == ["ok_hand"]

        # The delivery report for the returned messageid marks the agent's message delivered;
        # a late SUBMITTED does not undo it; the read report shows it read.
        messageid = sent[0].messageids[0]
        await bridge.webhook(report(messageid, 1))
        assert [r.name for r in slack.reactions("C0SUPPORT") if r.ts == ts] == ["+1"]
        await bridge.webhook(report(messageid, 0))
        assert [r.name for r in slack.reactions("C0SUPPORT") if r.ts == ts] == ["+1"]
        await bridge.webhook(report(messageid, 1, read=True))
        assert [r.name for r in slack.reactions("C0SUPPORT") if r.ts == ts] == ["eyes"]
    assert len(smstools.sent()) == 1


async def test_notes_bots_edits_and_messages_outside_threads_send_nothing(
    sqlite_url: str, slack: FakeSlack, telegram: FakeTelegram, smstools: FakeSmstools
) -> None:
    async with bridge_for(sqlite_url, slack, telegram, smstools) as bridge:
        thread = await thread_of_customer(bridge, slack)
        ts = slack.post_as_member("C0SUPPORT")
        ignored = [
            slack_event("note: customer is a VIP", thread, ts),
            slack_event("NOTE: same, in capitals", thread, ts),
            slack_event("I am a bot", thread, ts, bot_id="B0OTHER"),
            slack_event("edited", thread, ts, subtype="message_changed"),
            slack_event("not in a thread", None, ts),
            slack_event("a thread the bridge did not start", "1699999999.000100", ts),
        ]
        for event in ignored:
            assert (await bridge.slack(event)).status_code == 200
        await bridge.drain()
    assert smstools.sent() == []


async def test_unsigned_or_stale_slack_requests_get_401_and_are_not_stored(
    sqlite_url: str, slack: FakeSlack, telegram: FakeTelegram, smstools: FakeSmstools
) -> None:
    async with bridge_for(sqlite_url, slack, telegram, smstools) as bridge:
        thread = await thread_of_customer(bridge, slack)
        event = slack_event("hello", thread, slack.post_as_member("C0SUPPORT"))
        body = json.dumps(event).encode()
        unsigned = await bridge.slack(event, headers={"Content-Type": "application/json"})
        stale = await bridge.slack(event, headers=sign(body, int(bridge.clock()) - 301))
        wrong = await bridge.slack(event, headers=sign(body, int(bridge.clock()), "other"))
        assert [r.status_code for r in (unsigned, stale, wrong)] == [401, 401, 401]
        # The same event, signed, is new: nothing of the refused ones was kept.
        fresh = await bridge.slack(event)
        assert fresh.status_code == 200 and fresh.json()["duplicate"] is False


async def test_slack_url_verification_is_answered_with_its_challenge(
    sqlite_url: str, slack: FakeSlack, telegram: FakeTelegram, smstools: FakeSmstools
) -> None:
    async with bridge_for(sqlite_url, slack, telegram, smstools) as bridge:
        answer = await bridge.slack({"type": "url_verification", "challenge": "abc123"})
    assert answer.status_code == 200 and answer.json() == {"challenge": "abc123"}


async def test_a_telegram_update_with_a_wrong_secret_gets_403(
    sqlite_url: str, slack: FakeSlack, telegram: FakeTelegram, smstools: FakeSmstools
) -> None:
    async with bridge_for(sqlite_url, slack, telegram, smstools) as bridge:
        answer = await bridge.telegram({"update_id": 1}, secret="wrong")
        missing = await bridge.running.client.post("/telegram/webhook", json={"update_id": 1})
    assert answer.status_code == 403 and missing.status_code == 403


async def test_a_forum_topic_reply_is_sent_and_its_delivery_reacts(
    sqlite_url: str, slack: FakeSlack, telegram: FakeTelegram, smstools: FakeSmstools
) -> None:
    async with bridge_for(sqlite_url, slack, telegram, smstools) as bridge:
        await bridge.webhook(inbox("Hallo", sender=WA_CUSTOMER, kind="whatsapp"))
        topic = telegram.topics(FORUM)[0].message_thread_id
        message_id = telegram.post_as_member(FORUM, "Goedemiddag!")
        update = {
            "update_id": 900001,
            "message": {
                "message_id": message_id,
                "message_thread_id": topic,
                "is_topic_message": True,
                "from": {"id": 123456789, "is_bot": False, "first_name": "Agent"},
                "chat": {"id": FORUM, "type": "supergroup", "is_forum": True},
                "date": 1_800_000_000,
                "text": "Goedemiddag!",
            },
        }
        assert (await bridge.telegram(update)).status_code == 200
        assert (await bridge.telegram(update)).json()["duplicate"] is True
        await bridge.drain()
        sent = smstools.sent()
        assert [(s.sender, s.to, s.message) for s in sent] == [
            (LINE, [WA_CUSTOMER], "Goedemiddag!")
        ]
        await bridge.webhook(report(sent[0].messageids[0], 1) | {})
        reactions = [r.emoji for r in telegram.reactions(FORUM) if r.message_id == message_id]
    assert reactions == [("👌",), ("👍",)]


async def test_a_reply_chain_answer_in_a_plain_group_is_sent_and_a_photo_gets_a_note(
    sqlite_url: str, slack: FakeSlack, telegram: FakeTelegram, smstools: FakeSmstools
) -> None:
    async with bridge_for(sqlite_url, slack, telegram, smstools) as bridge:
        await bridge.webhook(inbox("Bonjour", receiver=GROUP_LINE))
        posted = telegram.messages(GROUP)[0].message_id

        def update(update_id: int, **content: Any) -> dict[str, Any]:
            return {
                "update_id": update_id,
                "message": {
                    "message_id": telegram.post_as_member(GROUP, "answer"),
                    "from": {"id": 42, "is_bot": False, "first_name": "Agent"},
                    "chat": {"id": GROUP, "type": "group"},
                    "date": 1_800_000_000,
                    "reply_to_message": {"message_id": posted, "chat": {"id": GROUP}, "date": 0},
                    **content,
                },
            }

        await bridge.telegram(update(910001, text="Bonjour, c'est noté."))
        await bridge.telegram(update(910002, photo=[{"file_id": "x", "width": 1, "height": 1}]))
        await bridge.telegram(update(910003, text="bot", **{"from": {"id": 7, "is_bot": True}}))
        await bridge.drain()
    assert [(s.sender, s.message) for s in smstools.sent()] == [
        (GROUP_LINE, "Bonjour, c'est noté.")
    ]
    notes_in_group = [
        m.plain_text for m in telegram.messages(GROUP) if m.plain_text.startswith("⚠️")
    ]
    assert notes_in_group == [
        "⚠️ Your answer was not sent: only text can be sent, and it has none — write the "
        "answer as text"
    ]


async def test_slack_mentions_become_display_names(
    sqlite_url: str, slack: FakeSlack, telegram: FakeTelegram, smstools: FakeSmstools
) -> None:
    slack.add_member("U0COLLEAGUE", "Marie")
    async with bridge_for(sqlite_url, slack, telegram, smstools) as bridge:
        thread = await thread_of_customer(bridge, slack)
        text = "<@U0COLLEAGUE> will call you :slightly_smiling_face: ~today~ `soon`"
        await bridge.slack(slack_event(text, thread, slack.post_as_member("C0SUPPORT")))
        await bridge.drain()
    assert [s.message for s in smstools.sent()] == ["@Marie will call you 🙂 today soon"]


@pytest.mark.parametrize(
    ("code", "says"),
    [
        ("104", "credentials"),
        ("116", "inactive"),
        ("200", "IP address"),
        ("118", "too long"),
        ("131", "opt-out list"),
        ("137", "template"),
        ("139", "invalid"),
    ],
)
async def test_each_permanent_error_becomes_a_thread_note_and_is_not_retried(
    sqlite_url: str,
    slack: FakeSlack,
    telegram: FakeTelegram,
    smstools: FakeSmstools,
    code: str,
    says: str,
) -> None:
    async with bridge_for(sqlite_url, slack, telegram, smstools) as bridge:
        thread = await thread_of_customer(bridge, slack)
        smstools.set_error(code)
        ts = slack.post_as_member("C0SUPPORT")
        assert (await bridge.slack(slack_event("Answer", thread, ts))).status_code == 200
        await bridge.drain()
        bridge.clock.advance(3600)
        await bridge.drain()
    assert len(smstools.calls("/message/send")) == 1
    (note,) = notes(slack)
    # One form: ⚠️, which answer and what happened to it, one next step.
    assert note.startswith("⚠️ Your answer “Answer” was not sent: ") and says in note
    assert note.count(" — ") == 1 and note.split(" — ")[1]
    assert [r.name for r in slack.reactions("C0SUPPORT") if r.ts == ts] == ["-1"]
    statuses = {status for (status,) in await rows(sqlite_url, select(outbox.c.status))}
    assert statuses == {"done"}


async def test_a_closed_whatsapp_window_says_what_the_agent_can_do_now(
    sqlite_url: str, slack: FakeSlack, telegram: FakeTelegram, smstools: FakeSmstools
) -> None:
    async with bridge_for(sqlite_url, slack, telegram, smstools) as bridge:
        thread = await thread_of_customer(bridge, slack)
        smstools.set_error("137")
        answer = "Refund approved, see you tomorrow at the shop"
        await bridge.slack(slack_event(answer, thread, slack.post_as_member("C0SUPPORT")))
        await bridge.drain()
    (note,) = notes(slack)
    assert note == (
        "⚠️ Your answer “Refund approved, see you…” was not sent: the customer last wrote on "
        "WhatsApp over 24 hours ago, so free text may not be sent — answer by SMS instead, or "
        "send a WhatsApp template (templates are made in the Smstools dashboard, under WhatsApp)"
    )


async def test_a_send_cut_off_after_it_was_made_is_never_sent_again(
    sqlite_url: str, slack: FakeSlack, telegram: FakeTelegram, smstools: FakeSmstools
) -> None:
    environ = env(smstools) | {"BRIDGE_JOB_LEASE": "1"}
    async with bridge_for(sqlite_url, slack, telegram, smstools, environ=environ) as bridge:
        thread = await thread_of_customer(bridge, slack)
        smstools.set_slow(2)  # longer than the job's lease: the worker gives up mid-call
        ts = slack.post_as_member("C0SUPPORT")
        await bridge.slack(slack_event("Answer", thread, ts))
        await bridge.drain()
        smstools.set_slow(0)
        bridge.clock.advance(3600)
        await bridge.drain()
    # The fake answers the cut-off request after its delay; it was never made a second time.
    deadline = time.monotonic() + 10
    while not smstools.calls("/message/send") and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
    assert len(smstools.calls("/message/send")) == 1 and len(smstools.sent()) == 1
    (note,) = notes(slack)
    assert note == (
        "⚠️ Your answer “Answer” may not have been sent — look for it in the Smstools "
        "dashboard's sent messages before sending it again"
    )
    assert [r.name for r in slack.reactions("C0SUPPORT") if r.ts == ts] == ["thinking_face"]


async def test_a_send_that_never_reached_smstools_is_retried(
    sqlite_url: str, slack: FakeSlack, telegram: FakeTelegram, smstools: FakeSmstools
) -> None:
    async with bridge_for(sqlite_url, slack, telegram, smstools) as bridge:
        thread = await thread_of_customer(bridge, slack)
        smstools.set_down(times=1)
        await bridge.slack(slack_event("Answer", thread, slack.post_as_member("C0SUPPORT")))
        await bridge.drain()
        assert smstools.sent() == []
        bridge.clock.advance(3600)
        await bridge.drain()
    assert [s.message for s in smstools.sent()] == ["Answer"]


async def test_stop_from_the_customer_blocks_further_answers(
    sqlite_url: str, slack: FakeSlack, telegram: FakeTelegram, smstools: FakeSmstools
) -> None:
    async with bridge_for(sqlite_url, slack, telegram, smstools) as bridge:
        thread = await thread_of_customer(bridge, slack)
        await bridge.webhook(inbox(" stopp "))
        await bridge.slack(slack_event("But wait!", thread, slack.post_as_member("C0SUPPORT")))
        await bridge.drain()
    assert smstools.sent() == []
    opted_out, note = notes(slack)  # the thread is told of the opt-out, then of the refusal
    assert "opted out" in opted_out and "STOP" in note


async def test_two_quick_answers_keep_their_order(
    sqlite_url: str, slack: FakeSlack, telegram: FakeTelegram, smstools: FakeSmstools
) -> None:
    async with bridge_for(sqlite_url, slack, telegram, smstools) as bridge:
        thread = await thread_of_customer(bridge, slack)
        for text in ("First", "Second", "Third"):
            await bridge.slack(slack_event(text, thread, slack.post_as_member("C0SUPPORT")))
        await bridge.drain()
    assert [s.message for s in smstools.sent()] == ["First", "Second", "Third"]


async def test_an_answer_longer_than_the_allowed_parts_gets_a_note_instead(
    sqlite_url: str, slack: FakeSlack, telegram: FakeTelegram, smstools: FakeSmstools
) -> None:
    async with bridge_for(sqlite_url, slack, telegram, smstools) as bridge:
        thread = await thread_of_customer(bridge, slack)
        fits = "a" * 459
        too_long_ucs2 = "é€" + "😀" * 101  # UCS-2: 4 parts of 67 code units
        for text in (fits, too_long_ucs2):
            await bridge.slack(slack_event(text, thread, slack.post_as_member("C0SUPPORT")))
        await bridge.drain()
    assert [s.message for s in smstools.sent()] == [fits]
    (note,) = notes(slack)
    assert "4 SMS parts" in note and "UCS-2" in note


async def test_agents_answer_from_a_group_that_became_a_supergroup(
    sqlite_url: str, slack: FakeSlack, telegram: FakeTelegram, smstools: FakeSmstools
) -> None:
    supergroup = -1000555000111
    async with bridge_for(sqlite_url, slack, telegram, smstools) as bridge:
        await bridge.webhook(inbox("Bonjour", receiver=GROUP_LINE))
        telegram.set_migrated(GROUP, supergroup)
        await bridge.webhook(inbox("Vous êtes là ?", receiver=GROUP_LINE))
        bridge.clock.advance(2)  # the job that met the move is tried again about now
        await bridge.drain()
        (posted,) = telegram.messages(supergroup)
        update = {
            "update_id": 920001,
            "message": {
                "message_id": telegram.post_as_member(supergroup, "answer"),
                "from": {"id": 42, "is_bot": False, "first_name": "Agent"},
                "chat": {"id": supergroup, "type": "supergroup"},
                "date": 1_800_000_000,
                "reply_to_message": {
                    "message_id": posted.message_id,
                    "chat": {"id": supergroup},
                    "date": 0,
                },
                "text": "Oui, nous suivons.",
            },
        }
        assert (await bridge.telegram(update)).status_code == 200
        await bridge.drain()
    assert [(s.sender, s.message) for s in smstools.sent()] == [(GROUP_LINE, "Oui, nous suivons.")]


async def test_replies_sent_and_refused_are_counted_once_each(
    sqlite_url: str, slack: FakeSlack, telegram: FakeTelegram, smstools: FakeSmstools
) -> None:
    async with bridge_for(sqlite_url, slack, telegram, smstools) as bridge:
        thread = await thread_of_customer(bridge, slack)

        async def answer(text: str) -> None:
            ts = slack.post_as_member("C0SUPPORT")
            assert (await bridge.slack(slack_event(text, thread, ts))).status_code == 200
            await bridge.drain()

        await answer("Sent at once")
        await bridge.webhook(report(smstools.sent()[0].messageids[0], 1))  # its status shown
        smstools.set_down(times=1)
        await answer("Sent on the second try")
        bridge.clock.advance(3600)
        await bridge.drain()
        smstools.set_error("131")
        await answer("Refused by the gateway")
        smstools.set_error(None)
        await answer("é€" + "😀" * 101)  # four SMS parts: refused by the bridge
        await bridge.webhook(inbox("STOP"))
        await answer("Blocked: the customer wrote STOP")
        samples = await scrape(bridge.running)
    assert [s.message for s in smstools.sent()] == ["Sent at once", "Sent on the second try"]
    assert value(samples, "smsbridge_replies_total", destination="support", outcome="sent") == 2
    assert value(samples, "smsbridge_replies_total", destination="support", outcome="refused") == 3

    def attempts(kind: str, outcome: str, reason: str) -> float:
        labels = {"destination": "support", "kind": kind, "outcome": outcome, "reason": reason}
        return value(samples, "smsbridge_delivery_attempts_total", **labels)

    assert attempts("reply", "retry", "server") == 1
    assert attempts("reply", "ok", "none") == 5
    assert attempts("reply_status", "ok", "none") == 1
    assert unexpected_labels(samples, ["support", "nl-team", "group"]) == []


async def test_a_reply_is_on_disk_as_sending_before_its_sms_while_chat_records_commit_relaxed(
    sqlite_url: str, slack: FakeSlack, telegram: FakeTelegram, smstools: FakeSmstools
) -> None:
    # Every SQLite transaction says how it commits; collect them with what each one wrote.
    statements: list[str] = []
    async with bridge_for(sqlite_url, slack, telegram, smstools) as bridge:
        database = bridge.running.worker.database
        async with database.autocommit() as connection:
            await database.on_sqlite_thread(
                connection, lambda raw: raw.set_trace_callback(statements.append)
            )
        thread = await thread_of_customer(bridge, slack)
        event = slack_event("On its way", thread, slack.post_as_member("C0SUPPORT"))
        assert (await bridge.slack(event)).status_code == 200
        await bridge.drain()
    assert len(smstools.sent()) == 1
    transactions: list[tuple[str, str]] = []  # (synchronous, what it wrote)
    for statement in statements:
        if statement.startswith("PRAGMA synchronous="):
            transactions.append((statement.removeprefix("PRAGMA synchronous="), ""))
        elif transactions:
            mode, wrote = transactions[-1]
            transactions[-1] = (mode, f"{wrote}\n{statement}")

    def modes(written: str) -> set[str]:
        return {mode for mode, wrote in transactions if written in wrote}

    assert modes("INSERT INTO events") == {"FULL"}  # webhooks: on disk before their 2xx
    assert modes("'sending'") == {"FULL"}  # before the SMS goes out
    assert modes("INSERT INTO chat_messages") == {"NORMAL"}  # a chat post's record
