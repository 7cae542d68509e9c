"""What each kind of outbox job does once claimed: one handler per kind, assembled in
`HANDLERS`.

A handler gets a `Delivery` (the job, its event, the destination's adapter) and raises
`Retryable` or `Permanent` when it cannot finish. The worker owns claiming, retries and
bookkeeping; what to post is `render`'s, where in the conversation is `threads`'.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from dataclasses import replace
from typing import TypeVar

from bridge import alerts, phones, render, threads
from bridge.alerts import Action
from bridge.chat.base import MessageGone, Sent
from bridge.errors import Permanent, Reason
from bridge.jobs import (
    AlertJob,
    CreditJob,
    Delivery,
    FailureNoteJob,
    InboxJob,
    Kind,
    NoticeJob,
    ReadJob,
)
from bridge.smstools import DeliveryReport, InboxMessage, ReadReport
from bridge.store import alerts as alerts_store
from bridge.store import conversations as conversations_store
from bridge.store import outbox as outbox_store
from bridge.store import reports as reports_store

log = logging.getLogger(__name__)

READ_EMOJI = "👀"  # Slack `eyes`; one of Telegram's allowed reactions


P = TypeVar("P", InboxJob, FailureNoteJob, ReadJob, AlertJob, NoticeJob, CreditJob)
E = TypeVar("E", InboxMessage, DeliveryReport, ReadReport)


def _payload(delivery: Delivery, kind: type[P]) -> P:
    payload = delivery.job.payload
    if not isinstance(payload, kind):
        raise Permanent(Reason.CONFIG, f"job {delivery.job.id} has no {kind.kind} payload")
    return payload


def _event(delivery: Delivery, kind: type[E]) -> E:
    if not isinstance(delivery.event, kind):
        raise Permanent(Reason.CONFIG, f"job {delivery.job.id} is not a {kind.__name__} job")
    return delivery.event


async def deliver_inbox(delivery: Delivery) -> None:
    """A customer message into its conversation's thread."""
    event = _event(delivery, InboxMessage)
    key = _payload(delivery, InboxJob).conversation
    job = delivery.job
    conversation = await threads.current_conversation(
        delivery.database,
        job.destination,
        key.receiver,
        key.sender,
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
        "delivered inbox message from %s to %s (job %d)",
        phones.mask(key.sender),
        job.destination,
        job.id,
        extra={
            "event_id": job.event_id,
            "webhook_type": "inbox_message",
            "destination": job.destination,
            "job_id": job.id,
            "outcome": "delivered",
        },
    )


async def deliver_failure_note(delivery: Delivery) -> None:
    """The failure, noted in the customer's live thread at this destination."""
    event = _event(delivery, DeliveryReport)
    note = _payload(delivery, FailureNoteJob)
    async with delivery.database.transaction() as connection:
        conversation = await conversations_store.get(connection, note.conversation_id)
    if conversation is None or conversation.thread is None:
        return  # the thread went away since: nothing to add to
    await threads.post_in_thread(
        delivery.database,
        delivery.adapter,
        conversation,
        delivery.adapter.render(render.failure_note_post(event)),
        title=phones.international(conversation.sender),
        outbox_id=delivery.job.id,
        gateway_messageid=None,
        # The note does not keep the conversation alive: only customer messages do.
        at=conversation.last_message_at,
        now=delivery.now(),
    )


async def deliver_read(delivery: Delivery) -> None:
    """Mark the chat message that shows the gateway message as read (👀)."""
    messageid = _payload(delivery, ReadJob).messageid
    job = delivery.job
    async with delivery.database.transaction() as connection:
        shown = await reports_store.shown_at(connection, messageid)
    places = [place for place in shown if place.destination == job.destination]
    for place in places:
        await delivery.adapter.react(Sent(place.chat, place.message, place.message), READ_EMOJI)
    async with delivery.database.transaction() as connection:
        await reports_store.count_read_shown(connection, messageid, len(places))


