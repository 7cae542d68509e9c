"""Run the bridge app in-process (real lifespan, real database) for tests."""

from __future__ import annotations

import asyncio
import inspect
import json
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest
from starlette.applications import Starlette

from bridge.app import Options, create_app
from bridge.chat.base import ChatAdapter
from bridge.config import Config
from bridge.delivery.worker import Worker
from bridge.intake.group_commit import GroupCommit
from bridge.intake.ingest import Body
from bridge.intake.planning import Intake
from bridge.settings import Settings
from bridge.store.db import Database

TOKEN = "test-webhook-token-0123456789-abcdefgh"


async def wait_until(
    condition: Callable[[], bool | Awaitable[bool]], what: str, timeout: float = 5.0
) -> None:
    """Poll `condition` (plain or async) every 20 ms until it holds; fail naming `what`."""
    deadline = time.monotonic() + timeout
    while True:
        held = condition()
        if inspect.isawaitable(held):
            held = await held
        if held:
            return
        if time.monotonic() > deadline:
            pytest.fail(f"not within {timeout}s: {what}")
        await asyncio.sleep(0.02)


class Clock:
    """An injected clock: time moves only when a test says so."""

    def __init__(self) -> None:
        self.value = 1_800_000_000.0

    def __call__(self) -> float:
        return self.value

    def advance(self, seconds: float) -> None:
        self.value += seconds


@dataclass
class RunningBridge:
    client: httpx.AsyncClient
    worker: Worker
    app: Starlette
    announced: list[str] = field(default_factory=list)

    async def post(self, body: object, token: str = TOKEN) -> httpx.Response:
        return await self.client.post(f"/webhooks/smstools/{token}", json=body)

    async def plan(self) -> None:
        """Run the worker's intake until no stored body waits (for a bridge whose worker does
        not run: one that runs plans them itself)."""
        await plan_all(self.worker.intake)


async def plan_all(intake: Intake) -> None:
    """Run `intake` until no stored body waits."""
    while await intake.plan():
        pass


async def store_webhook(
    database: Database, items: list[Any], received_at: float, sender: str = ""
) -> None:
    """Store a webhook body as the request path does (its NOTIFY naming `sender`); a
    worker's intake plans it."""
    commits = GroupCommit(database, lambda error, bodies: None, sender=sender)
    try:
        await commits.submit(Body(json.dumps(items).encode(), items, received_at))
    finally:
        await commits.close()


@asynccontextmanager
async def running_bridge(
    database_url: str,
    config: Config,
    adapters: Mapping[str, ChatAdapter],
    *,
    run_worker: bool = True,
    now: Callable[[], float] = time.time,
    env: Mapping[str, str] | None = None,
) -> AsyncIterator[RunningBridge]:
    environ = {"DATABASE_URL": database_url, "SMSTOOLS_WEBHOOK_TOKEN": TOKEN}
    environ.update(env or {})
    announced: list[str] = []
    options = Options(
        run_worker=run_worker,
        adapters=adapters,
        now=now,
        announce=announced.append,
    )
    app = create_app(Settings.from_env(environ), config, options)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://bridge") as client:
            yield RunningBridge(client, app.state.worker, app, announced)
