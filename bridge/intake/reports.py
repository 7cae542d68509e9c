"""Delivery and read reports: one status per gateway message, and what each change causes.

Planned inside the webhook's transaction (see `ingest`): the status moves only forward, so a
late `0 SUBMITTED` never overwrites `1 DELIVERED` or a failure and a repeated report changes
nothing; a new failure becomes an alert and a note in the customer's live thread; a first
read report marks the chat messages that show the message.
"""

from __future__ import annotations

from sqlalchemy.ext.asyncio import AsyncConnection

from bridge import phones
from bridge.config import DEFAULT_ON_CODES, Config
from bridge.intake import alerts
from bridge.jobs import ConversationKey, FailureNoteJob, ReadJob, ReplyStatusJob
from bridge.smstools.webhooks import (
    DELIVERED,
    DELIVERY_CODES,
    DeliveryReport,
    ReadReport,
    as_written,
)
from bridge.store import conversations as conversations_store
from bridge.store import outbox as outbox_store
from bridge.store import replies as replies_store
from bridge.store import reports as reports_store
from bridge.store.db import Database

# Higher rank wins. Final codes (delivered or failed) beat every non-final one; among those,
# BUFFERED (at the operator) says more than UNKNOWN, which says more than SUBMITTED.
_NON_FINAL_RANK = {0: 1, 9: 2, 3: 3}
FINAL_RANK = 10


def rank(code: int | None) -> int:
    """How far along a delivery code is; an unknown code counts as barely submitted."""
    if code is None:
        return 0
    known = DELIVERY_CODES.get(code)
    if known is not None and known[1]:
        return FINAL_RANK
    return _NON_FINAL_RANK.get(code, 1)


def failed(code: int | None, config: Config) -> bool:
    """A failure worth telling: one of `alerts.on_codes` (2, 4, 5 without an alerts section)."""
    on_codes = config.alerts.on_codes if config.alerts is not None else DEFAULT_ON_CODES
    return code is not None and code in on_codes


async def plan_delivery(
    database: Database,
    connection: AsyncConnection,
    config: Config,
    report: DeliveryReport,
    event_id: int,
    now: float,
    incidents: alerts.OpenIncidents | None = None,
) -> int:
    """Record the report's status; for a new failure plan the alert and thread notes.
    `incidents`: the open incidents as the caller's transaction read them, shared by the
    reports it plans (read when needed otherwise).

    Returns the number of outbox jobs added.
    """
    message = report.message
    customer, sender = phones.key(message.receiver), phones.key(message.sender)
    changed = await reports_store.advance(
        database,
        connection,
        messageid=message.messageid,
        sender=sender,
        receiver=customer,
        code=message.delivery_code,
        detail=message.delivery_code_detail,
        rank=rank(message.delivery_code),
        status_at=as_written(message.delivery_status_datetime or message.datetime),
        event_id=event_id,
        now=now,
    )
    if not changed:
        return 0
    reply_status = await _plan_reply_status(database, connection, message.messageid, event_id, now)
    if message.delivery_code == DELIVERED and config.alerts is not None:
        # A message that got through ends an incident of its sender's account (`clears`).
        return reply_status + await alerts.plan_cleared(
            database, connection, now, delivered_from=sender, incidents=incidents
        )
    if not failed(message.delivery_code, config):
        return reply_status
    if incidents is not None:
        incidents.forget()  # the failure may open an incident, or change one
    jobs = reply_status + await alerts.plan(database, connection, config, report, event_id, now)
    if reply_status:
        return jobs  # the agent's own message shows the failure, with a note in its thread
    return jobs + await _plan_failure_notes(database, connection, config, customer, event_id, now)


async def _plan_failure_notes(
    database: Database,
    connection: AsyncConnection,
    config: Config,
    customer: str,
    event_id: int,
    now: float,
) -> int:
    """A note in each live conversation with the customer that a message to them failed."""
    jobs = 0
    for conversation in await conversations_store.live_conversations(
        connection, customer, since=now - config.idle_after
    ):
        # In the conversation's own lane: the note lands in order with its messages.
        note = FailureNoteJob(
            conversation=ConversationKey(
                receiver=conversation.receiver, sender=conversation.sender
            ),
            conversation_id=conversation.id,
        )
        jobs += await outbox_store.enqueue(
            database,
            connection,
            event_id=event_id,
            destination=conversation.destination,
            payload=note,
            now=now,
        )
    return jobs


async def plan_read(
    database: Database,
    connection: AsyncConnection,
    report: ReadReport,
    event_id: int,
    now: float,
) -> int:
    """Record when the message was read; mark it where the bridge showed it, if anywhere."""
    message = report.message
    first = await reports_store.mark_read(
        database,
        connection,
        messageid=message.messageid,
        sender=phones.key(message.sender),
        receiver=phones.key(message.receiver),
        read_at=as_written(message.read_datetime or message.datetime),
        event_id=event_id,
        now=now,
    )
    if not first:
        return 0
    jobs = await _plan_reply_status(database, connection, message.messageid, event_id, now)
    for shown in await reports_store.shown_at(connection, message.messageid):
        jobs += await outbox_store.enqueue(
            database,
            connection,
            event_id=event_id,
            destination=shown.destination,
            payload=ReadJob(messageid=message.messageid),
            now=now,
        )
    return jobs


async def _plan_reply_status(
    database: Database, connection: AsyncConnection, messageid: str, event_id: int, now: float
) -> int:
    """When `messageid` is an agent's reply, show its new status on the agent's message."""
    reply = await replies_store.of_messageid(connection, messageid)
    if reply is None:
        return 0
    conversation = await conversations_store.get(connection, reply.conversation_id)
    if conversation is None:
        return 0
    key = ConversationKey(receiver=conversation.receiver, sender=conversation.sender)
    return int(
        await outbox_store.enqueue(
            database,
            connection,
            event_id=event_id,
            destination=reply.destination,
            payload=ReplyStatusJob(conversation=key, reply_id=reply.id),
            now=now,
        )
    )
