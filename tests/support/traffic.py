"""Bursts of inbox messages, and the checks that they became the right chat threads."""

from __future__ import annotations

import asyncio
import itertools
import re
import time
from collections import defaultdict
from typing import Any

import httpx
from sqlalchemy import func, select

from bridge.settings import normalise_database_url
from bridge.store.db import Database
from bridge.store.schema import outbox
from testkit.fakes.slack import FakeSlack
from testkit.fakes.telegram import FakeTelegram

TOKEN = "serve-test-token-0123456789abcdefghij"
FORUM = -1009999999999
LINE_A, LINE_B = "32460200000", "32460300000"

CONFIG = f"""
destinations:
  support: {{slack: {{channel: C0SUPPORT}}, max_rate: 200/s}}
  sales:   {{slack: {{channel: C0SALES}}, max_rate: 200/s}}
  nl-team: {{telegram: {{chat_id: {FORUM}, topics: true}}, max_rate: 200/s}}
routes:
  - match: {{receiver: "+32 460 20 00 00", type: whatsapp}}
    to: [nl-team]
  - match: {{receiver: "+32 460 20 00 00"}}
    to: [support]
  - match: {{receiver: "3246030*"}}
    to: [sales]
lines:
  "+32 460 20 00 00": Support line
"""


def env_for(
    config_path: str, slack: FakeSlack, telegram: FakeTelegram, database_url: str
) -> dict[str, str]:
    return {
        "BRIDGE_CONFIG": config_path,
        "DATABASE_URL": database_url,
        "SMSTOOLS_WEBHOOK_TOKEN": TOKEN,
        "SLACK_BOT_TOKEN": "xoxb-test",
        "SLACK_API_URL": slack.api_url,
        "TELEGRAM_BOT_TOKEN": FakeTelegram.TOKEN,
        "TELEGRAM_API_URL": telegram.url,
    }


def route_of(customer: int) -> tuple[str, str]:
    """Customers ≡ 0, 1 (mod 4) text line A (Slack support), ≡ 2 line B (Slack sales),
    ≡ 3 write on WhatsApp to line A (the Telegram forum)."""
    return {0: (LINE_A, "sms"), 1: (LINE_A, "sms"), 2: (LINE_B, "sms"), 3: (LINE_A, "whatsapp")}[
        customer % 4
    ]


def burst(customers: int, per_customer: int) -> list[dict[str, Any]]:
    """Messages in the order the gateway sent them; customer c's n-th message reads `c:n`."""
    events = []
    for n, c in itertools.product(range(per_customer), range(customers)):
        receiver, kind = route_of(c)
        events.append(
            {
                "webhook_id": f"wh_burst_{c}_{n}",
                "webhook_type": "inbox_message",
                "username": "myusername",
                "message": {
                    "id": f"{c}-{n}",
                    "date": "2026-11-26 10:00:00",
                    "sender": f"32470{c:06d}",
                    "receiver": receiver,
                    "content": f"{c}:{n}",
                    "type": kind,
                },
            }
        )
    return events


def send(urls: list[str], events: list[dict[str, Any]], resend_every: int = 5) -> dict[str, int]:
    """Batches of 1–7 events round-robin over `urls`; every `resend_every`-th batch is sent
    again, to the next URL (another process when there are several). Counts the events each
    answer said it received, and those sent again."""
    totals: dict[str, int] = defaultdict(int)
    sizes = itertools.cycle([1, 3, 7, 2, 5])
    targets = itertools.cycle(urls)
    with httpx.Client(timeout=30) as client:
        start, number = 0, 0
        while start < len(events):
            batch = events[start : start + next(sizes)]
            start += len(batch)
            number += 1
            for attempt in range(2 if number % resend_every == 0 else 1):
                response = client.post(f"{next(targets)}/webhooks/smstools/{TOKEN}", json=batch)
                assert response.status_code == 200, response.text
                totals["received"] += response.json()["received"]
                totals["resent"] += len(batch) if attempt else 0
    return totals


_MESSAGE = re.compile(r"^(\d+):(\d+)$", re.MULTILINE)


def messages_in(text: str | None) -> list[tuple[str, int]]:
    """(customer, n) of every message a post shows, in order: one, or several when the
    destination was behind and combined a conversation's waiting messages."""
    return [(customer, int(n)) for customer, n in _MESSAGE.findall(text or "")]


