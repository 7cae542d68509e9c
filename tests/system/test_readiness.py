"""`GET /readyz`: 503 naming the reason when the database does not answer within a second, the
schema is behind, the delivery loop stopped going round, or a destination's credentials were
refused (at start-up or since); 200 with every check otherwise. `/healthz` stays a bare
liveness check."""

from __future__ import annotations

import asyncio
import io
import sqlite3
import time
from typing import Any

import asyncpg

from bridge.chat.console import ConsoleAdapter
from bridge.chat.slack import SlackAdapter
from bridge.config import load
from bridge.ops import readiness
from bridge.settings import normalise_database_url
from bridge.store.db import Database
from testkit.fakes.slack import FakeSlack
from tests.conftest import sample
from tests.support.harness import RunningBridge, running_bridge
from tests.support.pipeline_fixtures import SLACK_TOKEN, make_config

CONFIG = load(None, {})


def console() -> dict[str, ConsoleAdapter]:
    return {"console": ConsoleAdapter("console", io.StringIO())}


async def ready(bridge: RunningBridge, status: int) -> dict[str, Any]:
    """Poll /readyz until it answers `status` (5 s at most); return its checks."""
    for _ in range(100):
        response = await bridge.client.get("/readyz")
        if response.status_code == status:
            break
        await asyncio.sleep(0.05)
    assert response.status_code == status, response.text
    checks: dict[str, Any] = response.json()["checks"]
    return checks


async def test_ready_names_every_check_when_all_pass(database_url: str) -> None:
    async with running_bridge(database_url, CONFIG, console()) as bridge:
        checks = await ready(bridge, 200)
        health = await bridge.client.get("/healthz")
    assert set(checks) == {"database", "schema", "worker", "destinations", "writes"}
    assert all(check["ok"] for check in checks.values())
    assert checks["worker"]["detail"].startswith("last round")
    assert health.json() == {"status": "ok"}


async def test_not_ready_while_the_database_does_not_answer_within_a_second(
    database_url: str,
) -> None:
    async with running_bridge(database_url, CONFIG, console(), run_worker=False) as bridge:
        await ready(bridge, 200)
        async with hold_the_database(database_url):
            started = time.monotonic()
            checks = await ready(bridge, 503)
            waited = time.monotonic() - started
            health = await bridge.client.get("/healthz")
        await ready(bridge, 200)
    assert checks["database"] == {"ok": False, "detail": "no answer within 1s"}
    assert checks["schema"]["ok"] is False
    assert checks["worker"] == {"ok": True, "detail": "not run by this process (BRIDGE_WORKER=0)"}
    assert readiness.DATABASE_DEADLINE <= waited < readiness.DATABASE_DEADLINE + 3
    assert health.status_code == 200  # liveness is not readiness


class hold_the_database:  # noqa: N801 (used as a context manager, like a function)
    """Another connection holding what the readiness query needs: SQLite's write lock, or an
    exclusive lock on PostgreSQL's schema_version table."""

    def __init__(self, database_url: str) -> None:
        self.url = database_url
        self.sqlite: sqlite3.Connection | None = None
        self.postgres: Any = None

    async def __aenter__(self) -> None:
        if self.url.startswith("sqlite"):
            self.sqlite = sqlite3.connect(self.url.removeprefix("sqlite:///"), isolation_level=None)
            self.sqlite.execute("BEGIN IMMEDIATE")
        else:
            self.postgres = await asyncpg.connect(self.url)
            self.postgres_transaction = self.postgres.transaction()
            await self.postgres_transaction.start()
            await self.postgres.execute("LOCK TABLE schema_version IN ACCESS EXCLUSIVE MODE")

    async def __aexit__(self, *_: object) -> None:
        if self.sqlite is not None:
            self.sqlite.execute("ROLLBACK")
            self.sqlite.close()
        if self.postgres is not None:
            await self.postgres_transaction.rollback()
            await self.postgres.close()


async def test_not_ready_while_the_schema_is_behind(database_url: str) -> None:
    async with running_bridge(database_url, CONFIG, console(), run_worker=False) as bridge:
        await ready(bridge, 200)
        database = Database(normalise_database_url(database_url))
        try:
            async with database.transaction() as connection:
                await connection.exec_driver_sql(
                    "DELETE FROM schema_version WHERE version = "
                    "(SELECT max(version) FROM schema_version)"
                )
        finally:
            await database.close()
        checks = await ready(bridge, 503)
    assert checks["database"]["ok"] is True
    assert checks["schema"] == {
        "ok": False,
        "detail": "1 migration step(s) behind: run smsbridge migrate",
    }


async def test_not_ready_once_the_delivery_loop_has_stopped(sqlite_url: str) -> None:
    async with running_bridge(sqlite_url, CONFIG, console()) as bridge:
        await ready(bridge, 200)
        await bridge.worker.stop()
        checks = await ready(bridge, 503)
    assert checks["worker"] == {"ok": False, "detail": "the delivery loop has stopped"}


async def test_not_ready_when_a_destination_refused_its_token(
    sqlite_url: str, slack: FakeSlack
) -> None:
    adapters = {
        "support": SlackAdapter("support", "xoxb-revoked", "C0SUPPORT", base_url=slack.api_url),
        "sales": SlackAdapter("sales", SLACK_TOKEN, "C0SALES", base_url=slack.api_url),
        "nl-team": ConsoleAdapter("nl-team", io.StringIO()),
    }
    async with running_bridge(sqlite_url, make_config(), adapters, run_worker=False) as bridge:
        checks = await ready(bridge, 503)
        stored = await bridge.post(sample("inbox_message"))
    assert checks["destinations"]["ok"] is False
    detail = checks["destinations"]["detail"]
    assert detail.startswith("refused: support: slack destination 'support'")
    assert "invalid_auth" in detail and "sales" not in detail
    assert "xoxb-revoked" not in detail
    assert stored.status_code == 200  # webhooks are still stored meanwhile
