"""`smsbridge serve` as a real process against fake Slack and Telegram servers."""

from __future__ import annotations

import itertools
import json
import time
from collections import defaultdict
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.fakes.slack import FakeSlack
from tests.fakes.telegram import FakeTelegram
from tests.processes import BridgeProcess

pytestmark = pytest.mark.slow

TOKEN = "serve-test-token"
# uvicorn shuts down gracefully on SIGTERM, then re-raises it so supervisors see the signal.
GRACEFUL = (0, -15)
FORUM = -1009999999999
LINE_A, LINE_B = "32460200000", "32460300000"

CONFIG = f"""
destinations:
  support: {{slack: {{channel: C0SUPPORT}}}}
  sales:   {{slack: {{channel: C0SALES}}}}
  nl-team: {{telegram: {{chat_id: {FORUM}, topics: true}}}}
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


@pytest.fixture
def fakes() -> Iterator[tuple[FakeSlack, FakeTelegram]]:
    with FakeSlack() as slack, FakeTelegram() as telegram:
        yield slack, telegram


def bridge_env(
    tmp_path: Path, slack: FakeSlack, telegram: FakeTelegram, database_url: str
) -> dict[str, str]:
    config = tmp_path / "bridge.yaml"
    config.write_text(CONFIG)
    return {
        "BRIDGE_CONFIG": str(config),
        "DATABASE_URL": database_url,
        "SMSTOOLS_WEBHOOK_TOKEN": TOKEN,
        "SLACK_BOT_TOKEN": "xoxb-test",
        "SLACK_API_URL": slack.api_url,
        "TELEGRAM_BOT_TOKEN": FakeTelegram.TOKEN,
        "TELEGRAM_API_URL": telegram.url,
    }


def burst(customers: int = 20, per_customer: int = 10) -> list[dict[str, Any]]:
    """Messages in the order the gateway sent them: customer c's n-th message is `c:n`.

    Customers 0–9 text line A (Slack support), 10–14 line B (Slack sales), 15–19 WhatsApp
    line A (Telegram forum).
    """
    events = []
    for n, c in itertools.product(range(per_customer), range(customers)):
        receiver, kind = (
            (LINE_A, "sms") if c < 10 else (LINE_B, "sms") if c < 15 else (LINE_A, "whatsapp")
        )
        events.append(
            {
                "webhook_id": f"wh_burst_{c}_{n}",
                "webhook_type": "inbox_message",
                "username": "myusername",
                "message": {
                    "id": f"{c}{n:03d}",
                    "date": "2026-11-26 10:00:00",
                    "sender": f"324700000{c:02d}",
                    "receiver": receiver,
                    "content": f"{c}:{n}",
                    "type": kind,
                },
            }
        )
    return events


def send_burst(urls: list[str], events: list[dict[str, Any]]) -> dict[str, int]:
    """Batches of 1–7 events round-robin over `urls`; every 5th batch is sent twice."""
    totals: dict[str, int] = defaultdict(int)
    sizes = itertools.cycle([1, 3, 7, 2, 5])
    targets = itertools.cycle(urls)
    with httpx.Client(timeout=10) as client:
        start, number = 0, 0
        while start < len(events):
            batch = events[start : start + next(sizes)]
            start += len(batch)
            number += 1
            for _ in range(2 if number % 5 == 0 else 1):
                response = client.post(f"{next(targets)}/webhooks/smstools/{TOKEN}", json=batch)
                assert response.status_code == 200, response.text
                for key in ("accepted", "duplicates"):
                    totals[key] += response.json()[key]
    return totals


def check_threads_and_order(slack: FakeSlack, telegram: FakeTelegram) -> None:
    """Exactly one thread per conversation, each conversation's messages in order."""
    by_customer: dict[str, list[tuple[str, str | None, str]]] = defaultdict(list)
    for post in slack.posts():
        customer, n = post.text.rsplit("\n", 1)[-1].split(":") if post.text else ("?", "?")
        by_customer[customer].append((n, post.thread_ts, post.ts))
    for customer, posts in by_customer.items():
        assert [int(n) for n, _, _ in posts] == list(range(10)), customer
        root = posts[0]
        assert root[1] is None and all(thread == root[2] for _, thread, _ in posts[1:])
    topics = {t.message_thread_id: t.name for t in telegram.topics(FORUM)}
    assert len(topics) == 5
    per_topic: dict[int | None, list[str]] = defaultdict(list)
    for message in telegram.messages(FORUM):
        per_topic[message.message_thread_id].append(message.plain_text.rsplit("\n", 1)[-1])
    assert set(per_topic) == set(topics)
    for texts in per_topic.values():
        customer = texts[0].split(":")[0]
        assert texts == [f"{customer}:{n}" for n in range(10)]