def shown_count(slack: FakeSlack, telegram: FakeTelegram) -> int:
    """How many customer messages the posts show, each counted once per platform however
    often it was shown (a post repeated after a kill must not end a wait early)."""
    shown = {("slack", *m) for post in slack.posts() for m in messages_in(post.text)}
    shown |= {
        ("telegram", *m)
        for message in telegram.messages(FORUM)
        for m in messages_in(message.plain_text)
    }
    return len(shown)


def wait_until_shown(slack: FakeSlack, telegram: FakeTelegram, total: int, timeout: float) -> float:
    """Block until the posts show `total` messages; how long that took."""
    started = time.monotonic()
    while shown_count(slack, telegram) < total:
        if time.monotonic() - started > timeout:
            have = shown_count(slack, telegram)
            raise TimeoutError(f"expected {total} messages shown, got {have}")
        time.sleep(0.1)
    return time.monotonic() - started


def check_threads_and_order(
    slack: FakeSlack,
    telegram: FakeTelegram,
    customers: int,
    per_customer: int,
    *,
    after_a_kill: bool = False,
) -> dict[str, int]:
    """One thread per conversation, each conversation complete and in order; returns how many
    messages were shown more than once (`duplicates`) and by how many posts (`repeats`), 0
    unless a process was killed mid-post.

    `after_a_kill`: a first post made by a killed worker but not recorded is posted again
    and opens the thread the rest follows; the orphan's messages count as duplicates. A
    message shown again (a post repeated, perhaps with more messages combined) comes after
    its first showing, never before.
    """
    threads: dict[str, list[int]] = defaultdict(list)
    roots: dict[str, str] = {}
    seen: set[tuple[str, int]] = set()
    repeats = 0

    def showing(shown: list[tuple[str, int]]) -> None:
        nonlocal repeats
        repeats += any(message in seen for message in shown)
        seen.update(shown)

    for post in slack.posts():
        shown = messages_in(post.text)
        assert shown, f"a post shows no message: {post.text!r}"
        customer = shown[0][0]
        assert all(c == customer for c, _ in shown), "a post mixes conversations"
        if post.thread_ts is None:
            if customer in roots:
                assert after_a_kill and shown[0][1] == 0, f"customer {customer}: second thread"
            roots[customer] = post.ts
        else:
            assert post.thread_ts == roots[customer]
        threads[customer].extend(n for _, n in shown)
        showing(shown)
    topics = {t.message_thread_id for t in telegram.topics(FORUM)}
    topic_of: dict[str, int | None] = {}
    for message in telegram.messages(FORUM):
        shown = messages_in(message.plain_text)
        assert shown, f"a message shows no customer message: {message.plain_text!r}"
        customer = shown[0][0]
        assert all(c == customer for c, _ in shown), "a message mixes conversations"
        assert topic_of.setdefault(customer, message.message_thread_id) == message.message_thread_id
        threads[customer].extend(n for _, n in shown)
        showing(shown)
    assert set(topic_of.values()) <= topics
    assert len(threads) == customers
    duplicates = 0
    for customer, numbers in threads.items():
        first_showings = list(dict.fromkeys(numbers))
        duplicates += len(numbers) - len(first_showings)
        assert first_showings == list(range(per_customer)), f"customer {customer}: {numbers}"
    return {"duplicates": duplicates, "repeats": repeats, "telegram_topics": len(topics)}


async def _pending_jobs(database_url: str) -> int:
    database = Database(normalise_database_url(database_url))
    try:
        async with database.transaction() as connection:
            query = select(func.count()).select_from(outbox).where(outbox.c.status == "pending")
            return int((await connection.execute(query)).scalar_one())
    finally:
        await database.close()


def wait_until_quiet(
    database_url: str, slack: FakeSlack, telegram: FakeTelegram, timeout: float = 60
) -> None:
    """Block until every outbox job is done or dead and the fakes have answered every
    request: nothing more will be posted unless a webhook comes in."""
    deadline = time.monotonic() + timeout
    while (pending := asyncio.run(_pending_jobs(database_url))) > 0:
        if time.monotonic() > deadline:
            raise TimeoutError(f"{pending} outbox job(s) still pending after {timeout}s")
        time.sleep(0.1)
    slack.wait_idle()
    telegram.wait_idle()
