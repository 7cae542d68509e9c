"""What each kind of outbox job does once claimed: one handler per kind.

A handler gets the job, its event and the destination's adapter, and raises `Retryable` or
`Permanent` when it cannot finish. The worker owns claiming, retries and bookkeeping.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from bridge import alerts, notices, render, reports, threads
from bridge.chat.base import ChatAdapter, Permanent, Reason
from bridge.config import Config
from bridge.phones import mask
from bridge.routing import number_key
from bridge.smstools import DeliveryReport, InboxMessage, ReadReport, Unparsed
from bridge.store.db import Database
from bridge.store.outbox import Job

log = logging.getLogger(__name__)

INBOX = "inbox"

ParsedEvent = InboxMessage | DeliveryReport | ReadReport | Unparsed


@dataclass(frozen=True)
class Delivery:
    """Everything a handler may use for one job."""

    database: Database
    config: Config
    adapter: ChatAdapter
    job: Job
    event: ParsedEvent | None  # None for jobs that carry their own payload (notices)
    received_at: float
    now: Callable[[], float]


async def deliver_inbox(delivery: Delivery) -> None:
    """A customer message into its conversation's thread."""
    event = delivery.event
    if not isinstance(event, InboxMessage):
        raise Permanent(Reason.CONFIG, f"job {delivery.job.id} is not an inbox message")
    job = delivery.job
    sender = number_key(event.message.sender)
    conversation = await threads.current_conversation(
        delivery.database,
        job.destination,
        number_key(event.message.receiver),
        sender,
        at=delivery.received_at,
        idle_after=delivery.config.idle_after,
    )
    await threads.post_in_thread(
        delivery.database,
        delivery.adapter,
        conversation,
        delivery.adapter.render(render.inbox_post(event, delivery.config)),
        title=render.thread_title(event),
        outbox_id=job.id,
        gateway_messageid=event.message.id or None,
        at=delivery.received_at,
        now=delivery.now(),
    )
    log.info(
        "delivered inbox message from %s to %s (job %d)", mask(sender), job.destination, job.id
    )


HANDLERS: dict[str, Callable[[Delivery], Awaitable[None]]] = {
    INBOX: deliver_inbox,
    alerts.ALERT: alerts.deliver_alert,
    reports.FAILURE_NOTE: reports.deliver_failure_note,
    reports.READ: reports.deliver_read,
    notices.NOTICE: notices.deliver_notice,
}
