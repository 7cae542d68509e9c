"""`smsbridge serve` as a real process against fake Slack and Telegram servers."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from testkit.fakes.slack import FakeSlack, SlackMessage
from testkit.fakes.telegram import FakeTelegram, TelegramMessage
from testkit.processes import BridgeProcess
from tests.support.traffic import (
    CONFIG,
    FORUM,
    burst,
    check_threads_and_order,
    env_for,
    messages_in,
    send,
    wait_until_quiet,
    wait_until_shown,
)

pytestmark = pytest.mark.slow

# uvicorn shuts down gracefully on SIGTERM, then re-raises it so supervisors see the signal.
GRACEFUL = (0, -15)


@pytest.fixture
def fakes() -> Iterator[tuple[FakeSlack, FakeTelegram]]:
    with FakeSlack() as slack, FakeTelegram() as telegram:
        yield slack, telegram


def bridge_env(
    tmp_path: Path, slack: FakeSlack, telegram: FakeTelegram, database_url: str
) -> dict[str, str]:
    config = tmp_path / "bridge.yaml"
    config.write_text(CONFIG)
    return env_for(str(config), slack, telegram, database_url)


def shown_in(posts: list[SlackMessage] | list[TelegramMessage]) -> int:
    """How many customer messages the posts show (one, or several combined, each)."""
    return sum(
        len(messages_in(post.text if isinstance(post, SlackMessage) else post.plain_text))
        for post in posts
    )


def test_a_burst_of_200_events_from_20_customers_shows_each_message_exactly_once(
    tmp_path: Path, fakes: tuple[FakeSlack, FakeTelegram], sqlite_url: str
) -> None:
    slack, telegram = fakes
    env = bridge_env(tmp_path, slack, telegram, sqlite_url)
    bridge = BridgeProcess(["serve"], env, tmp_path / "serve.log").start()
    try:
        started = time.monotonic()
        totals = send([bridge.url], burst(20, 10))
        wait_until_shown(slack, telegram, 200, timeout=60)
        elapsed = time.monotonic() - started
        wait_until_quiet(sqlite_url, slack, telegram)
    finally:
        assert bridge.stop() in GRACEFUL, bridge.output()
    assert totals["received"] == 200 + totals["resent"] and totals["resent"] > 0
    assert shown_in(slack.posts("C0SUPPORT")) == 100 and shown_in(slack.posts("C0SALES")) == 50
    assert shown_in(telegram.messages(FORUM)) == 50
    assert check_threads_and_order(slack, telegram, 20, 10)["duplicates"] == 0
    posts = len(slack.posts()) + len(telegram.messages(FORUM))
    print(
        f"200 events, {totals['duplicates']} duplicates → 200 messages in {posts} posts "
        f"in {elapsed:.1f}s"
    )


def test_jobs_queued_at_shutdown_arrive_once_after_a_restart(
    tmp_path: Path, fakes: tuple[FakeSlack, FakeTelegram], sqlite_url: str
) -> None:
    slack, telegram = fakes
    slack.refuse_all()
    telegram.refuse_all()
    env = bridge_env(tmp_path, slack, telegram, sqlite_url)
    bridge = BridgeProcess(["serve"], env, tmp_path / "serve.log").start()
    send([bridge.url], burst(20, 10))
    assert bridge.stop() in GRACEFUL, bridge.output()
    assert slack.posts() == [] and telegram.messages() == []
    slack.refuse_all(False)
    telegram.refuse_all(False)
    # Jobs whose first try failed wait out their backoff (a few seconds) after the restart.
    bridge = BridgeProcess(["serve"], env, tmp_path / "serve.log").start()
    try:
        wait_until_shown(slack, telegram, 200, timeout=90)
        wait_until_quiet(sqlite_url, slack, telegram)
    finally:
        assert bridge.stop() in GRACEFUL, bridge.output()
    assert shown_in(slack.posts()) == 150 and shown_in(telegram.messages(FORUM)) == 50
    assert check_threads_and_order(slack, telegram, 20, 10)["duplicates"] == 0


def test_check_config_prints_the_resolved_routes(
    tmp_path: Path, fakes: tuple[FakeSlack, FakeTelegram]
) -> None:
    import subprocess

    from testkit.processes import SMSBRIDGE

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
