"""Two `smsbridge worker` processes with SLACK_APP_TOKEN: exactly one holds the Socket Mode
connection; after kill -9 of that one the other connects within 30 s, and an agent's answer
over the new connection reaches the gateway once."""

from __future__ import annotations

import asyncio
import socket
import time
from pathlib import Path

import pytest

from bridge.http.slack_socket import HOLD
from bridge.settings import normalise_database_url
from bridge.store import holds
from bridge.store.db import Database
from testkit.fakes.slack import FakeSlack
from testkit.fakes.slack_socket import FakeSocketMode
from testkit.fakes.smstools import FakeSmstools
from testkit.fakes.telegram import FakeTelegram
from testkit.processes import BridgeProcess
from tests.support.reply_fixtures import SIGNING_SECRET, slack_event
from tests.support.traffic import LINE_A, env_for, send
from tests.support.waiting import poll

pytestmark = pytest.mark.slow

CONFIG = """
destinations:
  support: {slack: {channel: C0SUPPORT}, max_rate: unlimited, replies: true}
default: [support]
"""
CUSTOMER = "32470000001"
TAKEOVER = 30.0  # seconds the issue allows


async def _holder(database_url: str) -> str | None:
    database = Database(normalise_database_url(database_url))
    try:
        async with database.transaction() as connection:
            return await holds.holder(connection, HOLD, time.time())
    finally:
        await database.close()


def holder(database_url: str) -> str | None:
    return asyncio.run(_holder(database_url))


def test_one_of_two_workers_holds_the_connection_and_the_other_takes_over_after_kill_9(
    tmp_path: Path, postgres_url: str
) -> None:
    with (
        FakeSlack() as slack,
        FakeTelegram() as telegram,
        FakeSmstools() as smstools,
        FakeSocketMode() as socket_mode,
    ):
        slack.socket_mode = socket_mode
        config = tmp_path / "bridge.yaml"
        config.write_text(CONFIG)
        env = {
            **env_for(str(config), slack, telegram, postgres_url),
            "SMSTOOLS_API_URL": smstools.api_url,
            "SMSTOOLS_CLIENT_ID": smstools.client_id,
            "SMSTOOLS_CLIENT_SECRET": smstools.client_secret,
            "SLACK_SIGNING_SECRET": SIGNING_SECRET,  # the web process takes no Socket Mode
        }
        assert BridgeProcess(["migrate"], env, tmp_path / "migrate.log").start().wait() == 0
        web = BridgeProcess(["serve", "--no-worker"], env, tmp_path / "web.log").start()
        socket_env = env | {"SLACK_APP_TOKEN": FakeSlack.APP_TOKEN, "SLACK_SIGNING_SECRET": ""}
        workers = [
            BridgeProcess(["worker"], socket_env, tmp_path / f"worker{n}.log").start()
            for n in (1, 2)
        ]

        def logs() -> str:
            return "\n".join(w.output() for w in workers)

        try:
            poll(lambda: socket_mode.open_connections() == 1, 20, logs)
            greeting = {
                "webhook_id": "wh_takeover_1",
                "webhook_type": "inbox_message",
                "message": {
                    "id": "takeover-1",
                    "date": "2026-11-26 10:00:00",
                    "sender": CUSTOMER,
                    "receiver": LINE_A,
                    "content": "where is my parcel?",
                    "type": "sms",
                },
            }
            send([web.url], [greeting], resend_every=1000)
            (root,) = slack.wait_for_posts(1, channel="C0SUPPORT", timeout=20)
            time.sleep(6)  # past a renewal round: the other worker still only waits
            assert socket_mode.open_connections() == 1 == socket_mode.connections_opened()

            held_by = holder(postgres_url)
            pids = {f"{socket.gethostname()}:{w.pid}": n for n, w in enumerate(workers)}
            assert held_by in pids, (held_by, pids)
            survivor = workers[1 - pids[held_by]]
            assert workers[pids[held_by]].kill() == -9
            took = poll(
                lambda: (
                    socket_mode.connections_opened() == 2 and socket_mode.open_connections() == 1
                ),
                TAKEOVER,
                logs,
            )
            assert holder(postgres_url) == f"{socket.gethostname()}:{survivor.pid}"

            answer = slack_event(
                "It is out for delivery", root.ts, slack.post_as_member("C0SUPPORT")
            )
            envelope_id = socket_mode.send_event(answer)
            poll(lambda: envelope_id in socket_mode.acks(), 10, logs)
            poll(lambda: len(smstools.sent()) == 1, 20, logs)
            time.sleep(1)  # nothing else follows
            assert [m.message for m in smstools.sent()] == ["It is out for delivery"]
            print(f"\nSocket Mode taken over {took:.1f}s after kill -9 of its holder")
        finally:
            for process in (web, *workers):
                process.kill()
