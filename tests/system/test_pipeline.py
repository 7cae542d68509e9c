"""Inbox messages end to end, in-process: webhook → store → outbox → worker → fake Slack /
Telegram through the real SDK clients."""

from __future__ import annotations

import logging

import pytest
from sqlalchemy import select

from bridge.chat.telegram import WORD_JOINER
from bridge.store.schema import chat_messages, conversations, outbox
from testkit.fakes.slack import FakeSlack, SlackMessage
from testkit.fakes.telegram import FakeTelegram
from tests.conftest import sample
from tests.support.harness import Clock, running_bridge
from tests.support.pipeline_fixtures import FORUM, LINE_FR, adapters, inbox, make_config, rows


def words(post: SlackMessage) -> str | None:
    """The customer's words: the first line of a post's notification text (so a push preview
    shows them)."""
    return post.text.split("\n")[0] if post.text is not None else None


async def test_each_conversation_gets_one_thread_in_order(
    database_url: str, slack: FakeSlack, telegram: FakeTelegram
) -> None:
    customers = ["32470000001", "32470000002", "32470000003"]
    body = [inbox(c, f"{c} message {n}") for n in range(4) for c in customers]
    body += [inbox(c, f"{c} whatsapp {n}", kind="whatsapp") for n in range(3) for c in customers]
    async with running_bridge(
        database_url, make_config(), adapters(slack, telegram), run_worker=False
    ) as bridge:
        assert (await bridge.post(body)).json() == {"received": 21}
        await bridge.worker.drain()

    for customer in customers:
        posts = [p for p in slack.posts("C0SUPPORT") if customer in (p.text or "")]
        assert [words(p) for p in posts] == [f"{customer} message {n}" for n in range(4)]
        root = posts[0]
        assert root.thread_ts is None
        assert all(p.thread_ts == root.ts for p in posts[1:])

    topics = telegram.topics(FORUM)
    assert sorted(t.name for t in topics) == [
        "+32 470 00 00 01 · Support line · WhatsApp",
        "+32 470 00 00 02 · Support line · WhatsApp",
        "+32 470 00 00 03 · Support line · WhatsApp",
    ]
    for topic in topics:
        messages = [
            m for m in telegram.messages(FORUM) if m.message_thread_id == topic.message_thread_id
        ]
        customer = topic.name.split(" · ")[0].replace("+", "").replace(" ", "")
        assert [m.plain_text.split("\n")[-1] for m in messages] == [
            f"{customer} whatsapp {n}" for n in range(3)
        ]
    assert len(await rows(database_url, select(conversations.c.id))) == 6
    assert len(await rows(database_url, select(chat_messages.c.id))) == 21


async def test_a_message_shows_customer_line_channel_time_and_content(
    sqlite_url: str, slack: FakeSlack, telegram: FakeTelegram
) -> None:
    async with running_bridge(
        sqlite_url, make_config(), adapters(slack, telegram), run_worker=False
    ) as bridge:
        await bridge.post(sample("inbox_message"))
        await bridge.worker.drain()
    (post,) = slack.posts("C0SUPPORT")
    assert post.text is not None
    assert post.params["username"] == "+32 470 12 34 56"  # the post's author
    for shown in (
        "Support line (+32 460 20 00 00)",
        "SMS",
        "2019-01-01 00:00:00",
        "Hello, my parcel did not arrive yet. Order 5531.",
    ):
        assert shown in post.text
    assert (post.unfurl_links, post.unfurl_media) == (False, False)


async def test_the_first_post_of_a_thread_has_full_context_and_later_ones_a_short_one(
    sqlite_url: str, slack: FakeSlack, telegram: FakeTelegram
) -> None:
    body = [inbox("32470000007", "first"), inbox("32470000007", "second")]
    async with running_bridge(
        sqlite_url, make_config(), adapters(slack, telegram), run_worker=False
    ) as bridge:
        await bridge.post(body)
        await bridge.worker.drain()
        await bridge.post([inbox("32470000007", "wa one", kind="whatsapp")])
        await bridge.post([inbox("32470000007", "wa two", kind="whatsapp")])
        await bridge.worker.drain()
    first, second = slack.posts("C0SUPPORT")
    assert first.blocks is not None and second.blocks is not None
    assert first.text == (
        "first\nto Support line (+32 460 20 00 00) · SMS · 2026-11-26 10:00:00 (Europe/Brussels)"
    )
    assert [b["type"] for b in first.blocks] == ["context", "rich_text"]
    assert second.text == "second\nSMS · 10:00"
    assert [b["type"] for b in second.blocks] == ["context", "rich_text"]
    assert second.thread_ts == first.ts
    opening, later = telegram.messages(FORUM)
    assert opening.plain_text == "2026-11-26 10:00:00 (Europe/Brussels)\nwa one"
    assert later.plain_text == "WhatsApp · 10:00\nwa two"


