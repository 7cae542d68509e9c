"""Answers shown everywhere: an answer sent to the customer from one destination is shown in
the conversation's thread at every other destination (who answered, where, the text exactly,
its status), so two teams never answer the same customer twice. Nothing is sent again.

Planned in the worker, through the outbox, in each destination's conversation lane (so it
lands in order with that thread's messages): once when the gateway accepts the answer, then
again whenever its status changes, which edits the post made the first time. A destination
with no thread for the conversation is skipped: there is nothing there for its agents to see.
"""

from __future__ import annotations

import logging

from sqlalchemy.ext.asyncio import AsyncConnection

from bridge.chat.base import MessageGone, Sent
from bridge.delivery import marks, render, threads
from bridge.errors import Permanent, Reason
from bridge.intake import reports
from bridge.intake.agent_messages import AgentMessage, author_name, stored_message
from bridge.jobs import AnswerShownJob, ConversationKey, Delivery
from bridge.language import ENGLISH, Words
from bridge.smstools.webhooks import DELIVERY_CODES, describe_delivery
from bridge.store import conversations as conversations_store
from bridge.store import outbox as outbox_store
from bridge.store import replies as replies_store
from bridge.store import reports as reports_store
from bridge.store.conversations import Conversation
from bridge.store.replies import Reply
from bridge.store.reports import MessageStatus

log = logging.getLogger(__name__)


async def author_of(delivery: Delivery, reply: Reply, body: str) -> str:
    """Who wrote the answer, by name where the platform tells (a Slack member's display
    name through the reply's own adapter, which resolves mentions), else by id."""
    destination = delivery.config.destinations.get(reply.destination)
    platform = destination.kind if destination is not None else ""
    named = author_name(platform, body)
    if named:
        return named
    message = stored_message(platform, body)
    user = message.user if isinstance(message, AgentMessage) else delivery.words.gettext("an agent")
    if platform == "slack":
        return (await delivery.adapter.plain_text(f"<@{user}>")).removeprefix("@")
    return user


async def plan(
    delivery: Delivery,
    connection: AsyncConnection,
    reply: Reply,
    conversation: Conversation,
    author: str,
    text: str,
    *,
    update: bool,
) -> int:
    """Show the answer (`update`: its new status) at every other destination that holds a
    conversation with this customer on this line, in the caller's transaction (the one that
    records the send, so neither is lost without the other); the number of jobs added."""
    key = ConversationKey(receiver=conversation.receiver, sender=conversation.sender)
    others = await conversations_store.other_destinations(
        connection, conversation.receiver, conversation.sender, besides=reply.destination
    )
    added = 0
    for destination in others:
        if destination not in delivery.config.destinations:
            continue
        payload = AnswerShownJob(
            conversation=key, reply_id=reply.id, author=author, text=text, update=update
        )
        added += await outbox_store.enqueue(
            delivery.database,
            connection,
            event_id=delivery.job.event_id,
            destination=destination,
            payload=payload,
            now=delivery.now(),
        )
    return added


async def plan_update(delivery: Delivery, reply: Reply) -> None:
    """The answer's status changed: edit its posts at the other destinations."""
    async with delivery.database.transaction() as connection:
        conversation = await conversations_store.get(connection, reply.conversation_id)
        body = await replies_store.event_body(connection, reply.chat_event_id)
    if conversation is None or body is None or not await others_to_tell(delivery, conversation):
        return
    destination = delivery.config.destinations.get(reply.destination)
    message = stored_message(destination.kind if destination is not None else "", body)
    if not isinstance(message, AgentMessage) or not message.text:
        return  # erased, or nothing was said
    text = await delivery.adapter.plain_text(message.text)
    author = await author_of(delivery, reply, body)
    async with delivery.database.transaction() as connection:
        await plan(delivery, connection, reply, conversation, author, text, update=True)


async def others_to_tell(delivery: Delivery, conversation: Conversation) -> bool:
    """Whether another destination holds a conversation with this customer on this line."""
    async with delivery.database.transaction() as connection:
        others = await conversations_store.other_destinations(
            connection,
            conversation.receiver,
            conversation.sender,
            besides=conversation.destination,
        )
    return any(other in delivery.config.destinations for other in others)


def status_words(status: MessageStatus | None, words: Words = ENGLISH) -> str:
    """The answer's status as the other thread shows it; read beats delivered beats
    accepted, and a failure says why."""
    code = status.delivery_code if status is not None else None
    if code is not None and DELIVERY_CODES.get(code, ("", False, False))[2]:
        assert status is not None
        why = describe_delivery(code, status.delivery_detail, words)
        return words.gettext("👎 not delivered: {why}", why=why)
    if status is not None and status.read_at is not None:
        return words.gettext("👀 read by the customer")
    if code is not None and reports.rank(code) == reports.FINAL_RANK:
        return words.gettext("👍 delivered")
    return words.gettext("👌 accepted by the gateway")


async def deliver_answer_shown(delivery: Delivery) -> None:
    """Post the answer in this destination's thread of the conversation, or (for a status
    change) edit the post made before; mark a Slack thread answered the first time."""
    payload = delivery.job.payload
    if not isinstance(payload, AnswerShownJob):
        raise Permanent(Reason.CONFIG, f"job {delivery.job.id} has no answer_shown payload")
    key, job = payload.conversation, delivery.job
    async with delivery.database.transaction() as connection:
        reply = await replies_store.get(connection, payload.reply_id)
        conversation = await conversations_store.latest(
            connection, job.destination, key.receiver, key.sender
        )
        messageid = reply.messageid if reply is not None else None
        status = await reports_store.get(connection, messageid) if messageid else None
        shown = None
        if conversation is not None and messageid:
            shown = await conversations_store.message_showing(
                connection, conversation.id, messageid
            )
    if reply is None or conversation is None or conversation.thread is None or not payload.text:
        return  # no thread here (or the customer was forgotten): nothing to show
    source = delivery.config.destinations.get(reply.destination)
    post = render.answer_shown_post(
        payload.author,
        reply.destination,
        source.kind if source is not None else "",
        payload.text,
        status_words(status, delivery.words),
        delivery.words,
    )
    parts = delivery.adapter.render(post)
    if payload.update:
        if shown is not None:
            chat, message = shown
            try:
                await delivery.adapter.edit(Sent(chat, message, message), parts[0])
            except MessageGone:
                pass  # someone deleted it: an update does not bring it back
        return
    await threads.post_aside(delivery, conversation, parts, gateway_messageid=messageid)
    await marks.mark_answered(delivery, conversation)
