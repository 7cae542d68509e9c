"""Privacy: over a whole run the logs hold no message content, only masked phone numbers, and
no secret shows up in logs, errors or `check-config` output."""

from __future__ import annotations

import asyncio
import io
import json
import logging
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from bridge import logs
from bridge.cli import main
from bridge.http import signature
from bridge.settings import normalise_database_url
from bridge.store.db import Database
from testkit.fakes.slack import FakeSlack
from testkit.fakes.telegram import FakeTelegram
from tests.support.harness import TOKEN, running_bridge
from tests.support.pipeline_fixtures import (
    CONFIG,
    LINE_FR,
    SLACK_TOKEN,
    adapters,
    inbox,
    make_config,
)

SECRET = "whsec-privacy-test-secret-42"
CUSTOMER = "32470123456"
CONTENT = "Mijn IBAN is BE71 0961 2345 6769, pincode 4821"
QUOTED = "Uw pakket 5531 komt morgen"
FULL_NUMBERS = (CUSTOMER, "+32 470 12 34 56", "470 12 34 56", "0470123456", "0470 12 34 56")


@pytest.fixture(params=["text", "json"])
def log_format(request: pytest.FixtureRequest) -> str:
    form: str = request.param
    return form


@pytest.fixture
def all_logs(log_format: str) -> Iterator[io.StringIO]:
    """Every record any logger emits, at DEBUG, as an operator's log file would hold it."""
    root = logging.getLogger()
    captured = io.StringIO()
    handler = logging.StreamHandler(captured)
    handler.setFormatter(logs.formatter(log_format))
    saved_level = root.level
    saved_filters = {h: list(h.filters) for h in root.handlers}
    saved_noisy = {name: logging.getLogger(name).level for name in logs.NOISY}
    root.addHandler(handler)
    try:
        yield captured
    finally:
        root.removeHandler(handler)
        root.setLevel(saved_level)
        for other, filters in saved_filters.items():
            other.filters[:] = filters
        for name, level in saved_noisy.items():
            logging.getLogger(name).setLevel(level)


async def test_a_full_run_logs_no_content_no_full_number_and_no_secret(
    sqlite_url: str,
    tmp_path: Path,
    slack: FakeSlack,
    telegram: FakeTelegram,
    all_logs: io.StringIO,
    log_format: str,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    config_file = tmp_path / "bridge.yaml"
    config_file.write_text(yaml.safe_dump(CONFIG))
    env = {
        "BRIDGE_CONFIG": str(config_file),
        "DATABASE_URL": sqlite_url,
        "LOG_LEVEL": "DEBUG",
        "SLACK_BOT_TOKEN": SLACK_TOKEN,
        "TELEGRAM_BOT_TOKEN": FakeTelegram.TOKEN,
        "SMSTOOLS_WEBHOOK_TOKEN": TOKEN,
        "SMSTOOLS_WEBHOOK_SECRET": SECRET,
        "LOG_FORMAT": log_format,
    }
    for name, value in env.items():
        monkeypatch.setenv(name, value)

    # check-config first: it sets logging up the way every smsbridge command does.
    assert await asyncio.to_thread(main, ["check-config"]) == 0

    slack.set_error("C0SALES", "channel_not_found")  # a permanent failure
    slack.set_down("C0SUPPORT", times=1)  # a transient one
    reply = inbox(CUSTOMER, CONTENT, kind="whatsapp")
    reply["isreply"] = {"orig_message_content": QUOTED, "orig_sender": CUSTOMER}
    events = [
        inbox(CUSTOMER, CONTENT),
        inbox(CUSTOMER, CONTENT, receiver=LINE_FR),
        reply,
        {"webhook_id": "wh_odd", "webhook_type": "inbox_message", "message": {"content": CONTENT}},
    ]
    body = json.dumps(events).encode()
    url = f"/webhooks/smstools/{TOKEN}"
    async with running_bridge(
        sqlite_url, make_config(), adapters(slack, telegram), run_worker=False, env=env
    ) as bridge:
        now = int(time.time())
        headers = {
            "X-Smstools-Timestamp": str(now),
            "X-Smstools-Signature": signature.sign(SECRET.encode(), now, body),
        }
        assert (await bridge.client.post(url, content=body, headers=headers)).status_code == 200
        assert (await bridge.client.post(url, content=body)).status_code == 401
        await bridge.worker.drain()
        bridge.worker.now = lambda: time.time() + 3600  # the transient failure's retry is due
        await bridge.worker.drain()
        # A store that fails: the error is logged, the statement's parameters are not.
        database = Database(normalise_database_url(sqlite_url))
        async with database.transaction() as connection:
            await connection.exec_driver_sql("DROP TABLE webhook_requests")
        await database.close()
        now = int(time.time())
        headers = {
            "X-Smstools-Timestamp": str(now),
            "X-Smstools-Signature": signature.sign(SECRET.encode(), now, body),
        }
        assert (await bridge.client.post(url, content=body, headers=headers)).status_code == 503
    assert await asyncio.to_thread(main, ["dead-letters", "list"]) == 0

    printed = capsys.readouterr()
    everything = "\n".join([all_logs.getvalue(), printed.out, printed.err])
    # The run did happen and was logged (so the checks below are not vacuous).
    assert "delivered inbox message from +32 470 •• •• 56" in all_logs.getvalue()
    assert "channel_not_found" in all_logs.getvalue()
    assert "will be retried" in all_logs.getvalue()
    assert "webhook refused (401)" in all_logs.getvalue()
    assert "could not store a webhook body" in all_logs.getvalue()
    assert "routes (first match wins)" in printed.out
    for content in (CONTENT, "BE71", "4821", QUOTED, "5531"):
        assert content not in everything, content
    for number in FULL_NUMBERS:
        assert number not in everything, number
    for secret in (SLACK_TOKEN, FakeTelegram.TOKEN, TOKEN, SECRET):
        assert secret not in everything, secret
    if log_format == "json":
        records = [json.loads(line) for line in all_logs.getvalue().splitlines()]
        assert all({"time", "level", "logger", "message"} <= set(r) for r in records)
        delivered = [r for r in records if r["message"].startswith("delivered inbox message")]
        assert delivered and all(
            r["outcome"] == "delivered" and r["destination"] and r["job_id"] for r in delivered
        )
        dead = [r for r in records if r.get("outcome") == "dead"]
        assert dead and dead[0]["reason"] == "not_found" and dead[0]["destination"] == "sales"