def test_a_burst_of_200_events_from_20_customers_becomes_exactly_200_posts(
    tmp_path: Path, fakes: tuple[FakeSlack, FakeTelegram], sqlite_url: str
) -> None:
    slack, telegram = fakes
    env = bridge_env(tmp_path, slack, telegram, sqlite_url)
    bridge = BridgeProcess(["serve"], env, tmp_path / "serve.log").start()
    try:
        started = time.monotonic()
        totals = send_burst([bridge.url], burst())
        slack.wait_for_posts(150, timeout=60)
        telegram.wait_for_messages(50, chat_id=FORUM, timeout=60)
        elapsed = time.monotonic() - started
    finally:
        assert bridge.stop() in GRACEFUL, bridge.output()
    assert totals["accepted"] == 200 and totals["duplicates"] > 0
    assert len(slack.posts("C0SUPPORT")) == 100 and len(slack.posts("C0SALES")) == 50
    assert len(telegram.messages(FORUM)) == 50
    check_threads_and_order(slack, telegram)
    print(f"200 events, {totals['duplicates']} duplicates → 200 posts in {elapsed:.1f}s")


def test_jobs_queued_at_shutdown_arrive_once_after_a_restart(
    tmp_path: Path, fakes: tuple[FakeSlack, FakeTelegram], sqlite_url: str
) -> None:
    slack, telegram = fakes
    slack.refuse_all()
    telegram.refuse_all()
    env = bridge_env(tmp_path, slack, telegram, sqlite_url)
    bridge = BridgeProcess(["serve"], env, tmp_path / "serve.log").start()
    send_burst([bridge.url], burst())
    assert bridge.stop() in GRACEFUL, bridge.output()
    assert slack.posts() == [] and telegram.messages() == []
    slack.refuse_all(False)
    telegram.refuse_all(False)
    # Jobs whose first try failed wait out their backoff (a few seconds) after the restart.
    bridge = BridgeProcess(["serve"], env, tmp_path / "serve.log").start()
    try:
        slack.wait_for_posts(150, timeout=90)
        telegram.wait_for_messages(50, chat_id=FORUM, timeout=90)
    finally:
        assert bridge.stop() in GRACEFUL, bridge.output()
    assert len(slack.posts()) == 150 and len(telegram.messages(FORUM)) == 50
    check_threads_and_order(slack, telegram)


def test_check_config_prints_the_resolved_routes(
    tmp_path: Path, fakes: tuple[FakeSlack, FakeTelegram]
) -> None:
    import subprocess

    from tests.processes import SMSBRIDGE

    slack, telegram = fakes
    env = bridge_env(tmp_path, slack, telegram, "sqlite:///unused.db")
    result = subprocess.run(
        [SMSBRIDGE, "check-config", env["BRIDGE_CONFIG"]],
        env={**env, "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert "receiver +32 460 20 00 00 and type whatsapp → nl-team" in result.stdout
    assert "receiver 3246030* → sales" in result.stdout
    broken = tmp_path / "broken.yaml"
    broken.write_text(CONFIG.replace("to: [sales]", "to: [sails]"))
    result = subprocess.run(
        [SMSBRIDGE, "check-config", str(broken)],
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 1
    assert f"{broken}: routes[2].to[0]: unknown destination 'sails'" in result.stderr
    assert json.dumps(result.stdout)  # nothing else printed to stdout is required
