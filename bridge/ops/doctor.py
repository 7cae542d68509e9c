"""`smsbridge doctor`: check a live set-up end to end, one finding per check.

Each check returns `Finding`s (ok / problem / skipped, what was found, how to fix it); the
CLI only prints them. Checks talk to the real services through the same SDKs the bridge uses
(slack-sdk, python-telegram-bot, httpx) and never put a secret into a finding.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from urllib.parse import urlsplit

import aiohttp
import httpx
from slack_sdk.errors import SlackApiError
from slack_sdk.web.async_client import AsyncWebClient
from sqlalchemy.engine import make_url
from telegram import Bot, Chat, ChatFullInfo, ChatMember, ChatMemberAdministrator
from telegram.error import BadRequest, ChatMigrated, Forbidden, InvalidToken, TelegramError
from telegram.request import HTTPXRequest

from bridge import config as config_module
from bridge.chat.slack import TOKEN_REFUSED
from bridge.config import Config, ConfigError, SlackTarget, TelegramTarget
from bridge.errors import DeliveryError, Reason
from bridge.ops import telegram_setup
from bridge.settings import Settings, sqlite_on_ephemeral_disk
from bridge.smstools.api import SmstoolsApi
from bridge.store import events as events_store
from bridge.store.db import UNAVAILABLE, Database, describe_error
from bridge.store.migrations import LATEST, current_version

TIMEOUT = 10.0  # seconds for each call to a service
INTAKE_LATE = 60.0  # seconds a stored webhook body may wait for a worker to plan it


class Status(StrEnum):
    OK = "ok"
    PROBLEM = "problem"
    SKIPPED = "skipped"


@dataclass(frozen=True)
class Finding:
    """The outcome of one check: `what` was found and, for a problem, how to `fix` it."""

    check: str
    status: Status
    what: str
    fix: str | None = None

    def line(self) -> str:
        fix = f" → {self.fix}" if self.fix else ""
        return f"{self.status:<7} {self.check}: {self.what}{fix}"


def ok(check: str, what: str) -> Finding:
    return Finding(check, Status.OK, what)


def problem(check: str, what: str, fix: str | None) -> Finding:
    return Finding(check, Status.PROBLEM, what, fix)


def skipped(check: str, what: str, fix: str | None = None) -> Finding:
    return Finding(check, Status.SKIPPED, what, fix)


async def diagnose(settings: Settings, config_path: Path | None) -> list[Finding]:
    """Every check, in the order an operator fixes things: database, config, destinations,
    Smstools, the public URL. `config_path` None: the config the settings point at."""
    findings = await check_database(settings)
    environ = settings.environ
    config, config_findings = check_config(config_path, settings)
    findings += config_findings
    if config is None:
        findings.append(skipped("destinations", "not checked: the config is invalid"))
    else:
        checks = []
        missing = config_module.missing_tokens(config, environ)
        for name, destination in config.destinations.items():
            target = destination.target
            if name in missing:
                what = (
                    f"{missing[name]} is not set, so nothing is posted to {name}: its messages "
                    "wait in the outbox"
                )
                advice = config_module.token_advice(destination, missing[name])
                findings.append(problem(f"{destination.kind} {name}", what, advice))
            elif isinstance(target, SlackTarget):
                token = environ.get(target.token_env, "").strip()
                needed = needed_slack_scopes(config, name)
                checks.append(check_slack(name, target, token, settings.slack_api_url, needed))
            elif isinstance(target, TelegramTarget):
                token = environ.get(target.token_env, "").strip()
                checks.append(check_telegram(name, target, token, settings.telegram_api_url))
        for destination_findings in await asyncio.gather(*checks):
            findings += destination_findings
        findings += await check_telegram_updates(config, settings)
    if settings.slack_app_token is not None:
        findings.append(await check_slack_app_token(settings))
    findings.append(await check_smstools(settings))
    findings.append(await check_public_url(settings))
    return findings


# -- database and config -------------------------------------------------------------------


async def check_database(settings: Settings) -> list[Finding]:
    """The database answers and its schema is the one this code expects."""
    where = make_url(settings.database_url).render_as_string(hide_password=True)
    findings = []
    database = Database(settings.database_url)
    waiting: tuple[int, float | None] = (0, None)
    try:
        async with asyncio.timeout(TIMEOUT):
            async with database.transaction() as connection:
                version = await current_version(connection)
                if version == LATEST:
                    waiting = await events_store.waiting_backlog(connection)
    except TimeoutError:
        fix = "check DATABASE_URL, and that the server runs and accepts this machine"
        return [problem("database", f"{where} did not answer within {TIMEOUT:g} s", fix)]
    except UNAVAILABLE as error:
        fix = "check DATABASE_URL, and that the server runs and accepts this machine"
        return [problem("database", f"cannot use {where}: {describe_error(error)}", fix)]
    finally:
        await database.close()
    if version < LATEST:
        what = f"{where} answers; schema version {version}, {LATEST - version} step(s) behind"
        findings.append(problem("database", what, "run `smsbridge migrate`"))
    elif version > LATEST:
        what = f"{where} has schema version {version}, newer than this smsbridge ({LATEST})"
        findings.append(problem("database", what, "upgrade smsbridge"))
    else:
        findings.append(ok("database", f"{where} answers; schema version {version} (current)"))
        findings.append(intake_finding(*waiting, time.time()))
    if sqlite_on_ephemeral_disk(settings):
        what = f"SQLite on a disk this platform wipes at restart ({settings.ephemeral_disk} is set)"
        fix = "attach PostgreSQL and set DATABASE_URL to it"
        findings.append(problem("database", what, fix))
    return findings


def intake_finding(waiting: int, oldest: float | None, now: float) -> Finding:
    """Webhook bodies stored but not planned yet: a worker plans them within moments, so
    one waiting for a minute means no worker runs (or it cannot keep up)."""
    if not waiting or oldest is None:
        return ok("intake", "no webhook body waits to be planned")
    age = max(0.0, now - oldest)
    what = f"{waiting} webhook bodies wait to be planned, the oldest for {_minutes(age)}"
    if age < INTAKE_LATE:
        return ok("intake", what)
    fix = "start a worker (`smsbridge worker`, or `smsbridge serve` without --no-worker)"
    return problem("intake", f"{what}: no message or report in them reaches anyone", fix)


def _minutes(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.0f} s"
    return f"{seconds / 60:.0f} min" if seconds < 7200 else f"{seconds / 3600:.1f} h"


def check_config(path: Path | None, settings: Settings) -> tuple[Config | None, list[Finding]]:
    """The config as `check-config` loads it (`path`, else the one the settings point at):
    one problem per broken key, each line saying what to write instead, with a fix where the
    line alone does not say it."""
    try:
        if path is not None:
            config = config_module.load(path, settings.environ)
        else:
            config = config_module.from_settings(settings)
    except ConfigError as error:
        return None, [
            problem("config", line, fix)
            for line, fix in zip(error.problems, error.fixes, strict=True)
        ]
    count = len(config.destinations)
    return config, [ok("config", f"{config.source} is valid ({count} destination(s))")]


# -- Slack ---------------------------------------------------------------------------------


def needed_slack_scopes(config: Config, destination: str) -> dict[str, str]:
    """The bot token scopes a Slack destination needs for what the config has it do, with why.

    The one rule for scopes: a feature that calls another Slack method adds its scope here.
    Optional ones are not asked for: without `chat:write.customize` customer posts keep the
    bot's name, and without `channels:history` a job taken over after a crash posts without
    first looking for its earlier post.
    """
    needed = {"chat:write": "to post"}
    settings = config.destinations.get(destination)
    if settings is not None and settings.replies is not None:
        needed["channels:history"] = (
            "to receive agents' answers in threads; groups:history in a private channel"
        )
        needed["reactions:write"] = "to show each answer's status on the agent's message"
        needed["users:read"] = "to turn @mentions in answers into names"
    return needed


async def check_slack(
    name: str, target: SlackTarget, token: str, api_url: str, needed: Mapping[str, str]
) -> list[Finding]:
    """Token (auth.test), scopes (its `x-oauth-scopes` header), channel and membership."""
    check = f"slack {name}"
    client = AsyncWebClient(token=token, base_url=api_url, timeout=int(TIMEOUT), retry_handlers=[])
    try:
        auth = await client.auth_test()
    except SlackApiError as error:
        code = error.response.get("error")
        if code in TOKEN_REFUSED:
            fix = (
                f"copy the Bot User OAuth Token (xoxb-…) from the Slack app's OAuth & "
                f"Permissions page into {target.token_env}"
            )
            return [problem(check, f"Slack refused the token in {target.token_env} ({code})", fix)]
        return [_slack_unavailable(check, error)]
    except (aiohttp.ClientError, TimeoutError, OSError) as error:
        return [_slack_unavailable(check, error)]
    bot, team = auth.get("user", "the bot"), auth.get("team", "the workspace")
    findings = [ok(check, f"token in {target.token_env} accepted (@{bot} in {team})")]
    findings.append(_slack_scopes(check, auth.headers.get("x-oauth-scopes"), needed))
    findings.append(await _slack_channel(check, client, name, target.channel, str(bot)))
    return findings


def _slack_scopes(check: str, header: str | None, needed: Mapping[str, str]) -> Finding:
    if header is None:
        return skipped(check, "Slack did not list the token's scopes")
    granted = {scope.strip() for scope in header.split(",")}
    missing = [scope for scope in needed if scope not in granted]
    if missing:
        names = ", ".join(missing)
        why = "; ".join(f"{scope} {needed[scope]}" for scope in missing)
        why = needed[missing[0]] if len(missing) == 1 else why
        fix = (
            f"add {names} under OAuth & Permissions → Bot Token Scopes, reinstall the app, "
            "and copy the token again if it changed"
        )
        return problem(check, f"the token lacks {names} ({why})", fix)
    return ok(check, f"the token has the scopes the config needs ({', '.join(needed)})")


async def _slack_channel(
    check: str, client: AsyncWebClient, name: str, channel: str, bot: str
) -> Finding:
    try:
        info = await client.conversations_info(channel=channel)
    except SlackApiError as error:
        code = error.response.get("error")
        if code == "channel_not_found":
            fix = (
                f"set destinations.{name}.slack.channel to the channel ID (C0…, at the bottom "
                f"of the channel's details); for a private channel, invite @{bot} first"
            )
            return problem(check, f"channel {channel} not found", fix)
        if code == "missing_scope":
            lacking = error.response.get("needed")
            what = f"cannot look at channel {channel}: the token lacks {lacking}"
            fix = "add channels:read and groups:read so doctor can check the channel"
            return skipped(check, what, fix)
        return _slack_unavailable(check, error)
    except (aiohttp.ClientError, TimeoutError, OSError) as error:
        return _slack_unavailable(check, error)
    details = info.get("channel") or {}
    shown = f"#{details.get('name', channel)} ({channel})"
    if details.get("is_archived"):
        return problem(check, f"channel {shown} is archived", "unarchive it or configure another")
    if not details.get("is_member"):
        fix = f"type /invite @{bot} in #{details.get('name', channel)}"
        return problem(check, f"@{bot} is not a member of channel {shown}", fix)
    return ok(check, f"channel {shown} exists and @{bot} is a member")


async def check_slack_app_token(settings: Settings) -> Finding:
    """SLACK_APP_TOKEN opens Socket Mode connections (`apps.connections.open` hands out a URL,
    which is left unused)."""
    check = "slack socket mode"
    assert settings.slack_app_token is not None
    client = AsyncWebClient(
        base_url=settings.slack_api_url, timeout=int(TIMEOUT), retry_handlers=[]
    )
    try:
        await client.apps_connections_open(app_token=settings.slack_app_token.get_secret_value())
    except SlackApiError as error:
        code = error.response.get("error")
        if code in (*TOKEN_REFUSED, "not_allowed_token_type"):
            fix = (
                "generate an app-level token with the scope connections:write under the Slack "
                "app's Basic Information → App-Level Tokens, and put it (xapp-…) in "
                "SLACK_APP_TOKEN"
            )
            return problem(check, f"Slack refused the token in SLACK_APP_TOKEN ({code})", fix)
        if code is not None:
            fix = (
                "turn Socket Mode on in the Slack app's settings (or create the app from "
                "config/slack-app-manifest-socket-mode.yaml)"
            )
            return problem(check, f"Slack cannot open a Socket Mode connection ({code})", fix)
        return _slack_unavailable(check, error)
    except (aiohttp.ClientError, TimeoutError, OSError) as error:
        return _slack_unavailable(check, error)
    return ok(check, "the token in SLACK_APP_TOKEN opens Socket Mode connections")


def _slack_unavailable(check: str, error: Exception) -> Finding:
    if isinstance(error, SlackApiError):
        code = error.response.get("error") or f"HTTP {error.response.status_code}"
        return problem(check, f"Slack answered {code}", "see https://api.slack.com/methods")
    what = f"Slack did not answer ({type(error).__name__})"
    return problem(check, what, "check this machine's network and SLACK_API_URL")


# -- Telegram ------------------------------------------------------------------------------


async def check_telegram(
    name: str, target: TelegramTarget, token: str, api_url: str
) -> list[Finding]:
    """Token (getMe), chat (getChat), topics on (`is_forum`), the bot's rights (getChatMember)."""
    check = f"telegram {name}"
    request = HTTPXRequest(
        connect_timeout=TIMEOUT, read_timeout=TIMEOUT, write_timeout=TIMEOUT, pool_timeout=TIMEOUT
    )
    fix = f"copy the token from @BotFather (/mybots → API Token) into {target.token_env}"
    refused = problem(check, f"Telegram refused the token in {target.token_env}", fix)
    try:
        bot = Bot(token, base_url=f"{api_url}/bot", request=request)
    except InvalidToken:  # its message quotes the token: never shown
        return [refused]
    try:
        await bot.initialize()  # getMe
    except InvalidToken:
        return [refused]
    except TelegramError as error:
        return [_telegram_unavailable(check, error)]
    else:
        findings = [ok(check, f"token in {target.token_env} accepted (@{bot.username})")]
        return findings + await _telegram_chat(check, bot, name, target)
    finally:
        await bot.shutdown()


