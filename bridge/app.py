"""The web app: wires the database, webhook receiver and in-process worker. No logic here."""

from __future__ import annotations

import asyncio
import logging
import secrets
import time
from collections import ChainMap
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass

from pydantic import SecretStr
from starlette.applications import Starlette
from starlette.datastructures import State
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Match, Route
from starlette.types import ASGIApp, Receive, Scope, Send

from bridge import heap, remembered
from bridge.chat.base import ChatAdapter
from bridge.config import Config
from bridge.delivery import destinations
from bridge.delivery.supervisor import Named, Supervisor
from bridge.delivery.worker import Worker, WorkerOptions
from bridge.http import edge, telegram_polling
from bridge.http.chat_events import SlackEvents, TelegramUpdates
from bridge.http.slack_socket import SlackSocket
from bridge.http.webhook import WebhookAuth, WebhookReceiver, group_commit, webhook_token
from bridge.metrics import Metrics, endpoint
from bridge.ops import readiness, retention, telegram_setup
from bridge.ops.credit import CreditWatch
from bridge.settings import Settings, sqlite_on_ephemeral_disk
from bridge.smstools.api import SmstoolsApi
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


def webhook_url(settings: Settings, token: str) -> str:
    """The URL to paste into the Smstools dashboard."""
    base = settings.public_url or f"http://localhost:{settings.port}"
    return f"{base}{WEBHOOK_PATH.format(token=token)}"


@dataclass(frozen=True)
class Parts:
    """What `serve` and `worker` deliver with."""

    database: Database
    adapters: Mapping[str, ChatAdapter]
    # Destinations whose credentials were refused at start-up, or whose token is unset.
    refused: Mapping[str, str]


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
    database = Database(settings.database_url, direct_url=settings.database_direct_url)
    try:
        await migrate(database)
        unusable: dict[str, str] = {}
        if adapters is None:
            adapters = destinations.build_adapters(config, settings)
            unusable = destinations.without_token(config, settings)
            for detail in unusable.values():
                log.error("destination %s", detail)
        await destinations.follow_moves(database, adapters)
        refused, token_refused = await destinations.start_all(adapters, config)
        await destinations.remember_teams(database, adapters)
        # A destination whose token was refused gets no adapter, as one whose token is
        # unset: the worker leaves its jobs waiting instead of burying them.
        usable = {name: a for name, a in adapters.items() if name not in token_refused}
        try:
            yield Parts(database, usable, unusable | refused)
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


def background_work(database: Database, config: Config, credit: CreditWatch | None) -> Supervisor:
    """What a worker runs beside its deliveries: the hourly pruning, forgetting the numbers
    it remembers and, with the Smstools API, the balance watch."""
    watching = [Named("forgetting", remembered.forgetting)]
    if credit is not None:
        watching.append(Named("credit", credit.run))
    return Supervisor(watching, [retention.HourlyPrune(database, config)])


def telegram_pollers(
    settings: Settings, config: Config, worker: Worker, now: Callable[[], float] = time.time
) -> list[telegram_polling.TelegramPoller]:
    """With TELEGRAM_UPDATES=polling, a poller for each bot whose destinations take replies
    (each polls only while its process holds the bot's hold); none with webhooks."""
    if settings.telegram_updates != "polling":
        return []
    return telegram_polling.pollers(
        worker.database,
        config,
        telegram_setup.tokens(config, settings),
        api_url=settings.telegram_api_url,
        # Unique per start: two apps in one process (tests) must not share a hold.
        holder=f"{worker.name}:{secrets.token_hex(4)}",
        on_stored=worker.wake,
        now=now,
    )


@asynccontextmanager
async def agent_inputs(
    settings: Settings, config: Config, worker: Worker, now: Callable[[], float]
) -> AsyncIterator[SlackSocket | None]:
    """Agents' messages that need no public URL, in whichever process holds them: Telegram
    pollers and Slack Socket Mode (the receiver, or None without SLACK_APP_TOKEN)."""
    async with (
        telegram_polling.polling(telegram_pollers(settings, config, worker, now)),
        slack_socket_mode(settings, config, worker.database, worker.wake, now) as socket_mode,
    ):
        yield socket_mode


