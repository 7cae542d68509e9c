"""`smsbridge telegram set-webhook | delete-webhook`: tell Telegram where agents' messages go.

`setWebhook` carries TELEGRAM_WEBHOOK_SECRET (or the one generated) as `secret_token`
(Telegram sends it back in `X-Telegram-Bot-Api-Secret-Token`, which `/telegram/webhook`
checks) and asks only for new messages. Done once per bot token of the Telegram destinations
with `replies` on, each at `/telegram/webhook/<bot id>`: Telegram numbers updates per bot, so
the bridge must know which bot an update came through.
"""

from __future__ import annotations

import secrets

from pydantic import SecretStr
from telegram import Bot
from telegram.error import TelegramError

from bridge import logs
from bridge.config import Config, TelegramTarget
from bridge.settings import Settings
from bridge.store import facts as facts_store
from bridge.store.db import Database

PATH = "/telegram/webhook"
ALLOWED_UPDATES = ["message"]
SECRET_FACT = "telegram_webhook_secret"


async def webhook_secret(database: Database, settings: Settings) -> SecretStr:
    """TELEGRAM_WEBHOOK_SECRET, else one generated once and kept in the database, as the
    Smstools webhook token is: the same for every process. Hidden from the logs either way."""
    if settings.telegram_webhook_secret is not None:
        value = settings.telegram_webhook_secret.get_secret_value()
    else:
        async with database.transaction() as connection:
            # token_urlsafe: 43 characters, all of them ones Telegram accepts.
            await facts_store.add(database, connection, SECRET_FACT, secrets.token_urlsafe(32))
            value = await facts_store.get(connection, SECRET_FACT) or ""
    logs.hide(value)
    return SecretStr(value)


def bot_id(token: str) -> str:
    """The bot's id: the digits before the token's colon (Bot API tokens are `<id>:<secret>`)."""
    return token.split(":", 1)[0]


def bots(config: Config, settings: Settings) -> frozenset[str]:
    """The ids of the bots whose destinations take replies: one webhook path each."""
    return frozenset(bot_id(token) for token in tokens(config, settings))


def tokens(config: Config, settings: Settings) -> dict[str, str]:
    """Bot token → the destinations that use it, for Telegram destinations with replies on."""
    found: dict[str, list[str]] = {}
    for destination in config.destinations.values():
        target = destination.target
        if isinstance(target, TelegramTarget) and destination.replies is not None:
            token = settings.environ.get(target.token_env, "").strip()
            found.setdefault(token, []).append(destination.name)
    return {token: ", ".join(names) for token, names in found.items() if token}


async def set_webhook(
    config: Config, settings: Settings, url: str | None, secret: SecretStr
) -> list[str]:
    """Register the webhook for each bot with `secret` (`webhook_secret`); one line per bot
    saying what Telegram answered."""
    base = url or (settings.public_url and settings.public_url + PATH)
    if not base:
        return ["give the URL (--url https://…/telegram/webhook) or set BRIDGE_PUBLIC_URL"]
    lines = []
    for token, names in tokens(config, settings).items():
        async with Bot(token, base_url=f"{settings.telegram_api_url}/bot") as bot:
            try:
                answer = await bot.set_webhook(
                    f"{base.rstrip('/')}/{bot_id(token)}",
                    secret_token=secret.get_secret_value(),
                    allowed_updates=ALLOWED_UPDATES,
                )
                info = await bot.get_webhook_info()
                lines.append(
                    f"{names}: Telegram answered {'ok' if answer else 'not ok'}; webhook is "
                    f"{info.url or '(none)'}, {info.pending_update_count} update(s) pending"
                )
            except TelegramError as error:
                lines.append(f"{names}: Telegram refused: {error.message}")
    return lines or ["no Telegram destination has replies on: nothing to do"]


async def delete_webhook(config: Config, settings: Settings) -> list[str]:
    lines = []
    for token, names in tokens(config, settings).items():
        async with Bot(token, base_url=f"{settings.telegram_api_url}/bot") as bot:
            try:
                answer = await bot.delete_webhook()
                lines.append(f"{names}: Telegram answered {'ok' if answer else 'not ok'}")
            except TelegramError as error:
                lines.append(f"{names}: Telegram refused: {error.message}")
    return lines or ["no Telegram destination has replies on: nothing to do"]
