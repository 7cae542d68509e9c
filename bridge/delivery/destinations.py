"""Config destinations → chat adapters, each with its own token from the environment."""

from __future__ import annotations

import logging
from collections.abc import Mapping

from bridge import language
from bridge.chat.base import ChatAdapter, TokenRefused
from bridge.chat.console import ConsoleAdapter
from bridge.chat.slack import SlackAdapter
from bridge.chat.telegram import TelegramAdapter
from bridge.config import (
    Config,
    Destination,
    SlackTarget,
    TelegramTarget,
    missing_tokens,
    token_advice,
)
from bridge.delivery.pacing import spacing_for
from bridge.errors import DeliveryError, Permanent
from bridge.settings import Settings
from bridge.store import facts as facts_store
from bridge.store.db import Database

log = logging.getLogger(__name__)


def build_adapters(config: Config, settings: Settings) -> dict[str, ChatAdapter]:
    """One adapter per configured destination whose token variable is set. One without (see
    `without_token`) has none: the worker leaves its jobs waiting in the outbox."""
    missing = missing_tokens(config, settings.environ)
    return {
        name: _adapter(name, destination, settings)
        for name, destination in config.destinations.items()
        if name not in missing
    }


def without_token(config: Config, settings: Settings) -> dict[str, str]:
    """Destinations that cannot post because their token variable is unset, and why, in the
    form `/readyz` shows a refused destination."""
    return {
        name: (
            f"{config.destinations[name].kind} destination {name!r}: {variable} is not set; "
            "its messages wait in the outbox until it is"
        )
        for name, variable in missing_tokens(config, settings.environ).items()
    }


def _adapter(name: str, destination: Destination, settings: Settings) -> ChatAdapter:
    target = destination.target
    if not isinstance(target, SlackTarget | TelegramTarget):
        return ConsoleAdapter(name, words=language.words(destination.language))
    token = settings.environ[target.token_env].strip()
    spacing = spacing_for(destination.max_rate)
    if isinstance(target, SlackTarget):
        return SlackAdapter(
            name,
            token=token,
            channel=target.channel,
            base_url=settings.slack_api_url,
            spacing=spacing,
            words=language.words(destination.language),
        )
    return TelegramAdapter(
        name,
        token=token,
        chat_id=target.chat_id,
        topics=target.topics,
        api_url=settings.telegram_api_url,
        spacing=spacing,
    )


async def follow_moves(database: Database, adapters: Mapping[str, ChatAdapter]) -> None:
    """Telegram groups that became supergroups since the config was written: post to their
    new ids (remembered by `moves.follow`) without asking Telegram again."""
    for adapter in adapters.values():
        if isinstance(adapter, TelegramAdapter):
            async with database.transaction() as connection:
                moved_to = await facts_store.moved_to(connection, str(adapter.chat_id))
            if moved_to is not None:
                adapter.follow(int(moved_to))


async def start_all(
    adapters: Mapping[str, ChatAdapter], config: Config
) -> tuple[dict[str, str], set[str]]:
    """Check every destination's token. A failure is logged, not fatal: webhooks must still be
    stored while someone fixes the token, and the worker keeps the jobs.

    Returns the destinations refused for good (token rejected, chat unknown) and why, for
    `/readyz`, and those whose token itself was refused: like one whose token variable is
    unset, their jobs wait in the outbox. A platform that was merely unreachable is in
    neither.
    """
    refused, token_refused = {}, set()
    for name, adapter in adapters.items():
        try:
            await adapter.start()
        except TokenRefused as error:
            refused[name] = refused_token(config, name, error)
            token_refused.add(name)
            log.error("destination %s", refused[name])
        except DeliveryError as error:
            log.error("destination %s is not usable yet: %s", name, error.detail)
            if isinstance(error, Permanent):
                refused[name] = error.detail
    return refused, token_refused


def refused_token(config: Config, name: str, error: TokenRefused) -> str:
    """Why destination `name` is not delivering, naming its token variable and the fix, in
    the form `/readyz` shows it."""
    destination = config.destinations.get(name)
    target = destination.target if destination is not None else None
    if destination is None or not isinstance(target, SlackTarget | TelegramTarget):
        return f"{error.detail}; its messages wait in the outbox"
    variable = target.token_env
    return (
        f"{error.detail}; the token in {variable} was refused, so its messages wait in the "
        f"outbox: {token_advice(destination, variable)}"
    )


async def remember_teams(database: Database, adapters: Mapping[str, ChatAdapter]) -> None:
    """Keep each started Slack destination's workspace, so that the request path can tell
    the workspace's members from other organisations' (Slack Connect) without calling Slack."""
    for name, adapter in adapters.items():
        if isinstance(adapter, SlackAdapter) and adapter.team is not None:
            async with database.transaction() as connection:
                await facts_store.remember_slack_team(database, connection, name, adapter.team)


async def close_all(adapters: Mapping[str, ChatAdapter]) -> None:
    for adapter in adapters.values():
        await adapter.close()
