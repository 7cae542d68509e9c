"""Operator notices: a destination that fails for good is told to on-call once, not once per
message; so is a Telegram group that became a supergroup (the bridge follows it).

When a job is buried for a permanent reason (bad token, unknown channel, bot removed), the
alerts destinations get one notice naming the destination, the reason and what to do. One
lane per (destination, reason, target) makes it once per `repeat_interval`, whichever process
saw it first.
"""

from __future__ import annotations

from collections.abc import Collection

from bridge.config import Config
from bridge.errors import DeliveryError, Reason
from bridge.jobs import NoticeJob, lane
from bridge.store import outbox as outbox_store
from bridge.store import wakeups as wakeups_store
from bridge.store.db import Database


async def destination_failed(
    database: Database, config: Config, failing: str, error: DeliveryError, now: float
) -> int:
    """Plan a notice to every alerts destination but the failing one; return how many."""
    notice = NoticeJob(failing=failing, reason=error.reason, detail=error.detail)
    return await _plan(database, config, notice, now, skip={failing})


async def chat_moved(
    database: Database, config: Config, destination: str, detail: str, now: float
) -> int:
    """Plan a notice that `destination`'s chat moved to every alerts destination (the moved
    one too: it works, at its new id); return how many."""
    notice = NoticeJob(failing=destination, reason=Reason.MOVED, detail=detail)
    return await _plan(database, config, notice, now, skip=())


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