async def _telegram_chat(check: str, bot: Bot, name: str, target: TelegramTarget) -> list[Finding]:
    handle = f"@{bot.username}"
    try:
        chat = await bot.get_chat(target.chat_id)
        member = await bot.get_chat_member(target.chat_id, bot.id)
    except ChatMigrated as error:
        what = f"chat {target.chat_id} became a supergroup with id {error.new_chat_id}"
        return [problem(check, what, f"set destinations.{name}.telegram.chat_id to that id")]
    except Forbidden:
        what = f"{handle} was removed from chat {target.chat_id}"
        return [problem(check, what, f"add {handle} to the chat again")]
    except BadRequest as error:
        if "chat not found" in error.message.lower():
            fix = f"check destinations.{name}.telegram.chat_id and add {handle} to the chat"
            return [problem(check, f"chat {target.chat_id} not found", fix)]
        return [_telegram_unavailable(check, error)]
    except TelegramError as error:
        return [_telegram_unavailable(check, error)]
    shown = f'"{chat.title}"' if chat.title else f"chat {target.chat_id}"
    findings = [ok(check, f"chat {target.chat_id} found: {shown} ({chat.type})")]
    if target.topics:
        findings.append(_telegram_topics(check, chat, shown, name))
    rights = _telegram_rights(check, chat, member, shown, handle, target.topics)
    if rights is not None:
        findings.append(rights)
    return findings


