"""Bursts of inbox messages, and the checks that they became the right chat threads."""

from __future__ import annotations

import asyncio
import itertools
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

TOKEN = "serve-test-token"
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
    again, to the next URL (another process when there are several)."""
    totals: dict[str, int] = defaultdict(int)
    sizes = itertools.cycle([1, 3, 7, 2, 5])
    targets = itertools.cycle(urls)
    with httpx.Client(timeout=30) as client:
        start, number = 0, 0
        while start < len(events):
            batch = events[start : start + next(sizes)]
            start += len(batch)
            number += 1
            for _ in range(2 if number % resend_every == 0 else 1):
                response = client.post(f"{next(targets)}/webhooks/smstools/{TOKEN}", json=batch)
                assert response.status_code == 200, response.text
                for key in ("accepted", "duplicates"):
                    totals[key] += response.json()[key]
    return totals


def last_line(text: str | None) -> str:
    return (text or "").rsplit("\n", 1)[-1]


def check_threads_and_order(
    slack: FakeSlack,
    telegram: FakeTelegram,
    customers: int,
    per_customer: int,
    *,
    after_a_kill: bool = False,
) -> dict[str, int]:
    """One thread per conversation, each conversation complete and in order; returns how many
    messages arrived more than once (0 unless a process was killed mid-post).

    `after_a_kill`: a first message posted by a killed worker but not recorded is posted again
    and opens the thread the rest follows; the orphan is counted as a duplicate.
    """
    duplicates = 0
    threads: dict[str, list[tuple[int, str]]] = defaultdict(list)
    roots: dict[str, str] = {}
    for post in slack.posts():
        customer, n = last_line(post.text).split(":")
        if post.thread_ts is None:
            if customer in roots:
                assert after_a_kill and n == "0", f"customer {customer} got a second thread"
            roots[customer] = post.ts
        else:
            assert post.thread_ts == roots[customer]
        threads[customer].append((int(n), post.ts))
    topics = {t.message_thread_id for t in telegram.topics(FORUM)}
    topic_of: dict[str, int | None] = {}
    for message in telegram.messages(FORUM):
        customer, n = last_line(message.plain_text).split(":")
        assert topic_of.setdefault(customer, message.message_thread_id) == message.message_thread_id
        threads[customer].append((int(n), str(message.message_id)))
    assert set(topic_of.values()) <= topics
    assert len(threads) == customers
    for customer, messages in threads.items():
        numbers = [n for n, _ in messages]
        deduplicated = [n for i, n in enumerate(numbers) if i == 0 or n != numbers[i - 1]]
        duplicates += len(numbers) - len(deduplicated)
        assert deduplicated == list(range(per_customer)), f"customer {customer}: {numbers}"
    return {"duplicates": duplicates, "telegram_topics": len(topics)}


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
