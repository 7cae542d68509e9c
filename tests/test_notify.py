"""On PostgreSQL a NOTIFY wakes idle workers at once; polling is only the fallback."""

from __future__ import annotations

import asyncio
import io

import pytest

from bridge.chat.console import ConsoleAdapter
from bridge.config import load
from bridge.ingest import ingest
from bridge.settings import normalise_database_url
from bridge.store.db import Database
from bridge.store.migrations import migrate
from bridge.worker import Worker
from tests.conftest import sample

pytestmark = pytest.mark.postgres


async def test_a_planned_job_wakes_a_worker_in_another_process_without_polling(
    postgres_url: str,
) -> None:
    web, worker_db = (Database(normalise_database_url(postgres_url)) for _ in range(2))
    await migrate(web)
    config = load(None, {})
    output = io.StringIO()
    worker = Worker(
        worker_db, config, {"console": ConsoleAdapter("console", output)}, poll_interval=3600
    )
    running = asyncio.create_task(worker.run())
    try:
        await asyncio.sleep(0.5)  # the worker is idle, listening
        await ingest(web, config, b"[]", sample("inbox_message"), now=1.0)
        for _ in range(100):
            if "Order 5531" in output.getvalue():
                break
            await asyncio.sleep(0.05)
        assert "Order 5531" in output.getvalue()
    finally:
        await worker.stop()
        await running
        await web.close()
        await worker_db.close()
