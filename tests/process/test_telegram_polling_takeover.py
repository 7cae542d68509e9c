"""Two bridge processes on one database with TELEGRAM_UPDATES=polling (a web process and a
worker): exactly one polls the bot, an agent's answer reaches the fake Smstools once, and when
the poller is killed the other process takes over within 30 s."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest

from bridge.http.telegram_polling import hold_name
from bridge.settings import normalise_database_url
from bridge.store import holds
from bridge.store.db import Database
from testkit.fakes.slack import FakeSlack
from testkit.fakes.smstools import FakeSmstools
from testkit.fakes.telegram import FakeTelegram
from testkit.processes import BridgeProcess
from tests.support.reply_fixtures import FORUM, topic_message
from tests.support.traffic import LINE_A, env_for, send
from tests.support.waiting import poll

pytestmark = pytest.mark.slow

CUSTOMER = "32470123456"
BOT = FakeTelegram.TOKEN.split(":")[0]
TAKEOVER = 30.0  # seconds the issue allows between a poller's death and the next one's start
CONFIG = f"""
destinations:
  team: {{telegram: {{chat_id: {FORUM}, topics: true}}, max_rate: unlimited, replies: true}}
default: [team]
"""


async def _holder(database_url: str) -> str | None:
    database = Database(normalise_database_url(database_url))
    try:
        async with database.transaction() as connection:
            return await holds.holder(connection, hold_name(BOT), time.time())
    finally:
        await database.close()


def holder(database_url: str) -> str | None:
    """Who polls the bot now: `<host>:<pid>:<start>`, or None."""
    return asyncio.run(_holder(database_url))


def test_one_process_polls_and_another_takes_over_when_it_is_killed(
    tmp_path: Path, database_url: str
) -> None:
    with FakeSlack() as slack, FakeTelegram() as telegram, FakeSmstools() as smstools:
        config = tmp_path / "bridge.yaml"
        config.write_text(CONFIG)
        env = {
            **env_for(str(config), slack, telegram, database_url),
            "SMSTOOLS_API_URL": smstools.api_url,
            "SMSTOOLS_CLIENT_ID": smstools.client_id,
            "SMSTOOLS_CLIENT_SECRET": smstools.client_secret,
            "TELEGRAM_UPDATES": "polling",
        }
        assert BridgeProcess(["migrate"], env, tmp_path / "migrate.log").start().wait() == 0
        web = BridgeProcess(["serve"], env, tmp_path / "web.log").start()
        worker = BridgeProcess(["worker"], env, tmp_path / "worker.log").start()
        processes = [web, worker]

        def logs() -> str:
            return "\n".join(f"--- {p.args[0]}\n{p.output()}" for p in processes)

        try:
            greeting = {
                "webhook_id": "wh_polling_hello",
                "webhook_type": "inbox_message",
                "message": {
                    "id": "hello-1",
                    "date": "2026-11-26 10:00:00",
                    "sender": CUSTOMER,
                    "receiver": LINE_A,
                    "content": "hello",
                    "type": "sms",
                },
            }
            send([web.url], [greeting], resend_every=1000)
            telegram.wait_for_messages(1, chat_id=FORUM, timeout=30)
            topic = telegram.topics(FORUM)[0].message_thread_id

            poll(lambda: holder(database_url) is not None, 30, logs)
            first = holder(database_url)
            assert first is not None
            polling = next(p for p in processes if f":{p.pid}:" in first)
            other = next(p for p in processes if p is not polling)

            telegram.send_update(FakeTelegram.TOKEN, topic_message(telegram, topic, "first answer"))
            poll(lambda: len(smstools.sent()) == 1, 30, logs)
            # Both processes run: the other one waits, and nobody meets a 409.
            poll(lambda: "another process polls" in other.output(), 30, logs)
            time.sleep(1)
            assert holder(database_url) == first
            assert all(c.status == 200 for c in telegram.calls("getUpdates")), logs()
            assert "this process polls" in polling.output()
            assert "this process polls" not in other.output()

            assert polling.kill() == -9
            killed_at = time.monotonic()
            telegram.send_update(
                FakeTelegram.TOKEN, topic_message(telegram, topic, "second answer")
            )
            poll(lambda: len(smstools.sent()) == 2, TAKEOVER + 10, logs)
            taken_over_in = time.monotonic() - killed_at
            now_polling = holder(database_url)
            assert now_polling is not None and f":{other.pid}:" in now_polling
            assert taken_over_in < TAKEOVER, logs()
            time.sleep(1)
        finally:
            for process in processes:
                process.stop()
        assert [s.message for s in smstools.sent()] == ["first answer", "second answer"]
        assert all(s.to == [CUSTOMER] for s in smstools.sent())
