"""`smsbridge telegram set-webhook | delete-webhook` against the fake Bot API."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from bridge.cli import main
from testkit.fakes.telegram import FakeTelegram

FORUM = -1001234567890
SECRET = "telegram-webhook-secret-for-the-tests"


def configure(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, telegram: FakeTelegram, **extra: str
) -> None:
    path = tmp_path / "bridge.yaml"
    document = {
        "destinations": {
            "nl-team": {"telegram": {"chat_id": FORUM, "topics": True}, "replies": True}
        },
        "default": ["nl-team"],
    }
    path.write_text(yaml.safe_dump(document))
    environ = {
        "BRIDGE_CONFIG": str(path),
        "TELEGRAM_BOT_TOKEN": FakeTelegram.TOKEN,
        "TELEGRAM_API_URL": telegram.url,
        "SMSTOOLS_CLIENT_ID": "client-test",
        "SMSTOOLS_CLIENT_SECRET": "secret-test",
        "TELEGRAM_WEBHOOK_SECRET": SECRET,
        "BRIDGE_PUBLIC_URL": "https://bridge.example",
        **extra,
    }
    for name, value in environ.items():
        monkeypatch.setenv(name, value)


def test_set_webhook_registers_the_url_secret_and_updates_and_prints_the_answer(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    telegram: FakeTelegram,
) -> None:
    configure(tmp_path, monkeypatch, telegram)
    assert main(["telegram", "set-webhook"]) == 0
    assert telegram.webhook is not None
    assert telegram.webhook["url"] == "https://bridge.example/telegram/webhook/123456"
    assert telegram.webhook["secret_token"] == SECRET
    allowed = telegram.webhook["allowed_updates"]  # PTB sends lists JSON-encoded
    assert (json.loads(allowed) if isinstance(allowed, str) else allowed) == ["message"]
    out = capsys.readouterr().out
    assert "nl-team: Telegram answered ok" in out and SECRET not in out

    assert main(["telegram", "delete-webhook"]) == 0
    assert telegram.webhook is None
    assert "nl-team: Telegram answered ok" in capsys.readouterr().out


def test_set_webhook_refuses_in_polling_mode_where_the_poller_would_delete_it(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    telegram: FakeTelegram,
) -> None:
    configure(tmp_path, monkeypatch, telegram, TELEGRAM_UPDATES="polling")
    assert main(["telegram", "set-webhook"]) == 1
    assert "set TELEGRAM_UPDATES=webhook" in capsys.readouterr().err
    assert FakeTelegram.TOKEN not in telegram.webhooks
