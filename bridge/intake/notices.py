"""Operator notices: a destination that fails for good is told to on-call once, not once per
message; so is a Telegram group that became a supergroup (the bridge follows it), and gateway
events stored but not understood (once per webhook type and reason).

When a job is buried for a permanent reason (bad token, unknown channel, bot removed), the
alerts destinations get one notice naming the destination, the reason and what to do. One
lane per (destination, reason, target) makes it once per `repeat_interval`, whichever process
saw it first.
"""

from __future__ import annotations

import logging
from collections.abc import Collection, Iterable

from bridge.config import Config
from bridge.errors import DeliveryError, Reason
from bridge.jobs import NOT_UNDERSTOOD, NoticeJob, lane
from bridge.store import outbox as outbox_store
from bridge.store import wakeups as wakeups_store
from bridge.store.db import Database

log = logging.getLogger(__name__)


async def destination_failed(
    database: Database, config: Config, failing: str, error: DeliveryError, now: float
) -> int:
    """Plan a notice to every alerts destination but the failing one; return how many."""
    notice = NoticeJob(failing=failing, reason=error.reason, detail=error.detail)
    return await _plan(database, config, notice, now, skip={failing})


async def chat_moved(
    database: Database,
    config: Config,
    destination: str,
    chats: tuple[str, str],
    detail: str,
    now: float,
) -> int:
    """Plan a notice that `destination`'s chat moved (`chats`: its old and new id) to every
    alerts destination (the moved one too: it works, at its new id); return how many."""
    old_chat, new_chat = chats
    notice = NoticeJob(
        failing=destination,
        reason=Reason.MOVED,
        detail=detail,
        old_chat=old_chat,
        new_chat=new_chat,
    )
    return await _plan(database, config, notice, now, skip=())


class NotUnderstood:
    """Tells on-call about webhook events stored but not understood: one notice per (webhook
    type, reason) per `repeat_interval`, whichever process saw the event first.

    Remembers what this process told lately, so a stream of events with the same fault costs
    the webhook path no database call after the first one of each interval.
    """

    REMEMBERED = 1000  # reasons; past this the oldest are forgotten (and asked the database)

    def __init__(self, database: Database, config: Config) -> None:
        self.database, self.config = database, config
        self._told: dict[tuple[str, str], float] = {}

    async def tell(self, problems: Iterable[tuple[str | None, str]], now: float) -> int:
        """Plan the notices `problems` ((webhook type, reason) pairs) call for; return how
        many. Never raises: the events are stored already, and a notice is not worth a 5xx."""
        if self.config.alerts is None:
            return 0
        interval = self.config.alerts.top.repeat_interval
        planned = 0
        for kind, problem in dict.fromkeys((kind or "", problem) for kind, problem in problems):
            if now - self._told.get((kind, problem), -interval) < interval:
                continue
            notice = NoticeJob(failing=kind, reason=NOT_UNDERSTOOD, detail=problem)
            try:
                planned += await _plan(self.database, self.config, notice, now, skip=())
            except Exception:
                log.exception("could not plan the notice of events not understood")
                continue
            self._told[(kind, problem)] = now
            if len(self._told) > self.REMEMBERED:
                del self._told[min(self._told, key=self._told.__getitem__)]
        return planned


async def _plan(
    database: Database, config: Config, notice: NoticeJob, now: float, skip: Collection[str]
) -> int:
    if config.alerts is None:
        return 0
    top = config.alerts.top
    planned = 0
    async with database.transaction() as connection:
        for target in top.to:
            if target in skip or await outbox_store.notice_lane_used_since(
                database, connection, lane(target, notice), now - top.repeat_interval
            ):
                continue
            planned += await outbox_store.enqueue(
                database, connection, event_id=None, destination=target, payload=notice, now=now
            )
        if planned:
            await wakeups_store.announce(database, connection)
    return planned
