"""Operator notices: a destination that fails for good is told to on-call once, not once per
message; so is a Telegram group that became a supergroup (the bridge follows it).

When a job is buried for a permanent reason (bad token, unknown channel, bot removed), the
alerts destinations get one notice naming the destination, the reason and what to do. A lane
per (destination, reason, target) makes it once per `repeat_interval`, whichever process saw
it first.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING

from bridge import render
from bridge.chat.base import DeliveryError, Permanent, Reason
from bridge.config import Config
from bridge.store import notify
from bridge.store import outbox as outbox_store
from bridge.store.db import Database

if TYPE_CHECKING:
    from bridge.deliveries import Delivery

NOTICE = "notice"


async def destination_failed(
    database: Database, config: Config, failing: str, error: DeliveryError, now: float
) -> int:
    """Plan a notice to every alerts destination but the failing one; return how many."""
    return await _plan(database, config, failing, error.reason, error.detail, now, {failing})


async def chat_moved(
    database: Database, config: Config, destination: str, detail: str, now: float
) -> int:
    """Plan a notice that `destination`'s chat moved (it works: it is told as well)."""
    return await _plan(database, config, destination, Reason.MOVED, detail, now, set())


async def _plan(
    database: Database,
    config: Config,
    destination: str,
    reason: Reason,
    detail: str,
    now: float,
    skip: set[str],
) -> int:
    if config.alerts is None:
        return 0
    top = config.alerts.top
    payload = json.dumps({"destination": destination, "reason": reason, "detail": detail})
    planned = 0
    async with database.transaction() as connection:
        for target in top.to:
            lane = f"{NOTICE}|{destination}|{reason}|{target}"
            if target in skip or await outbox_store.lane_used_since(
                database, connection, lane, now - top.repeat_interval
            ):
                continue
            planned += await outbox_store.enqueue(
                database,
                connection,
                event_id=None,
                destination=target,
                lane=lane,
                kind=NOTICE,
                now=now,
                payload=payload,
            )
        if planned:
            await notify.announce(database, connection)
    return planned


async def deliver_notice(delivery: Delivery) -> None:
    if delivery.job.payload is None:
        raise Permanent(Reason.CONFIG, f"notice job {delivery.job.id} has no content")
    notice = json.loads(delivery.job.payload)
    alerts = delivery.config.alerts
    destination = delivery.config.destinations.get(delivery.job.destination)
    mention = None
    if alerts is not None and destination is not None:
        mention = alerts.top.mention.get(destination.kind)
    if notice["reason"] == Reason.MOVED:
        post = render.chat_moved_post(notice["destination"], notice["detail"], mention)
    else:
        post = render.destination_failure_post(
            notice["destination"], notice["reason"], notice["detail"], mention
        )
    for part in delivery.adapter.render(post):
        await delivery.adapter.send(part, None)
