"""A destination that fails for good is told to on-call once, not once per message."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from typing import Any

import pytest
from sqlalchemy import select

from bridge.errors import Permanent, Reason
from bridge.intake import notices
from bridge.settings import normalise_database_url
from bridge.store.db import Database
from bridge.store.migrations import migrate
from bridge.store.schema import outbox
from testkit.fakes.slack import FakeSlack
from testkit.fakes.telegram import FakeTelegram
from tests.support.alert_fixtures import adapters, make_config
from tests.support.harness import Clock, running_bridge

_counter = 0


def inbox(content: str) -> dict[str, Any]:
    global _counter
    _counter += 1
    return {
        "webhook_id": f"wh_notice_{_counter}",
        "webhook_type": "inbox_message",
        "message": {
            "id": str(_counter),
            "sender": f"3247000{_counter:04d}",
            "receiver": "32460200000",
            "content": content,
            "type": "sms",
        },
    }


async def test_a_destination_failing_for_good_is_one_notice_to_oncall(
    database_url: str, slack: FakeSlack, telegram: FakeTelegram
) -> None:
    slack.set_error("C0SUPPORT", "channel_not_found")
    clock = Clock()
    for restart in range(2):  # a restarted worker does not tell again within repeat_interval
        async with running_bridge(
            database_url, make_config(), adapters(slack, telegram), run_worker=False, now=clock
        ) as bridge:
            await bridge.post([inbox(f"customer text {restart}-{n}") for n in range(5)])
            await bridge.worker.drain()
            await bridge.worker.drain()
        clock.advance(60)
    (notice,) = slack.posts("C0ONCALL")
    assert notice.text is not None
    assert "Posting to support fails: not_found" in notice.text
    assert "channel_not_found" in notice.text and "C0SUPPORT" in notice.text
    assert "smsbridge dead-letters retry --all" in notice.text
    assert "<!subteam^S0ONCALL>" in notice.text  # the alerts mention pages on-call
    assert "customer text" not in notice.text
    assert slack.posts("C0SUPPORT") == []


async def test_without_an_alerts_section_failures_are_only_logged(
    sqlite_url: str, slack: FakeSlack, telegram: FakeTelegram, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="bridge")
    slack.set_error("C0SUPPORT", "channel_not_found")
    config = dataclasses.replace(make_config(), alerts=None)
    async with running_bridge(
        sqlite_url, config, adapters(slack, telegram), run_worker=False
    ) as bridge:
        await bridge.post([inbox("hello")])
        await bridge.worker.drain()
        async with bridge.worker.database.transaction() as connection:
            notice_jobs = (
                await connection.execute(select(outbox.c.id).where(outbox.c.kind == "notice"))
            ).all()
    errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(errors) == 1
    assert "delivery to support failed for good" in errors[0]
    assert "not_found" in errors[0] and "channel_not_found" in errors[0]
    assert "hello" not in caplog.text
    assert notice_jobs == []
    assert slack.posts() == [] and telegram.messages() == []


async def test_two_processes_failing_at_once_plan_one_notice(database_url: str) -> None:
    url = normalise_database_url(database_url)
    first, second = Database(url), Database(url)
    await migrate(first)
    error = Permanent(Reason.NOT_FOUND, "slack destination 'support': channel_not_found")
    try:
        for db in (first, second):  # both processes connected, so the two really overlap
            async with db.transaction() as connection:
                await connection.execute(select(1))
        planned = await asyncio.gather(
            *(
                notices.destination_failed(db, make_config(), "support", error, 1_800_000_000.0)
                for db in (first, second)
            )
        )
        async with first.transaction() as connection:
            rows = (
                await connection.execute(select(outbox.c.id).where(outbox.c.kind == "notice"))
            ).all()
    finally:
        await first.close()
        await second.close()
    assert sorted(planned) == [0, 1] and len(rows) == 1