@asynccontextmanager
async def slack_socket_mode(
    settings: Settings,
    config: Config,
    database: Database,
    wake: Callable[[], None],
    now: Callable[[], float],
) -> AsyncIterator[SlackSocket | None]:
    """With SLACK_APP_TOKEN, Slack events over Socket Mode in this process (`serve` or
    `worker`) whenever it holds the connection; stopped on the way out. None without it."""
    if settings.slack_app_token is None:
        yield None
        return
    receiver = SlackSocket(
        database, config, settings.slack_app_token, settings.slack_api_url, wake, now=now
    )
    task = asyncio.create_task(receiver.run(), name="slack-socket-mode")
    try:
        yield receiver
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


def create_app(settings: Settings, config: Config, options: Options | None = None) -> Starlette:
    """The bridge's web app; its lifespan starts what it serves with (`_serving`)."""
    options = options or Options()
    metrics = options.metrics or Metrics()

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        async with _serving(app.state, settings, config, options, metrics):
            yield

    webhook = Route(WEBHOOK_PATH, _Webhook(), methods=["POST"])
    return Starlette(
        exception_handlers={HTTPException: _http_error},
        middleware=[Middleware(_WebhooksFirst, route=webhook)],
        routes=[
            webhook,
            Route("/healthz", _healthz, methods=["GET"]),
            Route("/readyz", _readyz, methods=["GET"]),
            Route("/slack/events", _slack_events, methods=["POST"]),
            Route("/telegram/webhook", _telegram_updates, methods=["POST"]),
            Route("/telegram/webhook/{bot}", _telegram_updates, methods=["POST"]),
            Route("/metrics", endpoint(metrics, settings.metrics_token), methods=["GET"]),
        ],
        lifespan=lifespan,
    )


@asynccontextmanager
async def _serving(
    state: State, settings: Settings, config: Config, options: Options, metrics: Metrics
) -> AsyncIterator[None]:
    """Everything the app serves with, kept on `state`: started, then stopped on the way out."""
    async with (
        delivery_parts(settings, config, options.adapters) as parts,
        smstools_parts(settings, config, parts.database, metrics, options.now) as (
            smstools,
            credit,
        ),
    ):
        database = parts.database
        watch_database(metrics, config, database, options.now)
        token, created = await webhook_token(database, settings)
        if created:  # once; `smsbridge webhook-url` shows it again
            options.announce(f"Smstools webhook URL: {webhook_url(settings, token)}")
        # Built even when it does not run here, so tools and tests can drive it by hand.
        worker = Worker(
            database,
            config,
            parts.adapters,
            options=WorkerOptions(now=options.now, lease=settings.job_lease),
            smstools=smstools,
            metrics=metrics,
            supervisor=background_work(database, config, credit),
        )
        state.worker, state.credit = worker, credit
        auth = WebhookAuth(token, settings.webhook_secret)
        telegram_secret = await telegram_setup.webhook_secret(database, settings)
        _edges(state, settings, config, worker, (auth, telegram_secret), options.now, metrics)
        await state.receiver.commits.warm()
        task = asyncio.create_task(worker.run(), name="worker") if options.run_worker else None
        # The worker forgets the numbers this process remembers (`background_work`); without
        # it, the web side does.
        forgetting = None if task else asyncio.create_task(remembered.forgetting(), name="forget")
        writers = {"webhooks": state.receiver.commits.writes}
        if task is not None:
            task.add_done_callback(_worker_ended)
            writers["worker"] = worker.writes
        state.readiness = readiness.Probe(
            database,
            task,
            lambda: worker.heartbeat,
            ChainMap(worker.refused, dict(parts.refused)),  # live: refusals while running too
            writers,
            lambda: worker.trouble,
        )
        if options.settle_heap:
            heap.settle()
        try:
            async with agent_inputs(settings, config, worker, options.now) as socket_mode:
                state.slack_socket = socket_mode
                yield
        finally:
            if forgetting is not None:
                forgetting.cancel()
            await state.receiver.commits.close()
            await state.readiness.close()
            if task is not None:
                await worker.stop()
                await task


