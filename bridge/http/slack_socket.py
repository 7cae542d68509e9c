"""Slack events over Socket Mode: the same edge as `POST /slack/events`, for a bridge that has
no public URL. With SLACK_APP_TOKEN set, one process at a time holds the named hold
`slack-socket-mode` and, while it holds it, a Socket Mode connection.

Each `events_api` envelope is stored and planned exactly as the HTTP edge does
(`chat_events.take_slack_event`: deduplicated on `event_id`), and acknowledged only once
stored: an envelope a crash or a database outage left unacknowledged is sent again by Slack.
Every other envelope is acknowledged as it comes, since the bridge has nothing to do with it.

slack-sdk's aiohttp client keeps the connection: it follows Slack's `disconnect` messages
(`refresh_requested`, `warning`) and reconnects when the link drops or stops answering pings.
This module adds what the SDK leaves out: the hold (a socket per app, not per process), a
backoff when `apps.connections.open` fails, not reconnecting at once after `link_disabled`
(Socket Mode was turned off in the app's settings), and starting over with a fresh client
when the SDK has been without a connection for `DOWN_FOR_AT_MOST` seconds.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import random
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import aiohttp
from pydantic import SecretStr
from slack_sdk.errors import SlackApiError
from slack_sdk.socket_mode.aiohttp import SocketModeClient
from slack_sdk.socket_mode.async_client import AsyncBaseSocketModeClient
from slack_sdk.socket_mode.request import SocketModeRequest
from slack_sdk.socket_mode.response import SocketModeResponse
from slack_sdk.web.async_client import AsyncWebClient

from bridge.config import Config
from bridge.http.chat_events import slack_event_id, take_slack_event
from bridge.retry import backoff
from bridge.store import holds
from bridge.store.db import UNAVAILABLE, Database, describe_error

log = logging.getLogger(__name__)

HOLD = "slack-socket-mode"
RENEW_EVERY = 5.0  # seconds between renewals of the hold (and tries to take it)
HOLD_TTL = 20.0  # seconds a hold outlives its last renewal: a dead holder is replaced by then
PING_INTERVAL = 5.0  # seconds; the SDK reconnects after four unanswered pings
# Seconds without a connection (opening one, or slack-sdk reconnecting) before starting over.
DOWN_FOR_AT_MOST = 30.0
FIRST_RETRY, LAST_RETRY = 2.0, 300.0  # seconds: the backoff when Slack refuses a connection
_CONNECT_ERRORS = (SlackApiError, aiohttp.ClientError, OSError, TimeoutError)


class _Client(SocketModeClient):
    """slack-sdk's aiohttp client, except that `link_disabled` ends the connection (the SDK
    would open a new one at once, over and over) and is told to whoever waits on it."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.link_disabled = asyncio.Event()

    async def run_message_listeners(self, message: dict[str, Any], raw_message: str) -> None:
        if message.get("type") == "disconnect":
            log.info("Slack asked to reconnect (%s)", message.get("reason"))
            if message.get("reason") == "link_disabled":
                self.link_disabled.set()
                return
        await super().run_message_listeners(message, raw_message)


def _holder_name() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


@dataclass(frozen=True)
class Holding:
    """Who holds the connection and how: the holder's name, how often the hold is renewed and
    how long it lasts, how often the link is checked, how long it may be down before a
    fresh start, and the jitter of the retries."""

    holder: str = field(default_factory=_holder_name)
    renew_every: float = RENEW_EVERY
    ttl: float = HOLD_TTL
    ping_interval: float = PING_INTERVAL
    down_for_at_most: float = DOWN_FOR_AT_MOST
    rand: Callable[[], float] = random.random


