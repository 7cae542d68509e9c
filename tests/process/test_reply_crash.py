"""kill -9 of the worker while agents' answers are being sent: no answer reaches the gateway
twice; each is either sent once or gets a "may not have been sent" note in its thread."""

from __future__ import annotations

import asyncio
import json
import time
from collections import Counter
from pathlib import Path

import httpx
import pytest
from sqlalchemy import func, select

from bridge.settings import normalise_database_url
from bridge.store.db import Database
from bridge.store.schema import outbox, replies
from testkit.fakes.slack import FakeSlack
from testkit.fakes.smstools import FakeSmstools
from testkit.fakes.telegram import FakeTelegram
from testkit.processes import BridgeProcess
from tests.support.reply_fixtures import SIGNING_SECRET, sign, slack_event
from tests.support.traffic import LINE_A, env_for, send
from tests.support.waiting import poll

pytestmark = pytest.mark.slow

CUSTOMERS, ANSWERS = 10, 2  # 20 answers; one send per conversation at a time, so 10 lanes
LEASE = 3.0
MAY_NOT = "may not have been sent"

CONFIG = """
destinations:
  support: {slack: {channel: C0SUPPORT}, max_rate: unlimited, replies: true}
default: [support]
"""


def customer(c: int) -> str:
    return f"32470{c:06d}"


def greeting(c: int) -> dict[str, object]:
    return {
        "webhook_id": f"wh_hello_{c}",
        "webhook_type": "inbox_message",
        "message": {
            "id": f"hello-{c}",
            "date": "2026-11-26 10:00:00",
            "sender": customer(c),
            "receiver": LINE_A,
            "content": f"hello from customer-{c:02d}",
            "type": "sms",
        },
    }


def answer(c: int, n: int) -> str:
    return f"answer {n} to customer-{c:02d}"


async def _states(database_url: str) -> tuple[dict[str, str], int]:
    """Each reply's state by the agent's message ts, and the outbox jobs still pending."""
    database = Database(normalise_database_url(database_url))
    try:
        async with database.transaction() as connection:
            rows = (await connection.execute(select(replies.c.message, replies.c.state))).all()
            pending = select(func.count()).select_from(outbox).where(outbox.c.status == "pending")
            return {str(m): str(s) for m, s in rows}, int(
                (await connection.execute(pending)).scalar_one()
            )
    finally:
        await database.close()


def states(database_url: str) -> tuple[dict[str, str], int]:
    return asyncio.run(_states(database_url))


def test_kill_9_of_the_worker_during_sends_sends_no_answer_twice(
    tmp_path: Path, database_url: str
) -> None:
    with FakeSlack() as slack, FakeTelegram() as telegram, FakeSmstools() as smstools:
        config = tmp_path / "bridge.yaml"
        config.write_text(CONFIG)
        env = {
            **env_for(str(config), slack, telegram, database_url),
            "SLACK_SIGNING_SECRET": SIGNING_SECRET,
            "SMSTOOLS_API_URL": smstools.api_url,
            "SMSTOOLS_CLIENT_ID": smstools.client_id,
            "SMSTOOLS_CLIENT_SECRET": smstools.client_secret,
            "BRIDGE_JOB_LEASE": str(LEASE),
        }
        assert BridgeProcess(["migrate"], env, tmp_path / "migrate.log").start().wait() == 0
        web = BridgeProcess(["serve", "--no-worker"], env, tmp_path / "web.log").start()
        worker = BridgeProcess(["worker"], env, tmp_path / "worker.log").start()
        replacement: BridgeProcess | None = None
        try:
            # Each customer writes first: the bridge opens their thread.
            send([web.url], [greeting(c) for c in range(CUSTOMERS)], resend_every=1000)
            slack.wait_for_posts(CUSTOMERS, channel="C0SUPPORT", timeout=30)
            poll(lambda: states(database_url)[1] == 0, 30, worker.output)
            roots = {
                c: post.ts
                for post in slack.posts("C0SUPPORT")
                for c in range(CUSTOMERS)
                if f"customer-{c:02d}" in (post.text or "")
            }
            assert len(roots) == CUSTOMERS

            # Agents answer in every thread, as signed Slack events; sends are slow.
            smstools.set_slow(0.5)
            typed: dict[str, tuple[int, str]] = {}  # agent's message ts -> (customer, text)
            with httpx.Client(timeout=10) as client:
                for n in range(ANSWERS):
                    for c in range(CUSTOMERS):
                        ts = slack.post_as_member("C0SUPPORT")
                        typed[ts] = (c, answer(c, n))
                        body = json.dumps(slack_event(answer(c, n), roots[c], ts)).encode()
                        response = client.post(
                            f"{web.url}/slack/events",
                            content=body,
                            headers=sign(body, int(time.time())),
                        )
                        assert response.status_code == 200, response.text
            total = CUSTOMERS * ANSWERS

            def mid_way() -> bool:
                found = Counter(states(database_url)[0].values())
                return found["sent"] >= 3 and found["sending"] >= 3

            poll(mid_way, 60, worker.output)
            assert worker.kill() == -9
            smstools.wait_idle()  # sends that were in flight reach the gateway now
            at_kill = Counter(states(database_url)[0].values())
            sent_at_kill = len(smstools.sent())

            smstools.set_slow(0)
            replacement = BridgeProcess(["worker"], env, tmp_path / "worker2.log").start()

            def settled() -> bool:
                by_ts, pending = states(database_url)
                return (
                    len(by_ts) == total
                    and pending == 0
                    and not {"planned", "sending"} & set(by_ts.values())
                )

            poll(settled, 60, replacement.output)
            slack.wait_idle()
            smstools.wait_idle()
            final, _ = states(database_url)
        finally:
            worker.kill()  # killed above already, unless the test failed before
            for process in (web, replacement):
                if process is not None:
                    assert process.stop() in (0, -15), process.output()

        # No (to, message) pair reached the gateway twice.
        pairs = Counter((tuple(m.to), m.message) for m in smstools.sent())
        assert max(pairs.values()) == 1, [p for p, k in pairs.items() if k > 1]
        # Nothing lost: every answer is sent once, or its thread says it may not have been.
        assert set(final) == set(typed)
        assert set(final.values()) <= {"sent", "unknown"}
        notes = Counter(
            post.thread_ts
            for post in slack.posts("C0SUPPORT")
            if post.thread_ts is not None and MAY_NOT in (post.text or "")
        )
        unknown = [ts for ts, state in final.items() if state == "unknown"]
        assert notes == Counter(roots[typed[ts][0]] for ts in unknown)
        for ts, state in final.items():
            c, text = typed[ts]
            reached = pairs[((customer(c),), text)]
            if state == "sent":
                assert reached == 1, text
            else:
                assert reached <= 1, text
        sent_once = sum(1 for s in final.values() if s == "sent")
        assert sent_once + len(unknown) == total
        assert at_kill["sending"] >= 1 and len(unknown) == at_kill["sending"]
        # Some of those in flight did reach the gateway: sending them again would have doubled.
        assert sent_at_kill > at_kill["sent"]
        print(
            f"\n{database_url.split(':')[0]}: kill -9 with {at_kill['sending']} sends in flight "
            f"({at_kill['sent']} sent, {sent_at_kill} at the gateway): of {total} answers "
            f"{sent_once} sent once, {len(unknown)} noted 'may not have been sent' "
            f"({len(smstools.sent())} at the gateway, 0 twice)"
        )