def _telegram_topics(check: str, chat: ChatFullInfo, shown: str, name: str) -> Finding:
    if chat.type == Chat.SUPERGROUP and chat.is_forum:
        return ok(check, f"Topics are on in {shown}")
    fix = (
        "turn on Topics in the group's settings (a group becomes a supergroup: check chat_id "
        f"again), or set destinations.{name}.telegram.topics to false"
    )
    return problem(check, f"topics: true, but Topics are off in {shown}", fix)


def _telegram_rights(
    check: str, chat: ChatFullInfo, member: ChatMember, shown: str, handle: str, topics: bool
) -> Finding | None:
    """What the bot must be: an admin that manages topics (topics), an admin that posts
    (channels), else a member."""
    if chat.type == Chat.PRIVATE:
        return None
    if member.status in (ChatMember.LEFT, ChatMember.BANNED):
        return problem(check, f"{handle} is not in {shown}", f"add {handle} to {shown}")
    if member.status == ChatMember.OWNER:
        return ok(check, f"{handle} owns {shown}")
    admin = member if isinstance(member, ChatMemberAdministrator) else None
    if topics and not (admin is not None and admin.can_manage_topics):
        what = f"{handle} is not an admin of {shown} with the Manage topics right"
        if admin is not None:
            what = f"{handle} is an admin of {shown} without the Manage topics right"
        fix = f"make {handle} an admin with Manage topics (it opens a topic per conversation)"
        return problem(check, what, fix)
    if chat.type == Chat.CHANNEL and not (admin is not None and admin.can_post_messages):
        fix = f"make {handle} an admin of the channel with Post messages"
        return problem(check, f"{handle} cannot post in channel {shown}", fix)
    if topics:
        return ok(check, f"{handle} is an admin of {shown} that can manage topics")
    return ok(check, f"{handle} is a {member.status} of {shown}")


