"""The web app: wires the database, webhook receiver and in-process worker. No logic here."""

from __future__ import annotations

import asyncio
import logging
import secrets
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from starlette.types import Receive, Scope, Send

from bridge import heap, logs
from bridge.chat.base import ChatAdapter
from bridge.config import Config
from bridge.delivery import destinations
from bridge.delivery.worker import Worker
from bridge.http import edge
from bridge.http.chat_events import SlackEvents, TelegramUpdates
from bridge.http.webhook import WebhookReceiver
from bridge.metrics import Metrics, endpoint
from bridge.ops import readiness, telegram_setup
from bridge.ops.credit import CreditWatch
from bridge.settings import Settings, sqlite_on_ephemeral_disk
from bridge.smstools.api import SmstoolsApi
from bridge.store import facts
from bridge.store.db import Database
from bridge.store.migrations import migrate

log = logging.getLogger(__name__)

WEBHOOK_PATH = "/webhooks/smstools/{token}"


@dataclass
class Options:
    """What tests and the CLI may change about a running bridge."""

    run_worker: bool = True
    adapters: Mapping[str, ChatAdapter] | None = None
    now: Callable[[], float] = time.time
    announce: Callable[[str], None] = print
    metrics: Metrics | None = None  # default: a registry of this app's own
    settle_heap: bool = False  # once started, `heap.settle()` (a process of its own: `serve`)


async def webhook_token(database: Database, settings: Settings) -> tuple[str, bool]:
    """The secret URL token: from the environment, else generated once and kept in the DB.
    True when this call generated it. Either way the log filter hides it from now on."""
    if settings.webhook_token is not None:
        token, created = settings.webhook_token.get_secret_value(), False
    else:
        async with database.transaction() as connection:
            created = await facts.add(
                database, connection, "webhook_token", secrets.token_urlsafe(32)
            )
            token = await facts.get(connection, "webhook_token") or ""
    logs.hide(token)
    return token, created


def webhook_url(settings: Settings, token: str) -> str:
    """The URL to paste into the Smstools dashboard."""
    base = settings.public_url or f"http://localhost:{settings.port}"
    return f"{base}{WEBHOOK_PATH.format(token=token)}"


@dataclass(frozen=True)
class Parts:
    """What `serve` and `worker` deliver with."""

    database: Database
    adapters: Mapping[str, ChatAdapter]
    refused: Mapping[str, str]  # destinations whose credentials were refused at start-up


@asynccontextmanager
async def delivery_parts(
    settings: Settings,
    config: Config,
    adapters: Mapping[str, ChatAdapter] | None = None,
) -> AsyncIterator[Parts]:
    """The migrated database and the started chat adapters, for `serve` and `worker` alike;
    both closed on the way out."""
    warning = sqlite_on_ephemeral_disk(settings)
    if warning:
        log.warning("%s", warning)
    database = Database(settings.database_url)
    try:
        await migrate(database)
        if adapters is None:
            adapters = destinations.build_adapters(config, settings)
        await destinations.follow_moves(database, adapters)
        refused = await destinations.start_all(adapters)
        try:
            yield Parts(database, adapters, refused)
        finally:
            await destinations.close_all(adapters)
    finally:
        await database.close()


@asynccontextmanager
async def smstools_parts(
    settings: Settings,
    config: Config,
    database: Database,
    metrics: Metrics | None,
    now: Callable[[], float],
) -> AsyncIterator[tuple[SmstoolsApi | None, CreditWatch | None]]:
    """One Smstools API client for replies and the balance watcher, closed on the way out;
    (None, None) when SMSTOOLS_CLIENT_ID/_SECRET are not set."""
    api = SmstoolsApi.from_settings(settings)
    if api is None:
        yield None, None
        return
    async with api:
        yield api, CreditWatch(database, config, api, now=now, metrics=metrics)


def watch_database(
    metrics: Metrics, config: Config, database: Database, now: Callable[[], float]
) -> None:
    """Let each scrape read the database gauges; alert groups stay open for repeat_interval."""
    open_window = config.alerts.top.repeat_interval if config.alerts is not None else 0.0
    metrics.watch(database, now, open_window)