def _worker_ended(task: asyncio.Task[None]) -> None:
    """A delivery loop that ends by itself while the web side serves is said at once."""
    if not task.cancelled() and task.exception() is not None:
        log.error("the delivery loop stopped", exc_info=task.exception())


def _edges(
    state: State,
    settings: Settings,
    config: Config,
    worker: Worker,
    secrets: tuple[WebhookAuth, SecretStr],
    now: Callable[[], float],
    metrics: Metrics,
) -> None:
    """The receivers of Smstools webhooks and chat events, kept on `state`; each wakes the
    worker once it stored something. `secrets`: what a Smstools webhook must show, and the
    Telegram webhook's secret token."""
    database = worker.database
    auth, telegram_secret = secrets
    bodies = edge.BodyReader(settings.body_timeout)  # one sweep for every edge
    state.receiver = WebhookReceiver(
        # The NOTIFY of its commits names this process's worker, which it wakes itself at
        # once; workers of other processes hear it.
        group_commit(database, sender=worker.name),
        auth,
        now,
        worker.wake,
        bodies=bodies,
        metrics=metrics,
    )
    worker.webhooks_stored = state.receiver.commits.at_rest  # webhooks first, if it runs here
    state.slack_events = SlackEvents(
        database, config, settings.slack_signing_secret, now, worker.wake, bodies=bodies
    )
    state.telegram_updates = TelegramUpdates(
        database,
        config,
        telegram_secret,
        now,
        worker.wake,
        bodies=bodies,
        bots=telegram_setup.bots(config, settings),
    )


async def _slack_events(request: Request) -> Response:
    handler: SlackEvents = request.app.state.slack_events
    return await handler(request)


async def _telegram_updates(request: Request) -> Response:
    handler: TelegramUpdates = request.app.state.telegram_updates
    return await handler(request)


async def _healthz(_request: Request) -> JSONResponse:
    return JSONResponse({"status": "ok"})


async def _readyz(request: Request) -> JSONResponse:
    probe: readiness.Probe = request.app.state.readiness
    ready, body = readiness.as_json(await probe.checks())
    return JSONResponse(body, status_code=200 if ready else 503)


async def _http_error(_request: Request, error: Exception) -> JSONResponse:
    assert isinstance(error, HTTPException)
    return JSONResponse({"error": error.detail}, status_code=error.status_code)


class _Webhook:
    """The Smstools webhook's endpoint: an ASGI app, which Starlette calls as it is (a
    function endpoint it wraps as `request -> response`), answered by the receiver built at
    start-up."""

    def __call__(self, scope: Scope, receive: Receive, send: Send) -> Awaitable[None]:
        receiver: WebhookReceiver = scope["app"].state.receiver
        return receiver(scope, receive, send)  # its coroutine, awaited by the caller


class _WebhooksFirst:
    """Sends what the webhook's `route` takes (its path, POST) straight to its endpoint,
    past Starlette's exception middleware and router, which only pass it along; everything
    else (that path with another method too: 405) goes on to `app`. Errors are still
    answered by Starlette's outermost middleware (500)."""

    def __init__(self, app: ASGIApp, route: Route) -> None:
        self.app, self.route = app, route

    def __call__(self, scope: Scope, receive: Receive, send: Send) -> Awaitable[None]:
        if scope["type"] == "http":
            match, child = self.route.matches(scope)
            if match is Match.FULL:
                scope.update(child)
                return self.route.app(scope, receive, send)
        return self.app(scope, receive, send)