async def check_telegram_updates(config: Config, settings: Settings) -> list[Finding]:
    """How agents' Telegram messages arrive (TELEGRAM_UPDATES), for each bot taking replies;
    in polling mode, a webhook still set (getWebhookInfo) is a problem: Telegram refuses
    getUpdates while it is."""
    findings = []
    for token, names in telegram_setup.tokens(config, settings).items():
        check = f"telegram updates ({names})"
        if settings.telegram_updates == "webhook":
            what = "webhook mode: Telegram posts them to /telegram/webhook (TELEGRAM_UPDATES)"
            findings.append(ok(check, what))
            continue
        request = HTTPXRequest(connect_timeout=TIMEOUT, read_timeout=TIMEOUT, write_timeout=TIMEOUT)
        try:
            async with Bot(
                token, base_url=f"{settings.telegram_api_url}/bot", request=request
            ) as bot:
                info = await bot.get_webhook_info()
        except InvalidToken:
            continue  # the destination's own check says so
        except TelegramError as error:
            findings.append(_telegram_unavailable(check, error))
            continue
        if info.url:
            what = f"polling mode, but a webhook is still set ({info.url}): getUpdates is refused"
            fix = (
                "start the bridge (its poller deletes the webhook) or run smsbridge telegram "
                "delete-webhook; to keep the webhook, set TELEGRAM_UPDATES=webhook"
            )
            findings.append(problem(check, what, fix))
        else:
            findings.append(ok(check, "polling mode: one process polls getUpdates; no webhook set"))
    return findings


