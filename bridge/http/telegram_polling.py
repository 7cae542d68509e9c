"""Telegram long polling (TELEGRAM_UPDATES=polling): agents' messages with no public URL.

One process per bot polls: the one holding the named hold `telegram-poller:<bot id>`, renewed
while it polls; another takes over once a holder stops renewing. The holder deletes the bot's
webhook (Telegram refuses getUpdates while one is set), then asks getUpdates with a long
timeout from the stored offset. Each update goes the webhook's way
(`agent_messages.plan_telegram_update`: stored once per bot, then planned), and the offset
moves on only once they are stored: an update is at worst received again, and then it is a
duplicate. A 409 means someone else polls the bot (or set a webhook): wait, never crash.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from dataclasses import dataclass, field

from telegram import Bot, Update
from telegram.error import Conflict, Forbidden, InvalidToken, TelegramError
from telegram.request import HTTPXRequest

from bridge.config import Config
from bridge.http.chat_events import woken_when_planned
from bridge.intake import agent_messages
from bridge.retry import backoff
from bridge.store import facts as facts_store
from bridge.store import holds
from bridge.store.db import UNAVAILABLE, Database, describe_error

log = logging.getLogger(__name__)

# What makes a failed round wait and go again: Telegram's answer, the network, the database.
_FAILURES: tuple[type[Exception], ...] = (TelegramError, *UNAVAILABLE)
ALLOWED_UPDATES = ["message"]  # as the webhook asks (`telegram_setup.ALLOWED_UPDATES`)
POLL_TIMEOUT = 25  # seconds Telegram keeps a getUpdates open while nothing comes
HOLD_TTL = 15.0  # seconds a poller's hold outlives its last renewal
REQUEST_TIMEOUT = 10.0  # seconds for connecting and, beyond POLL_TIMEOUT, for the answer
FIRST_RETRY, LAST_RETRY = 1.0, 60.0  # seconds: the backoff after a failed getUpdates


def hold_name(bot: str) -> str:
    """The hold that makes one process the bot's poller."""
    return f"telegram-poller:{bot}"


