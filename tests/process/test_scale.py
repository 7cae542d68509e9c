"""Scale-out on PostgreSQL: several web and worker processes, one truth, no double posts."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import select

from bridge.settings import normalise_database_url
from bridge.store.db import Database
from bridge.store.schema import alert_groups, alert_notices
from testkit.fakes.slack import FakeSlack
from testkit.fakes.telegram import FakeTelegram
from testkit.processes import BridgeProcess
from tests.support.alert_fixtures import report
from tests.support.traffic import (
    CONFIG,
    FORUM,
    burst,
    check_threads_and_order,
    env_for,
    send,
    shown_count,
    wait_until_quiet,
    wait_until_shown,
)

pytestmark = [pytest.mark.slow, pytest.mark.postgres]

GRACEFUL = (0, -15)


@pytest.fixture
def fakes() -> Iterator[tuple[FakeSlack, FakeTelegram]]:
    with FakeSlack() as slack, FakeTelegram() as telegram:
        yield slack, telegram


def cluster_env(
    tmp_path: Path, fakes: tuple[FakeSlack, FakeTelegram], postgres_url: str, **extra: str
) -> dict[str, str]:
    config = tmp_path / "bridge.yaml"
    config.write_text(CONFIG)
    return {**env_for(str(config), *fakes, postgres_url), **extra}


def test_three_web_and_two_worker_processes_post_2000_events_exactly_once_in_order(
    tmp_path: Path, fakes: tuple[FakeSlack, FakeTelegram], postgres_url: str
) -> None:
    slack, telegram = fakes
    env = cluster_env(tmp_path, fakes, postgres_url)
    assert BridgeProcess(["migrate"], env, tmp_path / "migrate.log").start().wait() == 0
    webs = [
        BridgeProcess(["serve", "--no-worker"], env, tmp_path / f"web{i}.log").start()
        for i in range(3)
    ]
    workers = [
        BridgeProcess(["worker"], env, tmp_path / f"worker{i}.log").start() for i in range(2)
    ]
    try:
        started = time.monotonic()
        totals = send([web.url for web in webs], burst(50, 40), resend_every=10)
        sent = time.monotonic() - started
        wait_until_shown(slack, telegram, 2000, timeout=240)
        elapsed = time.monotonic() - started
        wait_until_quiet(postgres_url, slack, telegram)  # anything extra would have landed
    finally:
        for process in webs + workers:
            assert process.stop() in GRACEFUL, process.output()
    assert totals["received"] == 2000 + totals["resent"] and totals["resent"] > 150
    assert shown_count(slack, telegram) == 2000
    found = check_threads_and_order(slack, telegram, 50, 40)
    assert found == {"duplicates": 0, "repeats": 0, "telegram_topics": 12}
    print(
        f"\n2000 events (+{totals['duplicates']} resent to another web process) over 3 web "
        f"processes in {sent:.1f}s; 2000 messages in {len(slack.posts())} Slack posts and "
        f"{len(telegram.messages(FORUM))} Telegram messages by 2 workers after {elapsed:.1f}s"
    )


def test_a_killed_workers_jobs_are_taken_over_after_its_lease(
    tmp_path: Path, fakes: tuple[FakeSlack, FakeTelegram], postgres_url: str
) -> None:
    slack, telegram = fakes
    slack.set_slow(0.5)  # posts stay in flight long enough to kill a worker mid-post
    lease = 5.0
    env = cluster_env(tmp_path, fakes, postgres_url, BRIDGE_JOB_LEASE=str(lease))
    web = BridgeProcess(["serve", "--no-worker"], env, tmp_path / "web.log").start()
    victim = BridgeProcess(["worker"], env, tmp_path / "victim.log").start()
    survivor = BridgeProcess(["worker"], env, tmp_path / "survivor.log").start()
    try:
        send([web.url], burst(40, 5), resend_every=1000)
        slack.wait_for_posts(20, timeout=60)
        assert victim.kill() == -9
        killed_at = time.monotonic()
        slack.set_slow(0)
        wait_until_shown(slack, telegram, 200, timeout=120)
        recovered = time.monotonic() - killed_at
    finally:
        for process in (web, survivor):
            assert process.stop() in GRACEFUL, process.output()
    found = check_threads_and_order(slack, telegram, 40, 5, after_a_kill=True)
    # Posts the victim had in flight may have landed without being recorded: at most one per
    # job it held (a worker holds at most 16), never more; a combined one repeats each of its
    # messages.
    assert found["repeats"] <= 16
    assert recovered < lease + 30
    print(
        f"\nworker killed with SIGKILL mid-post: the other finished all 200 messages "
        f"{recovered:.1f}s later (lease {lease:.0f}s), {found['repeats']} repeated post(s) "
        f"showing {found['duplicates']} message(s) again"
    )


ALERT_CONFIG = """
destinations:
  support: {slack: {channel: C0SUPPORT}, max_rate: 200/s}
  oncall:  {slack: {channel: C0ONCALL}, max_rate: 200/s}