@dataclass
class SlackSocket:
    """Holds the Socket Mode connection while this process holds the hold; `run()` until
    cancelled. `on_stored` wakes the worker when an event planned a reply."""

    database: Database
    config: Config
    app_token: SecretStr
    api_url: str
    on_stored: Callable[[], None]
    now: Callable[[], float] = time.time
    holding: Holding = field(default_factory=Holding)
    connected: asyncio.Event = field(default_factory=asyncio.Event, init=False)  # for tests

    async def run(self) -> None:
        """Take the hold when free, connect while holding it, give it up on the way out."""
        while True:
            if not await self._take():
                await asyncio.sleep(self.holding.renew_every)
                continue
            log.info("Slack Socket Mode: %s holds the connection", self.holding.holder)
            try:
                await self._hold()
            finally:
                await self._release()
            await asyncio.sleep(self.holding.renew_every)  # whoever took it over keeps it

    async def _hold(self) -> None:
        """Connect and keep the hold until it is lost; the connection ends at once then."""
        keeping = asyncio.create_task(self._keep_hold(), name="slack-socket-hold")
        connection = asyncio.create_task(self._connection(), name="slack-socket")
        try:
            await asyncio.wait([keeping, connection], return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in (keeping, connection):
                task.cancel()
            ended = await asyncio.gather(keeping, connection, return_exceptions=True)
        for outcome in ended:
            if isinstance(outcome, Exception):
                log.error("Slack Socket Mode failed: %r; starting again", outcome)

    async def _keep_hold(self) -> None:
        """Renew the hold every `renew_every` seconds; return once it is lost: another process
        took it, or the database did not renew it while there was still time to be sure."""
        renewed_at = self.now()
        while True:
            await asyncio.sleep(self.holding.renew_every)
            try:
                held = await self._take_or_raise()
            except UNAVAILABLE as error:
                if self.now() - renewed_at < self.holding.ttl - 2 * self.holding.renew_every:
                    log.warning("cannot renew the Socket Mode hold: %s", describe_error(error))
                    continue
                log.error(
                    "Slack Socket Mode: closing the connection, the hold could not be renewed "
                    "before it expires (%s)",
                    describe_error(error),
                )
                return
            if not held:
                log.warning("Slack Socket Mode: another process took the hold; closing")
                return
            renewed_at = self.now()

    async def _connection(self) -> None:
        """Keep a Socket Mode connection until cancelled, backing off while Slack refuses one
        or after `link_disabled`."""
        attempt = 0
        while True:
            client = self._client()
            try:
                try:
                    # slack-sdk retries a WebSocket that will not open forever, with the same
                    # URL: bounded here, a fresh client asks for a fresh URL.
                    async with asyncio.timeout(self.holding.down_for_at_most):
                        await client.connect_to_new_endpoint(force=True)
                except _CONNECT_ERRORS as error:
                    trouble = _describe_refusal(error)
                else:
                    trouble = await self._watch(client)
            finally:
                self.connected.clear()
                await client.close()  # type: ignore[no-untyped-call]  # slack-sdk: no hints
            wait = backoff(attempt, first=FIRST_RETRY, cap=LAST_RETRY, rand=self.holding.rand)
            attempt += 1
            log.error("Slack Socket Mode: %s; trying again in %.0fs", trouble, wait)
            await asyncio.sleep(wait)

    async def _watch(self, client: _Client) -> str:
        """While slack-sdk keeps the connection (and reconnects it), keep `connected` true to
        it; return why to start over: `link_disabled`, or down for `down_for_at_most`."""
        down_since: float | None = None
        while True:
            if await client.is_connected():
                down_since = None
                self.connected.set()
            else:
                self.connected.clear()
                down_since = time.monotonic() if down_since is None else down_since
                if time.monotonic() - down_since >= self.holding.down_for_at_most:
                    return f"no connection for {self.holding.down_for_at_most:.0f}s, starting over"
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.holding.ping_interval):
                    await client.link_disabled.wait()
                    return (
                        "Slack disabled the connection (link_disabled): turn Socket Mode on "
                        "in the Slack app's settings"
                    )

    def _client(self) -> _Client:
        web_client = AsyncWebClient(base_url=self.api_url, retry_handlers=[])
        client = _Client(
            app_token=self.app_token.get_secret_value(),
            logger=logging.getLogger("slack_sdk.socket_mode"),
            web_client=web_client,
            ping_interval=self.holding.ping_interval,
        )
        client.socket_mode_request_listeners.append(self._on_request)
        return client

    async def _on_request(
        self, client: AsyncBaseSocketModeClient, request: SocketModeRequest
    ) -> None:
        """Store an event, then acknowledge its envelope; unstored, it is left for Slack to
        send again."""
        if request.type == "events_api":
            envelope = request.payload
            event_id = slack_event_id(envelope)
            if event_id is None:
                log.warning("Slack Socket Mode: an events_api envelope without an event_callback")
            else:
                try:
                    await take_slack_event(
                        self.database,
                        self.config,
                        envelope,
                        event_id,
                        now=self.now(),
                        on_stored=self.on_stored,
                    )
                except UNAVAILABLE as error:
                    log.error(
                        "could not store a Slack event (%s); Slack sends it again",
                        describe_error(error),
                    )
                    return
        await client.send_socket_mode_response(SocketModeResponse(request.envelope_id))

    async def _take_or_raise(self) -> bool:
        async with self.database.transaction() as connection:
            return await holds.take(
                self.database,
                connection,
                HOLD,
                self.holding.holder,
                now=self.now(),
                ttl=self.holding.ttl,
            )

    async def _take(self) -> bool:
        try:
            return await self._take_or_raise()
        except UNAVAILABLE as error:
            log.warning("cannot take the Slack Socket Mode hold: %s", describe_error(error))
            return False

    async def _release(self) -> None:
        """Give the hold up so another process connects at once; if the database is away,
        the hold expires by itself."""
        try:
            async with self.database.transaction() as connection:
                await holds.release(connection, HOLD, self.holding.holder)
        except UNAVAILABLE as error:
            log.warning("cannot give up the Slack Socket Mode hold: %s", describe_error(error))


def _describe_refusal(error: BaseException) -> str:
    """Why `apps.connections.open` or the WebSocket failed, with the fix when there is one."""
    if isinstance(error, SlackApiError):
        code = error.response.get("error")
        if code in ("invalid_auth", "not_authed", "token_revoked", "not_allowed_token_type"):
            return (
                f"Slack refused SLACK_APP_TOKEN ({code}): set an app-level token (xapp-…) with "
                "the scope connections:write, from Basic Information → App-Level Tokens"
            )
        return f"apps.connections.open failed ({code or error})"
    return f"cannot reach Slack ({type(error).__name__}: {error})"