@dataclass
class TelegramPoller:
    """Polls one bot while this process (`holder`) holds its hold; `run` until cancelled.

    `on_stored` is called when an update planned a reply (to wake the worker). The hold is
    renewed every third of `HOLD_TTL`; it is released on the way out, so another process
    need not wait it out after a clean stop."""

    database: Database
    config: Config
    token: str = field(repr=False)
    api_url: str
    holder: str
    on_stored: Callable[[], None]
    now: Callable[[], float] = time.time
    _said: set[str] = field(default_factory=set, repr=False, init=False)  # logged, said once

    @property
    def bot(self) -> str:
        """The bot's id: the digits before the token's colon."""
        return self.token.split(":", 1)[0]

    @property
    def name(self) -> str:
        return hold_name(self.bot)

    async def run(self) -> None:
        """Wait for the hold, poll while it is held, wait again if it is lost."""
        failures = 0
        try:
            while True:
                try:
                    if await self._take():
                        self._said.discard("waiting")
                        self._say("holding", "Telegram bot %s: this process polls", self.bot)
                        await self._poll_while_held()
                        self._said.discard("holding")
                    else:
                        self._say("waiting", "Telegram bot %s: another process polls", self.bot)
                        await asyncio.sleep(HOLD_TTL / 3)
                    failures = 0
                except UNAVAILABLE as error:
                    log.warning("Telegram polling: database: %s", describe_error(error))
                    await asyncio.sleep(self._backoff(failures))
                    failures += 1
                except Exception:  # a poller that stops would leave agents unheard
                    log.exception("Telegram bot %s: polling failed; starting again", self.bot)
                    await asyncio.sleep(self._backoff(failures))
                    failures += 1
        finally:
            await self._release()

    async def _take(self) -> bool:
        async with self.database.transaction() as connection:
            return await holds.take(
                self.database,
                connection,
                self.name,
                self.holder,
                now=self.now(),
                ttl=HOLD_TTL,
            )

    async def _release(self) -> None:
        try:
            async with self.database.transaction() as connection:
                await holds.release(connection, self.name, self.holder)
        except UNAVAILABLE as error:  # it lapses by itself within HOLD_TTL
            log.warning("Telegram polling: could not release the hold: %s", describe_error(error))

    async def _poll_while_held(self) -> None:
        """Poll until the hold cannot be renewed (another process took it, or the database
        cannot say)."""
        polling = asyncio.create_task(self._poll(), name=f"{self.name} getUpdates")
        try:
            while True:
                done, _ = await asyncio.wait({polling}, timeout=HOLD_TTL / 3)
                if done or not await self._take():
                    break
        finally:
            polling.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await polling
        if not polling.cancelled():
            polling.result()  # what ended the polling, raised here

    async def _poll(self) -> None:
        """getUpdates from the stored offset, storing what comes, until cancelled."""
        async with self.database.transaction() as connection:
            offset = await facts_store.telegram_offset(connection, self.bot)
        requests = [
            HTTPXRequest(connect_timeout=REQUEST_TIMEOUT, read_timeout=REQUEST_TIMEOUT)
            for _ in range(2)  # Bot's own, and its getUpdates one
        ]
        bot = Bot(
            self.token,
            base_url=f"{self.api_url}/bot",
            request=requests[0],
            get_updates_request=requests[1],
        )
        webhook_deleted, failures = False, 0
        try:
            while True:
                try:
                    if not webhook_deleted:
                        webhook_deleted = await bot.delete_webhook()
                    updates = await bot.get_updates(
                        offset=offset, timeout=POLL_TIMEOUT, allowed_updates=ALLOWED_UPDATES
                    )
                    offset = await self._store(updates, offset)
                except _FAILURES as error:
                    await asyncio.sleep(self._failed(error, failures))
                    failures += 1
                else:
                    failures = 0
                    self._said.difference_update(("conflict", "refused", "failing"))
        finally:
            # Not `bot.shutdown()`: it closes nothing for a bot never initialized (getMe).
            for request in requests:
                await request.shutdown()

    async def _store(self, updates: Sequence[Update], offset: int | None) -> int | None:
        """Plan each update, then move the offset past them; the offset as it is now."""
        if not updates:
            return offset
        for update in updates:
            planning = agent_messages.plan_telegram_update(
                self.database, self.config, bot=self.bot, update=update.to_dict(), now=self.now()
            )
            await woken_when_planned(planning, self.on_stored)
        offset = updates[-1].update_id + 1
        async with self.database.transaction() as connection:
            # Saved only by the holder: a poller that lost its hold leaves the offset alone.
            if await holds.take(
                self.database, connection, self.name, self.holder, now=self.now(), ttl=HOLD_TTL
            ):
                await facts_store.remember_telegram_offset(
                    self.database, connection, self.bot, offset
                )
        return offset

    def _failed(self, error: Exception, failures: int) -> float:
        """Log what went wrong (once for what persists) and the seconds to wait."""
        if isinstance(error, Conflict):
            self._say(
                "conflict",
                "Telegram bot %s: getUpdates refused (409: %s); another process polls this bot "
                "or a webhook is set; waiting",
                self.bot,
                error.message,
            )
        elif isinstance(error, InvalidToken | Forbidden):
            self._say("refused", "Telegram bot %s: the token was refused; waiting", self.bot)
            return LAST_RETRY
        elif isinstance(error, TelegramError):
            self._say("failing", "Telegram bot %s: getUpdates failed: %s", self.bot, error.message)
        else:
            log.warning("Telegram bot %s: database: %s", self.bot, describe_error(error))
        return self._backoff(failures)

    def _backoff(self, failures: int) -> float:
        return backoff(failures, first=FIRST_RETRY, cap=LAST_RETRY, rand=random.random)

    def _say(self, what: str, message: str, *args: object) -> None:
        """Log `message` unless `what` was said and has not been resolved since."""
        if what not in self._said:
            self._said.add(what)
            log.log(logging.INFO if what == "holding" else logging.WARNING, message, *args)


def pollers(
    database: Database,
    config: Config,
    tokens: Mapping[str, str],
    *,
    api_url: str,
    holder: str,
    on_stored: Callable[[], None],
    now: Callable[[], float] = time.time,
) -> list[TelegramPoller]:
    """One poller per bot token (`tokens`: token → the destinations using it)."""
    return [
        TelegramPoller(database, config, token, api_url, holder, on_stored, now) for token in tokens
    ]


@contextlib.asynccontextmanager
async def polling(running: Sequence[TelegramPoller]) -> AsyncIterator[None]:
    """Each poller runs as a task for the duration; cancelled and awaited on the way out."""
    tasks = [asyncio.create_task(poller.run(), name=poller.name) for poller in running]
    try:
        yield
    finally:
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