def _telegram_unavailable(check: str, error: TelegramError) -> Finding:
    what = f"Telegram answered: {error.message}"
    return problem(check, what, "check this machine's network and TELEGRAM_API_URL")


# -- Smstools and the public URL -----------------------------------------------------------


async def check_smstools(settings: Settings) -> Finding:
    """The API credentials, when set: `GET /balance` accepts them; the balance is shown."""
    check = "smstools api"
    client_id, secret = settings.smstools_client_id, settings.smstools_client_secret
    if client_id is None and secret is None:
        what = "SMSTOOLS_CLIENT_ID and SMSTOOLS_CLIENT_SECRET are not set (optional for now)"
        return skipped(check, what)
    api = SmstoolsApi.from_settings(settings)
    if api is None:
        missing = "SMSTOOLS_CLIENT_SECRET" if secret is None else "SMSTOOLS_CLIENT_ID"
        fix = "set both, from the Smstools dashboard's API settings"
        return problem(check, f"{missing} is not set, but the other one is", fix)
    async with api:
        try:
            balance = await api.balance()
        except DeliveryError as error:
            code = getattr(error, "code", None)
            if error.reason is Reason.AUTH:
                fix = (
                    "copy the API client id and secret from the Smstools dashboard into "
                    "SMSTOOLS_CLIENT_ID and SMSTOOLS_CLIENT_SECRET"
                )
                what = f"Smstools refused the credentials (error {code or error.reason})"
                return problem(check, what, fix)
            if error.reason is Reason.FORBIDDEN:
                fix = "allow this machine's IP address in the Smstools API settings"
                return problem(check, error.detail, fix)
            return problem(check, error.detail, "try again later, or check SMSTOOLS_API_URL")
    return ok(check, f"credentials accepted; balance {balance}")


async def check_public_url(settings: Settings) -> Finding:
    """`BRIDGE_PUBLIC_URL/healthz` answers from here, when the variable is set."""
    check = "public url"
    if settings.public_url is None:
        return skipped(check, "BRIDGE_PUBLIC_URL is not set; the printed webhook URL is local")
    url = f"{settings.public_url}/healthz"
    fix = "set BRIDGE_PUBLIC_URL to the address the web process is served at"
    try:
        async with httpx.AsyncClient(timeout=TIMEOUT, follow_redirects=True) as client:
            response = await client.get(url)
    except httpx.HTTPError as error:
        return problem(check, f"{url} did not answer ({type(error).__name__})", fix)
    try:
        healthy = response.status_code == 200 and response.json() == {"status": "ok"}
    except ValueError:
        healthy = False
    if not healthy:
        return problem(check, f"{url} answered HTTP {response.status_code}, not the bridge", fix)
    parts = urlsplit(settings.public_url)
    if parts.scheme != "https" and parts.hostname not in ("localhost", "127.0.0.1", "::1"):
        fix = "serve it over https: the webhook URL carries its secret token"
        return problem(check, f"{url} answers, but over {parts.scheme}", fix)
    return ok(check, f"{url} answers")