async def test_a_reply_quotes_the_message_it_answers(
    sqlite_url: str, slack: FakeSlack, telegram: FakeTelegram
) -> None:
    async with running_bridge(
        sqlite_url, make_config(), adapters(slack, telegram), run_worker=False
    ) as bridge:
        await bridge.post(sample("inbox_message_whatsapp_reply"))
        await bridge.worker.drain()
    (message,) = telegram.messages(FORUM)
    assert "<blockquote>" in message.text
    assert "Can we deliver tomorrow between 10 and 12?" in message.plain_text
    assert "2019-01-01 00:00:00" in message.plain_text
    assert telegram.topics(FORUM)[0].name.endswith(" · WhatsApp")


async def test_customer_markup_arrives_escaped(
    sqlite_url: str, slack: FakeSlack, telegram: FakeTelegram
) -> None:
    hostile = "<!channel> <@U123> <https://evil.example|bank.com> <b>x</b> & co"
    body = [inbox("32470000009", hostile), inbox("32470000009", hostile, kind="whatsapp")]
    async with running_bridge(
        sqlite_url, make_config(), adapters(slack, telegram), run_worker=False
    ) as bridge:
        await bridge.post(body)
        await bridge.worker.drain()
    (post,) = slack.posts("C0SUPPORT")
    assert post.text is not None and "<!channel>" not in post.text and "<@U123>" not in post.text
    assert "&lt;!channel&gt;" in post.text and "&amp; co" in post.text
    (message,) = telegram.messages(FORUM)
    # Shown literally (word joiners keep `@U123` and `/b` from being Telegram entities).
    assert hostile in message.plain_text.replace(WORD_JOINER, "")


async def test_one_message_fans_out_to_every_routed_destination(
    sqlite_url: str, slack: FakeSlack, telegram: FakeTelegram
) -> None:
    async with running_bridge(
        sqlite_url, make_config(), adapters(slack, telegram), run_worker=False
    ) as bridge:
        await bridge.post([inbox("32470000004", "hi", receiver=LINE_FR)])
        await bridge.worker.drain()
    assert len(slack.posts("C0SALES")) == len(slack.posts("C0SUPPORT")) == 1


async def test_a_quiet_conversation_starts_a_new_thread(
    sqlite_url: str, slack: FakeSlack, telegram: FakeTelegram
) -> None:
    clock = Clock()
    async with running_bridge(
        sqlite_url, make_config(), adapters(slack, telegram), run_worker=False, now=clock
    ) as bridge:
        await bridge.post([inbox("32470000005", "first")])
        clock.advance(30 * 60)
        await bridge.post([inbox("32470000005", "same thread")])
        clock.advance(2 * 3600)
        await bridge.post([inbox("32470000005", "new thread")])
        await bridge.worker.drain()
    first, same, new = slack.posts("C0SUPPORT")
    assert same.thread_ts == first.ts
    assert new.thread_ts is None


async def test_threads_survive_a_restart(
    sqlite_url: str, slack: FakeSlack, telegram: FakeTelegram
) -> None:
    for text in ("before", "after"):
        async with running_bridge(
            sqlite_url, make_config(), adapters(slack, telegram), run_worker=False
        ) as bridge:
            await bridge.post([inbox("32470000006", text, kind="whatsapp")])
            await bridge.worker.drain()
    assert len(telegram.topics(FORUM)) == 1
    first, second = telegram.messages(FORUM)
    assert first.message_thread_id == second.message_thread_id


async def test_a_deleted_topic_opens_a_new_one(
    sqlite_url: str, slack: FakeSlack, telegram: FakeTelegram
) -> None:
    async with running_bridge(
        sqlite_url, make_config(), adapters(slack, telegram), run_worker=False
    ) as bridge:
        await bridge.post([inbox("32470000007", "one", kind="whatsapp")])
        await bridge.worker.drain()
        (topic,) = telegram.topics(FORUM)
        telegram.delete_topic(FORUM, topic.message_thread_id)
        await bridge.post([inbox("32470000007", "two", kind="whatsapp")])
        await bridge.worker.drain()
    assert len(telegram.topics(FORUM)) == 2
    assert (
        telegram.messages(FORUM)[-1].message_thread_id
        == telegram.topics(FORUM)[1].message_thread_id
    )


async def test_transient_failures_are_retried_until_delivered_and_logged_once(
    sqlite_url: str, slack: FakeSlack, telegram: FakeTelegram, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="bridge.delivery")
    clock = Clock()
    slack.set_down(times=3)
    async with running_bridge(
        sqlite_url, make_config(), adapters(slack, telegram), run_worker=False, now=clock
    ) as bridge:
        await bridge.post([inbox("32470000008", "a"), inbox("32470000008", "b")])
        for _ in range(5):
            await bridge.worker.drain()
            clock.advance(60)
    assert [words(p) for p in slack.posts("C0SUPPORT")] == ["a", "b"]
    statuses = await rows(sqlite_url, select(outbox.c.status, outbox.c.attempts))
    assert [status for status, _ in statuses] == ["done", "done"]
    assert statuses[0][1] >= 1
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "will be retried" in warnings[0].getMessage()
    assert any("support delivers again" in r.getMessage() for r in caplog.records)