default: [support]
alerts:
  to: [oncall]
  group_wait: 2s
"""


async def _alerts(database_url: str) -> list[tuple[int, float | None, float | None]]:
    """(failures in the group, when its alert was posted, when it is next due) for each alert
    at each destination."""
    database = Database(normalise_database_url(database_url))
    try:
        async with database.transaction() as connection:
            query = select(
                alert_groups.c.count, alert_notices.c.posted_at, alert_notices.c.pending_at
            ).join(alert_notices, alert_notices.c.group_id == alert_groups.c.id)
            return [(row[0], row[1], row[2]) for row in await connection.execute(query)]
    finally:
        await database.close()


def wait_until_alerted(database_url: str, failures: int, timeout: float) -> None:
    """Block until the groups hold `failures`, every alert is posted and none is due within
    `timeout`: nothing more is posted until then."""
    deadline = time.monotonic() + timeout
    while not (
        (alerts := asyncio.run(_alerts(database_url)))
        and sum(count for count, _, _ in alerts) >= failures
        and all(posted is not None for _, posted, _ in alerts)
        and all(due is None or due > time.time() + timeout for _, _, due in alerts)
    ):
        if time.monotonic() > deadline:
            raise TimeoutError(f"alerts (failures, posted, due) still {alerts} after {timeout}s")
        time.sleep(0.1)


def test_failures_received_by_different_processes_make_one_alert(
    tmp_path: Path, fakes: tuple[FakeSlack, FakeTelegram], postgres_url: str
) -> None:
    slack, telegram = fakes
    config = tmp_path / "alerts.yaml"
    config.write_text(ALERT_CONFIG)
    env = env_for(str(config), slack, telegram, postgres_url)
    assert BridgeProcess(["migrate"], env, tmp_path / "migrate.log").start().wait() == 0
    webs = [
        BridgeProcess(["serve", "--no-worker"], env, tmp_path / f"web{i}.log").start()
        for i in range(3)
    ]
    workers = [
        BridgeProcess(["worker"], env, tmp_path / f"worker{i}.log").start() for i in range(2)
    ]
    failures = [
        report(5, 2000, receiver=f"324709{n:05d}", sender="Clinic", webhook_id=f"wh_fail_{n}")
        for n in range(200)
    ]
    try:
        totals = send([web.url for web in webs], failures, resend_every=10)
        slack.wait_for_posts(1, channel="C0ONCALL", timeout=30)
        # Once every failure is in a group and each alert is posted with its next update
        # not due for a while, a second alert could only have come from a second group.
        wait_until_alerted(postgres_url, 200, timeout=30)
        slack.wait_idle()
    finally:
        for process in webs + workers:
            assert process.stop() in GRACEFUL, process.output()
    assert totals["received"] == 200 + totals["resent"]
    (alert,) = slack.posts("C0ONCALL")
    shown = [alert.text or ""] + [edit.text or "" for edit in slack.edits("C0ONCALL")]
    assert "INSUFFICIENT_FUNDS" in shown[-1] and "200" in shown[-1]
    print(f"\n200 failures over 3 web processes → 1 alert, {len(shown) - 1} in-place update(s)")
