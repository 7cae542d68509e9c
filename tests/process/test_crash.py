"""kill -9 in the middle of a burst: every acknowledged event is posted, duplicates are
bounded by the posts that were in flight."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from bridge.delivery.worker import CONCURRENCY
from testkit.fakes.slack import FakeSlack
from testkit.fakes.telegram import FakeTelegram
from testkit.processes import BridgeProcess
from tests.support.traffic import (
    CONFIG,
    FORUM,
    TOKEN,
    burst,
    check_threads_and_order,
    env_for,
    messages_in,
    wait_until_quiet,
)

pytestmark = pytest.mark.slow

FIRST_POSTS = 16  # posts landed before the kill in the Slack look-up test, and as many in flight


@pytest.fixture
def fakes() -> Iterator[tuple[FakeSlack, FakeTelegram]]:
    with FakeSlack() as slack, FakeTelegram() as telegram:
        yield slack, telegram


class Sender(threading.Thread):
    """Posts batches until the server goes away; remembers what was acknowledged with 2xx."""

    def __init__(self, url: str, events: list[dict[str, Any]]) -> None:
        super().__init__(daemon=True)
        self.url, self.events = url, events
        self.acknowledged: set[str] = set()

    def run(self) -> None:
        with httpx.Client(timeout=10) as client:
            for start in range(0, len(self.events), 5):
                batch = self.events[start : start + 5]
                try:
                    response = client.post(f"{self.url}/webhooks/smstools/{TOKEN}", json=batch)
                except httpx.HTTPError:
                    return
                if response.is_success:
                    self.acknowledged.update(event["webhook_id"] for event in batch)


def posted_ids(slack: FakeSlack, telegram: FakeTelegram) -> list[str]:
    """The webhook id of every message shown, once per showing (a post may show several)."""
    texts = [post.text or "" for post in slack.posts()]
    texts += [message.plain_text for message in telegram.messages(FORUM)]
    return [f"wh_burst_{customer}_{n}" for text in texts for customer, n in messages_in(text)]


def test_kill_9_mid_burst_loses_no_acknowledged_event(
    tmp_path: Path, fakes: tuple[FakeSlack, FakeTelegram], sqlite_url: str
) -> None:
    slack, telegram = fakes
    slack.set_slow(0.2)  # keep posts in flight
    telegram.set_slow(0.2)
    config = tmp_path / "bridge.yaml"
    config.write_text(CONFIG)
    env = env_for(str(config), slack, telegram, sqlite_url)
    events = burst(50, 20)  # 1,000 events

    bridge = BridgeProcess(["serve"], env, tmp_path / "serve.log").start()
    sender = Sender(bridge.url, events)
    sender.start()
    deadline = time.monotonic() + 60
    while len(sender.acknowledged) < 600 or len(posted_ids(slack, telegram)) < 30:
        assert time.monotonic() < deadline, bridge.output()
        time.sleep(0.02)
    assert bridge.kill() == -9
    sender.join(10)
    acknowledged = set(sender.acknowledged)
    slack.wait_idle()  # posts that were in flight at the kill land (or not) now
    telegram.wait_idle()
    before_restart = len(posted_ids(slack, telegram))

    slack.set_slow(0)
    telegram.set_slow(0)
    bridge = BridgeProcess(["serve"], env, tmp_path / "serve.log").start()
    try:
        # The gateway resends what was never acknowledged; duplicates are recognised.
        rest = Sender(bridge.url, [e for e in events if e["webhook_id"] not in acknowledged])
        rest.run()
        deadline = time.monotonic() + 120
        while len(set(posted_ids(slack, telegram))) < len(events):
            assert time.monotonic() < deadline, bridge.output()
            time.sleep(0.1)
        wait_until_quiet(sqlite_url, slack, telegram)  # duplicates, if any, have landed
    finally:
        bridge.stop()
    posted = posted_ids(slack, telegram)
    assert acknowledged <= set(posted)
    duplicates = len(posted) - len(set(posted))
    found = check_threads_and_order(slack, telegram, 50, 20, after_a_kill=True)
    assert found["duplicates"] == duplicates
    print(
        f"\nkill -9 after {len(acknowledged)} acknowledged events and {before_restart} posts: "
        f"all {len(events)} posted after the restart, {duplicates} message(s) shown twice by "
        f"{found['repeats']} repeated post(s) (at most {CONCURRENCY} in flight)"
    )
    # A repeated post was in flight at the kill; a combined one repeats each of its messages.
    assert found["repeats"] <= CONCURRENCY


SLACK_ONLY = """
destinations:
  support: {slack: {channel: C0SUPPORT}, max_rate: unlimited}
default: [support]
"""


def slack_burst(customers: int, per_customer: int) -> list[dict[str, Any]]:
    """Customer c's n-th message reads `c:n`; everyone writes to the one Slack channel."""
    return [
        {
            "webhook_id": f"wh_slack_{c}_{n}",
            "webhook_type": "inbox_message",
            "username": "myusername",
            "message": {
                "id": f"slack-{c}-{n}",
                "date": "2026-11-26 10:00:00",
                "sender": f"32470{c:06d}",
                "receiver": "32460200000",
                "content": f"{c}:{n}",
                "type": "sms",
            },
        }
        for n in range(per_customer)
        for c in range(customers)
    ]


def test_kill_9_with_16_slack_posts_in_flight_leaves_no_duplicate_post(
    tmp_path: Path, sqlite_url: str
) -> None:
    """Every Slack post carries its job in its metadata: the jobs of the killed worker look
    for their own posts before posting again, so what landed is recorded, not repeated."""
    with FakeSlack() as slack, FakeTelegram() as telegram:
        slack.set_slow(0.5)
        config = tmp_path / "bridge.yaml"
        config.write_text(SLACK_ONLY)
        env = env_for(str(config), slack, telegram, sqlite_url)
        events = slack_burst(32, 4)
        bridge = BridgeProcess(["serve"], env, tmp_path / "serve.log").start()
        Sender(bridge.url, events).run()
        slack.wait_for_posts(FIRST_POSTS, timeout=30)  # the first 16 landed
        slack.wait_busy(FIRST_POSTS, timeout=30)  # and the next 16 are in flight
        assert bridge.kill() == -9
        slack.wait_idle()  # what was in flight lands now, unrecorded
        landed = len(slack.posts())
        slack.set_slow(0)
        bridge = BridgeProcess(["serve"], env, tmp_path / "serve.log").start()
        try:
            slack.wait_for_posts(len(events), timeout=60)
            wait_until_quiet(sqlite_url, slack, telegram)
        finally:
            bridge.stop()
        found = check_threads_and_order(slack, telegram, 32, 4)
        lookups = len(slack.calls("conversations.history")) + len(
            slack.calls("conversations.replies")
        )
    assert landed > FIRST_POSTS  # posts were in flight at the kill and landed unrecorded
    assert found["duplicates"] == 0
    assert len(slack.posts()) == len(events)
    print(
        f"\nkill -9 with {landed - FIRST_POSTS} Slack posts in flight: {len(events)} posts, "
        f"0 duplicates; {lookups} look-ups by the jobs taken over"
    )
