"""Combined posts across a kill -9 of the bridge process."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from testkit.fakes.slack import FakeSlack
from testkit.fakes.telegram import FakeTelegram
from testkit.processes import BridgeProcess
from tests.process.test_crash import Sender, slack_burst
from tests.support.traffic import check_threads_and_order, env_for, messages_in, wait_until_quiet

PACED_SLACK = """
destinations:
  support: {slack: {channel: C0SUPPORT}, max_rate: 4/s}
default: [support]
"""


@pytest.mark.slow
def test_kill_9_with_combined_slack_posts_in_flight_leaves_no_message_twice(
    tmp_path: Path, sqlite_url: str
) -> None:
    """Combined posts carry every job they show in their metadata: the jobs of the killed
    worker find the posts that landed unrecorded, and post only what none of them shows."""
    with FakeSlack() as slack, FakeTelegram() as telegram:
        slack.set_slow(1.0)  # about four posts in flight at 4/s
        config = tmp_path / "bridge.yaml"
        config.write_text(PACED_SLACK)
        env = env_for(str(config), slack, telegram, sqlite_url)
        events = slack_burst(20, 5)
        bridge = BridgeProcess(["serve"], env, tmp_path / "serve.log").start()
        Sender(bridge.url, events).run()
        slack.wait_for_posts(6, timeout=30)
        assert bridge.kill() == -9
        slack.wait_idle()  # what was in flight lands now, unrecorded
        landed = len(slack.posts())
        slack.set_slow(0)
        bridge = BridgeProcess(["serve"], env, tmp_path / "serve.log").start()
        try:
            deadline = time.monotonic() + 60
            while sum(len(messages_in(p.text)) for p in slack.posts()) < len(events):
                assert time.monotonic() < deadline, bridge.output()
                time.sleep(0.1)
            wait_until_quiet(sqlite_url, slack, telegram)
        finally:
            bridge.stop()
        found = check_threads_and_order(slack, telegram, 20, 5)
        posts = slack.posts()
        lookups = len(slack.calls("conversations.history")) + len(
            slack.calls("conversations.replies")
        )
    payloads = [post.metadata["event_payload"] for post in posts if post.metadata]
    assert landed > 6  # posts were in flight at the kill and landed unrecorded
    assert any("combined" in payload for payload in payloads[6:landed])
    assert found["duplicates"] == 0
    print(
        f"\nkill -9 with {landed - 6} combined Slack posts in flight: {len(events)} messages "
        f"in {len(posts)} posts, 0 shown twice; {lookups} look-ups by the jobs taken over"
    )