async def test_a_rate_limit_is_honoured_with_its_retry_after(
    sqlite_url: str, slack: FakeSlack, telegram: FakeTelegram
) -> None:
    clock = Clock()
    telegram.set_rate_limited(FORUM, retry_after=7, times=1)
    async with running_bridge(
        sqlite_url, make_config(), adapters(slack, telegram), run_worker=False, now=clock
    ) as bridge:
        await bridge.post([inbox("32470000010", "hello", kind="whatsapp")])
        await bridge.worker.drain()
        assert telegram.messages(FORUM) == []
        clock.advance(6)
        await bridge.worker.drain()
        assert telegram.messages(FORUM) == []  # not before Retry-After
        clock.advance(2.5)
        await bridge.worker.drain()
    assert len(telegram.messages(FORUM)) == 1


async def test_a_long_message_cut_short_by_a_rate_limit_posts_each_part_once(
    database_url: str, slack: FakeSlack, telegram: FakeTelegram
) -> None:
    clock = Clock()
    telegram.set_rate_limited(FORUM, retry_after=1, times=1, after=2)  # topic, part 1, then 429
    text = " ".join(f"word{n}" for n in range(2000))  # several Telegram messages
    async with running_bridge(
        database_url, make_config(), adapters(slack, telegram), run_worker=False, now=clock
    ) as bridge:
        await bridge.post([inbox("32470000012", text, kind="whatsapp")])
        await bridge.worker.drain()
        assert len(telegram.messages(FORUM)) == 1
        clock.advance(600)  # past Retry-After and the retry's backoff
        await bridge.worker.drain()
    texts = [message.plain_text for message in telegram.messages(FORUM)]
    count = len(texts)
    assert count >= 3
    for part in range(1, count + 1):
        assert sum(f"({part}/{count})" in text for text in texts) == 1


async def test_a_permanent_error_is_kept_as_a_dead_letter_naming_the_destination(
    sqlite_url: str, slack: FakeSlack, telegram: FakeTelegram
) -> None:
    slack.set_error("C0SALES", "channel_not_found")
    async with running_bridge(
        sqlite_url, make_config(), adapters(slack, telegram), run_worker=False
    ) as bridge:
        await bridge.post([inbox("32470000011", "hi", receiver=LINE_FR)])
        await bridge.worker.drain()
    assert len(slack.posts("C0SUPPORT")) == 1  # the other destination is not held back
    jobs = await rows(
        sqlite_url, select(outbox.c.destination, outbox.c.status, outbox.c.last_error)
    )
    dead = [job for job in jobs if job.status == "dead"]
    assert len(dead) == 1 and dead[0].destination == "sales"
    assert "channel_not_found" in dead[0].last_error and "C0SALES" in dead[0].last_error


async def test_queued_jobs_survive_a_restart_and_arrive_once(
    sqlite_url: str, slack: FakeSlack, telegram: FakeTelegram
) -> None:
    clock = Clock()
    slack.refuse_all()
    body = [inbox(f"3247000002{n % 3}", f"queued {n}") for n in range(9)]
    async with running_bridge(
        sqlite_url, make_config(), adapters(slack, telegram), now=clock
    ) as bridge:
        await bridge.post(body)
        await bridge.worker.drain()  # every lane's head fails and is scheduled for later
    assert slack.posts() == []
    slack.refuse_all(False)
    clock.advance(3600)
    async with running_bridge(
        sqlite_url, make_config(), adapters(slack, telegram), run_worker=False, now=clock
    ) as bridge:
        await bridge.worker.drain()
    texts = [words(p) for p in slack.posts("C0SUPPORT")]
    assert sorted(texts) == sorted(f"queued {n}" for n in range(9))
    for customer in ("32470000020", "32470000021", "32470000022"):
        mine = [
            t
            for p, t in zip(slack.posts("C0SUPPORT"), texts, strict=True)
            if customer in (p.text or "")
        ]
        assert mine == sorted(mine, key=lambda t: int(str(t).split()[-1]))


async def test_long_whatsapp_content_is_split_never_cut(
    sqlite_url: str, slack: FakeSlack, telegram: FakeTelegram
) -> None:
    content = " ".join(f"word{n}" for n in range(2000))  # ~13,000 characters
    async with running_bridge(
        sqlite_url, make_config(), adapters(slack, telegram), run_worker=False
    ) as bridge:
        await bridge.post([inbox("32470000012", content, kind="whatsapp")])
        await bridge.worker.drain()
    messages = telegram.messages(FORUM)
    assert len(messages) >= 4
    assert len({m.message_thread_id for m in messages}) == 1
    shown = " ".join(m.plain_text for m in messages)
    assert all(f"word{n}" in shown for n in range(2000))
