"""`GET /readyz` counts the writes: a full disk answers every read, so a database that answers
is not enough. The latest write of the webhooks and of the worker must have gone through; the
answer says when each last succeeded and failed, and why. And `/metrics` answers 200 with the
process's own metrics and `smsbridge_database_up 0` when the database does not answer."""

from __future__ import annotations

import asyncio
import io
import logging
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families
from starlette.applications import Starlette
from starlette.routing import Route

from bridge.chat.console import ConsoleAdapter
from bridge.config import load
from bridge.metrics import Metrics, endpoint
from bridge.settings import normalise_database_url
from bridge.store.db import Database
from bridge.store.migrations import migrate
from tests.support.harness import RunningBridge, running_bridge, wait_until
from tests.support.pipeline_fixtures import inbox

CONFIG = load(None, {})


def console() -> dict[str, ConsoleAdapter]:
    return {"console": ConsoleAdapter("console", io.StringIO())}


async def readiness(bridge: RunningBridge) -> tuple[int, dict[str, Any]]:
    response = await bridge.client.get("/readyz")
    checks: dict[str, Any] = response.json()["checks"]
    return response.status_code, checks


async def fill_the_disk(database: Database, pages: int | None) -> None:
    """Let the bridge's SQLite connection (the pool's only one) grow the file to no more
    than `pages` pages: past them, every write fails with "database or disk is full", as on
    a full disk. None: no limit."""
    async with database.autocommit() as connection:
        if pages is None:
            await connection.exec_driver_sql("PRAGMA max_page_count=1073741823")
            return
        await connection.exec_driver_sql(f"PRAGMA max_page_count={pages}")


async def page_count(database: Database) -> int:
    async with database.autocommit() as connection:
        return int((await connection.exec_driver_sql("PRAGMA page_count")).scalar_one())


async def test_not_ready_while_webhooks_cannot_be_written_and_ready_again_after(
    sqlite_url: str,
) -> None:
    async with running_bridge(sqlite_url, CONFIG, console(), run_worker=False) as bridge:
        assert (await bridge.post([inbox("+32470000001", "before")])).status_code == 200
        status, checks = await readiness(bridge)
        assert status == 200 and checks["writes"]["ok"] is True
        assert checks["writes"]["webhooks"]["last_ok_at"] is not None
        assert checks["writes"]["webhooks"]["last_failed_at"] is None

        database = bridge.worker.database
        await fill_the_disk(database, await page_count(database))
        answers = []
        for number in range(200):  # until the pages the file has are used up
            answer = await bridge.post([inbox("+32470000002", f"full {number} " + "x" * 500)])
            answers.append(answer.status_code)
            if answer.status_code == 503:
                break
        assert answers[-1] == 503, answers
        status, checks = await readiness(bridge)
        assert checks["database"]["ok"] is True  # it still answers every read
        writes = checks["writes"]
        assert status == 503 and writes["ok"] is False
        assert "webhooks: cannot store webhooks" in writes["detail"]
        assert "database or disk is full" in writes["detail"]
        assert writes["webhooks"]["why"].startswith("cannot store webhooks (OperationalError")
        assert writes["webhooks"]["last_failed_at"].endswith("Z")

        await fill_the_disk(database, None)
        assert (await bridge.post([inbox("+32470000003", "after")])).status_code == 200
        status, checks = await readiness(bridge)
    assert status == 200 and checks["writes"]["ok"] is True
    assert checks["writes"]["webhooks"]["why"] is not None  # the last failure is kept


async def test_a_worker_that_cannot_write_says_why_at_once_retries_and_readyz_says_it(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "bridge.db"
    await migrate_and_close(Database(normalise_database_url(f"sqlite:///{path}")))
    read_only = f"sqlite:///file:{path}?mode=ro&uri=true"
    env = {"TELEGRAM_WEBHOOK_SECRET": "t" * 40}  # else generated and written at start-up
    caplog.set_level(logging.ERROR, "bridge")
    async with running_bridge(read_only, CONFIG, console(), env=env) as bridge:

        def said() -> list[str]:
            return [r.getMessage() for r in caplog.records if r.name.startswith("bridge")]

        await wait_until(lambda: len(said()) >= 2, "the first write fails, then its retry")
        status, checks = await readiness(bridge)
    first, retry = said()[:2]
    assert first == (
        "cannot start delivering (OperationalError: attempt to write a readonly database); "
        "trying again in 1s"
    )
    assert retry.endswith("trying again in 2s")
    assert status == 503
    assert checks["worker"] == {
        "ok": False,
        "detail": "the delivery loop has not started yet: cannot start delivering "
        "(OperationalError: attempt to write a readonly database)",
    }
    assert checks["writes"]["ok"] is False
    assert "readonly database" in checks["writes"]["worker"]["why"]


async def migrate_and_close(database: Database) -> None:
    try:
        await migrate(database)
    finally:
        await database.close()


async def test_metrics_answer_200_with_database_up_0_when_the_database_is_down() -> None:
    metrics = Metrics()
    down = Database("postgresql+asyncpg://bridge@127.0.0.1:1/bridge", timeout=2)
    metrics.watch(down, time.time, 0.0)
    metrics.webhook_answered(200, 0.01)  # the process's own counts still show
    app = Starlette(routes=[Route("/metrics", endpoint(metrics, None))])
    try:
        async with httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="http://bridge"
        ) as client:
            response = await client.get("/metrics")
    finally:
        await down.close()
    assert response.status_code == 200
    samples = {
        sample.name: sample.value
        for family in text_string_to_metric_families(response.text)
        for sample in family.samples
    }
    assert samples["smsbridge_database_up"] == 0
    assert samples["smsbridge_webhook_requests_total"] == 1
    assert "smsbridge_outbox_depth" not in response.text


async def test_metrics_show_database_up_1_while_it_answers(sqlite_url: str) -> None:
    async with running_bridge(sqlite_url, CONFIG, console(), run_worker=False) as bridge:
        text = (await bridge.client.get("/metrics")).text
    assert "smsbridge_database_up 1.0" in text
    await asyncio.sleep(0)
