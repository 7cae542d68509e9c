"""A deploy with no config file: `smsbridge` processes started in an empty directory with only
environment variables (as a PaaS button gives them) migrate, receive and deliver; a destination
whose token is not set yet waits while the others deliver."""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from testkit.fakes.slack import FakeSlack
from testkit.fakes.telegram import FakeTelegram
from testkit.processes import BridgeProcess
from tests.conftest import sample
from tests.support.traffic import TOKEN

pytestmark = pytest.mark.slow

CHANNEL = "C0SUPPORT"
CHAT = -1001234567890
GRACEFUL = (0, -15)


@pytest.fixture
def fresh_dir(tmp_path: Path) -> Path:
    """An empty working directory: no config/bridge.yaml to fall back on."""
    directory = tmp_path / "app"
    directory.mkdir()
    return directory


@pytest.fixture
def slack() -> Iterator[FakeSlack]:
    with FakeSlack() as fake:
        yield fake


@pytest.fixture
def telegram() -> Iterator[FakeTelegram]:
    with FakeTelegram() as fake:
        yield fake


def database(tmp_path: Path) -> tuple[str, Path]:
    path = tmp_path / "bridge.db"
    return f"sqlite:///{path}", path


def start(args: list[str], env: dict[str, str], directory: Path, name: str) -> BridgeProcess:
    log = directory.parent / f"{name}.log"
    return BridgeProcess(args, env, log, cwd=directory, inherit=False).start()


def post_sample(bridge: BridgeProcess) -> None:
    body = sample("inbox_message")
    response = httpx.post(f"{bridge.url}/webhooks/smstools/{TOKEN}", json=body, timeout=10)
    assert response.status_code == 200, response.text
    assert response.json() == {"received": 1}


def wait_for(condition: object, what: str, timeout: float = 20.0) -> None:
    assert callable(condition)
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"not within {timeout}s: {what}")
        time.sleep(0.1)


def jobs(path: Path) -> list[tuple[str, str]]:
    """(destination, status) of every outbox job."""
    with sqlite3.connect(path) as connection:
        rows = connection.execute("SELECT destination, status FROM outbox ORDER BY id")
        return [(str(destination), str(status)) for destination, status in rows]


def test_migrate_needs_only_database_url(fresh_dir: Path, tmp_path: Path) -> None:
    url, path = database(tmp_path)
    migrate = BridgeProcess(
        ["migrate"], {"DATABASE_URL": url}, tmp_path / "migrate.log", cwd=fresh_dir, inherit=False
    )
    assert migrate.start().wait() == 0, migrate.output()
    assert "database schema at version" in migrate.output()
    # Nothing else set yet, or set wrong, never fails a release phase.
    broken = {
        "DATABASE_URL": url,
        "BRIDGE_CONFIG": "config/bridge.yaml",  # a file the fork does not have
        "BRIDGE_CONFIG_YAML": "{destinations: {}}",
        "SLACK_CHANNEL": "#support",
        "BRIDGE_JOB_LEASE": "soon",
    }
    again = BridgeProcess(["migrate"], broken, tmp_path / "again.log", cwd=fresh_dir, inherit=False)
    assert again.start().wait() == 0, again.output()
    assert path.is_file()


@pytest.mark.parametrize("platform", ["slack", "telegram"])
def test_web_and_worker_deliver_with_only_environment_variables(
    fresh_dir: Path, tmp_path: Path, slack: FakeSlack, telegram: FakeTelegram, platform: str
) -> None:
    url, _ = database(tmp_path)
    destination = {
        "slack": {
            "SLACK_CHANNEL": CHANNEL,
            "SLACK_BOT_TOKEN": "xoxb-test",
            "SLACK_API_URL": slack.api_url,
        },
        "telegram": {
            "TELEGRAM_CHAT_ID": str(CHAT),
            "TELEGRAM_BOT_TOKEN": FakeTelegram.TOKEN,
            "TELEGRAM_API_URL": telegram.url,
        },
    }[platform]
    env = {
        "DATABASE_URL": url,
        "SMSTOOLS_WEBHOOK_TOKEN": TOKEN,
        **destination,
        "BRIDGE_WORKER": "0",
    }

    def posted() -> list[str]:
        if platform == "slack":
            return [post.text or "" for post in slack.posts(CHANNEL)]
        return [message.plain_text for message in telegram.messages(CHAT)]

    web = start(["serve"], env, fresh_dir, "web")
    worker = start(["worker"], env, fresh_dir, "worker")
    try:
        post_sample(web)
        wait_for(posted, f"the message posted in {platform}")
    finally:
        assert web.stop() in GRACEFUL, web.output()
        assert worker.stop() in GRACEFUL, worker.output()
    (text,) = posted()
    assert "Order 5531" in text


def test_a_missing_token_keeps_its_jobs_waiting_while_the_other_destination_delivers(
    fresh_dir: Path, tmp_path: Path, slack: FakeSlack, telegram: FakeTelegram
) -> None:
    url, path = database(tmp_path)
    env = {
        "DATABASE_URL": url,
        "SMSTOOLS_WEBHOOK_TOKEN": TOKEN,
        "SLACK_CHANNEL": CHANNEL,
        "SLACK_BOT_TOKEN": "xoxb-test",
        "SLACK_API_URL": slack.api_url,
        "TELEGRAM_CHAT_ID": str(CHAT),
        "TELEGRAM_API_URL": telegram.url,  # TELEGRAM_BOT_TOKEN left blank in the form
    }
    bridge = start(["serve"], env, fresh_dir, "serve")
    try:
        post_sample(bridge)
        wait_for(lambda: slack.posts(CHANNEL), "the message posted in Slack")
        ready = httpx.get(f"{bridge.url}/readyz", timeout=10)
        time.sleep(3)  # rounds of the worker: the waiting job must stay as it is
        waiting = jobs(path)
    finally:
        assert bridge.stop() in GRACEFUL, bridge.output()
    assert ready.status_code == 503
    destinations = ready.json()["checks"]["destinations"]
    assert destinations["ok"] is False and "TELEGRAM_BOT_TOKEN is not set" in destinations["detail"]
    assert ("telegram", "pending") in waiting and ("telegram", "dead") not in waiting
    assert telegram.messages(CHAT) == []

    # Once the token is set, the waiting message goes out.
    bridge = start(["serve"], {**env, "TELEGRAM_BOT_TOKEN": FakeTelegram.TOKEN}, fresh_dir, "next")
    try:
        wait_for(lambda: telegram.messages(CHAT), "the waiting message posted in Telegram")
        assert httpx.get(f"{bridge.url}/readyz", timeout=10).status_code == 200
    finally:
        assert bridge.stop() in GRACEFUL, bridge.output()
    assert len(slack.posts(CHANNEL)) == 1
