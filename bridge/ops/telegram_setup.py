"""`smsbridge telegram set-webhook | delete-webhook`: tell Telegram where agents' messages go.

`setWebhook` carries TELEGRAM_WEBHOOK_SECRET as `secret_token` (Telegram sends it back in
`X-Telegram-Bot-Api-Secret-Token`, which `/telegram/webhook` checks) and asks only for new
messages. Done once per bot token of the Telegram destinations with `replies` on.
"""

from __future__ import annotations

from telegram import Bot
from telegram.error import TelegramError

from bridge.config import Config, TelegramTarget
from bridge.settings import Settings

PATH = "/telegram/webhook"
ALLOWED_UPDATES = ["message"]


def tokens(config: Config, settings: Settings) -> dict[str, str]:
    """Bot token → the destinations that use it, for Telegram destinations with replies on."""
    found: dict[str, list[str]] = {}
    for destination in config.destinations.values():
        target = destination.target
        if isinstance(target, TelegramTarget) and destination.replies is not None:
            token = settings.environ.get(target.token_env, "").strip()
            found.setdefault(token, []).append(destination.name)
    return {token: ", ".join(names) for token, names in found.items() if token}


async def set_webhook(config: Config, settings: Settings, url: str | None) -> list[str]:
    """Register the webhook for each bot; one line per bot saying what Telegram answered."""
    if settings.telegram_webhook_secret is None:
        return ["TELEGRAM_WEBHOOK_SECRET is not set: choose a random secret and set it first"]
    base = url or (settings.public_url and settings.public_url + PATH)
    if not base:
        return ["give the URL (--url https://…/telegram/webhook) or set BRIDGE_PUBLIC_URL"]
    lines = []
    for token, names in tokens(config, settings).items():
        async with Bot(token, base_url=f"{settings.telegram_api_url}/bot") as bot:
            try:
                answer = await bot.set_webhook(
                    base,
                    secret_token=settings.telegram_webhook_secret.get_secret_value(),
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