def create_app(settings: Settings, config: Config, options: Options | None = None) -> Starlette:
    options = options or Options()
    metrics = options.metrics or Metrics()

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        async with (
            delivery_parts(settings, config, options.adapters) as parts,
            smstools_parts(settings, config, parts.database, metrics, options.now) as (
                smstools,
                credit,
            ),
        ):
            database, adapters = parts.database, parts.adapters
            watch_database(metrics, config, database, options.now)
            token, created = await webhook_token(database, settings)
            if created:  # once; `smsbridge webhook-url` shows it again
                options.announce(f"Smstools webhook URL: {webhook_url(settings, token)}")
            # Built even when it does not run here, so tools and tests can drive it by hand.
            worker = Worker(
                database,
                config,
                adapters,
                now=options.now,
                lease=settings.job_lease,
                smstools=smstools,
                metrics=metrics,
                credit=credit,
            )
            app.state.worker = worker
            bodies = edge.BodyReader(settings.body_timeout)  # one sweep for every edge
            app.state.receiver = WebhookReceiver(
                database,
                config,
                token,
                options.now,
                worker.wake,
                secret=settings.webhook_secret,
                bodies=bodies,
                metrics=metrics,
            )
            app.state.slack_events = SlackEvents(
                database,
                config,
                settings.slack_signing_secret,
                options.now,
                worker.wake,
                bodies=bodies,
            )
            app.state.telegram_updates = TelegramUpdates(
                database,
                config,
                await telegram_setup.webhook_secret(database, settings),
                options.now,
                worker.wake,
                bodies=bodies,
                bots=telegram_setup.bots(config, settings),
            )
            task = asyncio.create_task(worker.run(), name="worker") if options.run_worker else None
            app.state.readiness = readiness.Probe(
                database, task, lambda: worker.heartbeat, parts.refused
            )
            if options.settle_heap:
                heap.settle()
            try:
                yield
            finally:
                await app.state.receiver.commits.close()
                await app.state.readiness.close()
                if task is not None:
                    await worker.stop()
                    await task

    async def slack_events(request: Request) -> Response:
        handler: SlackEvents = request.app.state.slack_events
        return await handler(request)

    async def telegram_updates(request: Request) -> Response:
        handler: TelegramUpdates = request.app.state.telegram_updates
        return await handler(request)

    async def healthz(_request: Request) -> JSONResponse:
        return JSONResponse({"status": "ok"})

    async def readyz(request: Request) -> JSONResponse:
        probe: readiness.Probe = request.app.state.readiness
        ready, body = readiness.as_json(await probe.checks())
        return JSONResponse(body, status_code=200 if ready else 503)

    async def http_error(_request: Request, error: Exception) -> JSONResponse:
        assert isinstance(error, HTTPException)
        return JSONResponse({"error": error.detail}, status_code=error.status_code)

    return Starlette(
        exception_handlers={HTTPException: http_error},
        routes=[
            Route(WEBHOOK_PATH, _Webhook(), methods=["POST"]),
            Route("/healthz", healthz, methods=["GET"]),
            Route("/readyz", readyz, methods=["GET"]),
            Route("/slack/events", slack_events, methods=["POST"]),
            Route("/telegram/webhook", telegram_updates, methods=["POST"]),
            Route("/telegram/webhook/{bot}", telegram_updates, methods=["POST"]),
            Route("/metrics", endpoint(metrics, settings.metrics_token), methods=["GET"]),
        ],
        lifespan=lifespan,
    )


class _Webhook:
    """The Smstools webhook's endpoint: an ASGI app, which Starlette calls as it is (a
    function endpoint it wraps as `request -> response`), answered by the receiver built at
    start-up."""

    def __call__(self, scope: Scope, receive: Receive, send: Send) -> Awaitable[None]:
        receiver: WebhookReceiver = scope["app"].state.receiver
        return receiver(scope, receive, send)  # its coroutine, awaited by the router