async def deliver_alert(delivery: Delivery) -> None:
    """Post the group's alert, or edit the one posted, then plan the next if it grew."""
    job, database = delivery.job, delivery.database
    group_id = _payload(delivery, AlertJob).group_id
    if delivery.config.alerts is None:
        raise Permanent(Reason.CONFIG, "alerts are no longer configured")
    async with database.transaction() as connection:
        loaded = await alerts_store.load(connection, group_id, job.destination)
    if loaded is None:
        raise Permanent(Reason.CONFIG, f"alert group {group_id} of job {job.id} is missing")
    group, notice = loaded
    route = alerts.route_of(delivery.config.alerts, group)
    destination = delivery.config.destinations.get(job.destination)
    mention = route.mention.get(destination.kind) if destination is not None else None
    # An alert is short (ten receivers at most): its first part is all of it.
    part = delivery.adapter.render(render.alert_post(group, mention))[0]
    now = delivery.now()
    action = alerts.next_action(notice, group, now, route)
    if action is Action.EDIT:
        assert notice.chat is not None and notice.message is not None
        try:
            await delivery.adapter.edit(Sent(notice.chat, notice.message, notice.message), part)
        except MessageGone:
            action = Action.REPOST  # someone deleted the alert message: post it again
    if action in (Action.POST, Action.REPOST):
        sent = await delivery.adapter.send(part, None)
        notice = replace(notice, chat=sent.chat, message=sent.message, posted_at=now)
        async with database.transaction() as connection:
            # Stored at once: a retry must edit this message, not post another.
            await alerts_store.save_notice(connection, notice)
    async with database.transaction() as connection:
        current = await alerts_store.load(connection, group_id, job.destination, lock=True)
        assert current is not None
        latest, notice = current
        next_due = None
        if latest.count != group.count or latest.first_at != group.first_at:
            # Failures arrived while this was being sent: tell about them after the interval.
            next_due = now + route.group_interval
            added = await outbox_store.enqueue(
                database,
                connection,
                event_id=latest.last_event_id,
                destination=job.destination,
                payload=AlertJob(group_id=group_id),
                now=now,
                due=next_due,
            )
            next_due = next_due if added else None
        told = replace(notice, notified_at=now, notified_count=group.count, pending_at=next_due)
        await alerts_store.save_notice(connection, told)


async def deliver_notice(delivery: Delivery) -> None:
    """A destination that fails for good, told to on-call."""
    notice = _payload(delivery, NoticeJob)
    alerts_config = delivery.config.alerts
    destination = delivery.config.destinations.get(delivery.job.destination)
    mention = None
    if alerts_config is not None and destination is not None:
        mention = alerts_config.top.mention.get(destination.kind)
    post = render.destination_failure_post(notice.failing, notice.reason, notice.detail, mention)
    for part in delivery.adapter.render(post):
        await delivery.adapter.send(part, None)


async def deliver_credit(delivery: Delivery) -> None:
    """The Smstools credit fell under `alerts.low_balance`, or rose above it again."""
    credit = _payload(delivery, CreditJob)
    alerts_config = delivery.config.alerts
    destination = delivery.config.destinations.get(delivery.job.destination)
    mention = None
    if alerts_config is not None and destination is not None:
        mention = alerts_config.top.mention.get(destination.kind)
    post = render.credit_post(credit.low, credit.balance, credit.threshold, mention)
    for part in delivery.adapter.render(post):
        await delivery.adapter.send(part, None)


HANDLERS: dict[Kind, Callable[[Delivery], Awaitable[None]]] = {
    Kind.INBOX: deliver_inbox,
    Kind.FAILURE_NOTE: deliver_failure_note,
    Kind.READ: deliver_read,
    Kind.ALERT: deliver_alert,
    Kind.NOTICE: deliver_notice,
    Kind.CREDIT: deliver_credit,
}
