"""The HTTP edge for agents' messages: Slack's Events API and Telegram's webhook.

verify → store (raw, deduplicated on the platform's id) → plan the reply → answer. Nothing on
this path calls Slack, Telegram or Smstools: the worker sends. An unverified request is
neither stored nor acted on. The body is bounded in size and time (`edge.BodyReader`), and a
database that cannot store the event gets the platform a 503 to send it again. Slack events
over Socket Mode (`slack_socket`) take the same path from `take_slack_event` on.
"""

from __future__ import annotations

import hmac
import json
import logging
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any

from pydantic import SecretStr
from slack_sdk.signature import Clock, SignatureVerifier
from starlette.datastructures import Headers
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from bridge.config import Config
from bridge.http import edge
from bridge.intake import agent_messages
from bridge.store.db import UNAVAILABLE, Database, describe_error

log = logging.getLogger(__name__)

TELEGRAM_SECRET_HEADER = "x-telegram-bot-api-secret-token"
SLACK_SIGNATURE_HEADER = "x-slack-signature"
SLACK_TIMESTAMP_HEADER = "x-slack-request-timestamp"


class _InjectedClock(Clock):
    def __init__(self, now: Callable[[], float]) -> None:
        self._now = now

    def now(self) -> float:
        return self._now()


@dataclass
class SlackEvents:
    """`POST /slack/events`: signed with SLACK_SIGNING_SECRET (v0 HMAC, 5-minute window)."""

    database: Database
    config: Config
    signing_secret: SecretStr | None
    now: Callable[[], float]
    on_stored: Callable[[], None]
    bodies: edge.BodyReader = field(default_factory=edge.BodyReader)

    async def __call__(self, request: Request) -> Response:
        if self.signing_secret is None:
            message = "Slack events are not enabled: set SLACK_SIGNING_SECRET"
            return edge.error(404, message, close=True)
        body = await self.bodies.read(request.receive, request.headers.get("content-length"))
        if isinstance(body, Response):
            return body
        verifier = SignatureVerifier(
            self.signing_secret.get_secret_value(), clock=_InjectedClock(self.now)
        )
        if not _slack_signed(verifier, body, request.headers):
            log.warning("Slack event refused (401): missing, wrong or stale signature")
            return edge.error(401, "signature check failed")
        envelope = _json_object(body)
        if envelope is None:
            return edge.error(400, "body is not a JSON object")
        if envelope.get("type") == "url_verification":
            return JSONResponse({"challenge": str(envelope.get("challenge", ""))})
        event_id = slack_event_id(envelope)
        if event_id is None:
            return edge.error(400, "expected an event_callback with an event_id")
        return await _plan(
            self, "slack", event_id, envelope, agent_messages.slack_message(envelope)
        )


def slack_event_id(envelope: dict[str, Any]) -> str | None:
    """The `event_id` of an Events API `event_callback`; None for anything else."""
    event_id = envelope.get("event_id")
    if envelope.get("type") != "event_callback" or not isinstance(event_id, str):
        return None
    return event_id


async def take_slack_event(
    database: Database,
    config: Config,
    envelope: dict[str, Any],
    event_id: str,
    *,
    now: float,
    on_stored: Callable[[], None],
) -> agent_messages.Planned:
    """Store a Slack `event_callback` once per `event_id` and plan its reply, as
    `POST /slack/events` does; `on_stored` is called when a reply was planned. Raises one of
    `UNAVAILABLE` when the event could not be stored (the sender must send it again)."""
    planning = agent_messages.plan(
        database,
        config,
        platform="slack",
        event_key=event_id,
        body=envelope,
        message=agent_messages.slack_message(envelope),
        now=now,
    )
    return await woken_when_planned(planning, on_stored)


async def woken_when_planned(
    planning: Coroutine[Any, Any, agent_messages.Planned], on_stored: Callable[[], None]
) -> agent_messages.Planned:
    """Store and plan an agent's chat event (`planning`), then wake the worker (`on_stored`)
    when it planned a reply: the one way every edge (posted, polled, Socket Mode) ends."""
    planned = await planning
    if planned.reply_id is not None:
        on_stored()
    return planned


