"""The command line: clear one-line errors instead of tracebacks."""

from __future__ import annotations

import asyncio
import io
import logging

import pytest

from bridge import logs
from bridge.chat.console import ConsoleAdapter
from bridge.cli import main
from bridge.config import load
from tests.support.harness import running_bridge


@pytest.mark.parametrize("command", ["migrate", "worker", "serve"])
def test_an_unreachable_database_is_one_line_without_the_password(
    command: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("DATABASE_URL", "postgres://bridge:s3cret-pw@127.0.0.1:1/bridge")
    monkeypatch.delenv("BRIDGE_CONFIG", raising=False)
    assert main([command]) == 1
    error = capsys.readouterr().err
    assert "cannot use the database postgresql+asyncpg://bridge:***@127.0.0.1:1/bridge" in error
    assert "s3cret-pw" not in error and "Traceback" not in error


def test_migrate_reports_the_schema_version(
    sqlite_url: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("DATABASE_URL", sqlite_url)
    assert main(["migrate"]) == 0
    assert "database schema at version" in capsys.readouterr().out
    assert main(["migrate"]) == 0
    assert "(was" not in capsys.readouterr().out


def test_a_short_webhook_token_is_refused_saying_how_to_make_one(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("SMSTOOLS_WEBHOOK_TOKEN", "dev-token-1234")
    for command in ("serve", "worker", "webhook-url"):
        assert main([command]) == 1
        error = capsys.readouterr().err
        assert "SMSTOOLS_WEBHOOK_TOKEN: 14 characters" in error and "at least 32" in error
        assert "secrets.token_urlsafe(32)" in error
        assert "dev-token-1234" not in error and "Traceback" not in error


async def test_the_generated_url_is_printed_once_and_shown_on_demand(
    sqlite_url: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    env = {"SMSTOOLS_WEBHOOK_TOKEN": "", "BRIDGE_PUBLIC_URL": "https://bridge.example.com"}
    adapters = {"console": ConsoleAdapter("console", io.StringIO())}
    announced = []
    for _ in range(2):  # the first start makes the token, the restart keeps it
        async with running_bridge(
            sqlite_url, load(None, {}), adapters, run_worker=False, env=env
        ) as bridge:
            announced.append(bridge.announced)
    (line,), after_restart = announced
    assert after_restart == []
    url = line.removeprefix("Smstools webhook URL: ")
    assert url.startswith("https://bridge.example.com/webhooks/smstools/")
    for name, value in {**env, "DATABASE_URL": sqlite_url}.items():
        monkeypatch.setenv(name, value)
    assert await asyncio.to_thread(main, ["webhook-url"]) == 0
    assert capsys.readouterr().out == url + "\n"


async def test_the_generated_token_is_hidden_in_logs(
    sqlite_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    privacy = logs.PrivacyFilter()
    caplog.handler.addFilter(privacy)
    try:
        async with running_bridge(
            sqlite_url,
            load(None, {}),
            {"console": ConsoleAdapter("console", io.StringIO())},
            run_worker=False,
            env={"SMSTOOLS_WEBHOOK_TOKEN": ""},
        ) as bridge:
            (line,) = bridge.announced
            token = line.rsplit("/", 1)[1]
            logging.getLogger("bridge.test").warning("request to /webhooks/smstools/%s", token)
    finally:
        caplog.handler.removeFilter(privacy)
    assert token in privacy.secrets
    assert "request to /webhooks/smstools/•••" in caplog.text and token not in caplog.text