def _slack_signed(verifier: SignatureVerifier, body: bytes, headers: Headers) -> bool:
    """Whether the request carries a fresh signature that matches its body. Whatever bytes a
    sender puts in the headers or the body, the answer is a bool, never an exception."""
    signature = headers.get(SLACK_SIGNATURE_HEADER)
    if signature is None or not signature.isascii():  # `hmac.compare_digest` raises on one
        return False
    try:
        return verifier.is_valid(body, headers.get(SLACK_TIMESTAMP_HEADER), signature)
    except ValueError:  # a timestamp that is not a number, a body that is not UTF-8
        return False


@dataclass
class TelegramUpdates:
    """`POST /telegram/webhook/<bot id>`: carries TELEGRAM_WEBHOOK_SECRET in its secret-token
    header. Telegram numbers updates per bot, so an update is deduplicated per bot: the path
    names the bot (`/telegram/webhook` alone is accepted while only one bot answers)."""

    database: Database
    config: Config
    secret: SecretStr | None
    now: Callable[[], float]
    on_stored: Callable[[], None]
    bodies: edge.BodyReader = field(default_factory=edge.BodyReader)
    bots: frozenset[str] = frozenset()  # ids of the bots whose destinations take replies

    async def __call__(self, request: Request) -> Response:
        if self.secret is None:
            message = "Telegram updates are not enabled: set TELEGRAM_WEBHOOK_SECRET"
            return edge.error(404, message, close=True)
        offered = request.headers.get(TELEGRAM_SECRET_HEADER, "").encode()
        if not hmac.compare_digest(offered, self.secret.get_secret_value().encode()):
            log.warning("Telegram update refused (403): wrong or missing secret token")
            return edge.error(403, "wrong secret token", close=True)
        bot = self._bot(request.path_params.get("bot"))
        if isinstance(bot, Response):
            return bot
        body = await self.bodies.read(request.receive, request.headers.get("content-length"))
        if isinstance(body, Response):
            return body
        update = _json_object(body)
        if update is None or not isinstance(update.get("update_id"), int):
            return edge.error(400, "expected a Telegram update with an update_id")
        planning = agent_messages.plan_telegram_update(
            self.database, self.config, bot=bot, update=update, now=self.now()
        )
        return await _answer(self, "telegram", planning)

    def _bot(self, named: str | None) -> str | Response:
        """The bot the update is for: the one the path names, else the only one ("" if none)."""
        if named is not None:
            if named in self.bots:
                return named
            return edge.error(
                404, "no Telegram destination takes replies with this bot", close=True
            )
        if len(self.bots) > 1:
            message = (
                "several bots take replies: each has its own /telegram/webhook/<bot id>; "
                "run smsbridge telegram set-webhook"
            )
            return edge.error(404, message, close=True)
        return next(iter(self.bots), "")


async def _plan(
    receiver: SlackEvents | TelegramUpdates,
    platform: agent_messages.Platform,
    key: str,
    document: dict[str, Any],
    message: agent_messages.AgentMessage | agent_messages.Ignored,
) -> Response:
    planning = agent_messages.plan(
        receiver.database,
        receiver.config,
        platform=platform,
        event_key=key,
        body=document,
        message=message,
        now=receiver.now(),
    )
    return await _answer(receiver, platform, planning)


async def _answer(
    receiver: SlackEvents | TelegramUpdates,
    platform: agent_messages.Platform,
    planning: Coroutine[Any, Any, agent_messages.Planned],
) -> Response:
    """The platform's answer once `planning` stored the event: 503 when it could not."""
    try:
        planned = await woken_when_planned(planning, receiver.on_stored)
    except UNAVAILABLE as error:  # down, locked or too slow: the platform sends it again
        log.error("could not store a %s event: %s", platform, describe_error(error))
        return edge.error(503, "the event could not be stored; send it again", retry=True)
    return JSONResponse({"ok": True, "duplicate": planned.duplicate})


def _json_object(body: bytes) -> dict[str, Any] | None:
    try:
        document = json.loads(body)
    except (ValueError, RecursionError):
        return None
    return document if isinstance(document, dict) else None
