"""Agents' replies, in the worker: send each to the customer at most once, and show its
status on the agent's chat message.

No SMS twice: the reply is marked `sending` (committed) before the gateway is called. Only a
request that certainly did not reach Smstools (refused connection, DNS, connect timeout) or
that it answered 503 / 429 is retried; any other failure after the request was written (500,
502, 504, a read timeout), like a job that finds its reply already `sending` (a worker killed
mid-call, a lease taken over), tells the thread "may not have been sent" instead. A 2xx is
accepted (👌) whatever its body; without a `messageid` the thread says reports cannot follow.
"""

from __future__ import annotations

import logging

from bridge import phones
from bridge.chat.base import Post, Sent
from bridge.errors import Permanent, Reason, Retryable
from bridge.intake import notices, reports
from bridge.intake.agent_messages import AgentMessage, stored_message
from bridge.jobs import Delivery, ReplyJob, ReplyStatusJob
from bridge.smstools import sms_parts
from bridge.smstools.api import SendOutcomeUnknown, SmstoolsPermanent
from bridge.smstools.webhooks import DELIVERY_CODES, describe_delivery
from bridge.store import conversations as conversations_store
from bridge.store import replies as store
from bridge.store import reports as reports_store
from bridge.store.conversations import Conversation
from bridge.store.replies import Reply

log = logging.getLogger(__name__)

# The reactions on an agent's message, each also one of Telegram's allowed reaction emoji.
ACCEPTED, DELIVERED, READ, FAILED, UNKNOWN = "👌", "👍", "👀", "👎", "🤔"

MAY_HAVE_BEEN_SENT = "may not have been sent: check before sending again"
NO_MESSAGEID = (
    "Your answer was accepted by the gateway, but its message id is unknown (the answer was "
    "not the documented JSON): delivery reports cannot be matched to it."
)

# What a refusal by the gateway means for the agent, by Smstools error code.
REFUSALS = {
    "104": "Smstools refused the bridge's API credentials; on-call has been told",
    "116": "the Smstools account is inactive; on-call has been told",
    "200": "Smstools does not accept the bridge's IP address; on-call has been told",
    "118": "the answer is too long for the gateway (459 characters at most)",
    "131": "the customer's number is on the opt-out list",
    "137": "the WhatsApp 24-hour window is closed: a WhatsApp template is needed to write first",
    "139": "the gateway refused the request as invalid (missing or invalid parameters)",
}
_CREDENTIALS = {"104", "116", "200"}
# States in which the bridge or the gateway would not send the answer (`unknown` is neither
# sent nor refused: it may have gone).
_REFUSED = {store.REFUSED, store.BLOCKED, store.TOO_LONG}


async def deliver_reply(delivery: Delivery) -> None:
    """Send the agent's answer to the customer, once, and react on the agent's message."""
    payload = delivery.job.payload
    if not isinstance(payload, ReplyJob):
        raise Permanent(Reason.CONFIG, f"job {delivery.job.id} has no reply payload")
    database, now = delivery.database, delivery.now
    async with database.transaction() as connection:
        reply = await store.get(connection, payload.reply_id)
        conversation = (
            None
            if reply is None
            else await conversations_store.get(connection, reply.conversation_id)
        )
        body = None if reply is None else await store.event_body(connection, reply.chat_event_id)
    if reply is None or conversation is None or body is None:
        raise Permanent(Reason.CONFIG, f"reply {payload.reply_id} of job {delivery.job.id} is gone")
    if reply.state == store.SENDING:
        # An earlier attempt called the gateway and never learnt the outcome.
        await _settle(delivery, reply, conversation, store.UNKNOWN, UNKNOWN, MAY_HAVE_BEEN_SENT)
        return
    if reply.state != store.PLANNED:
        return  # done before (the job was finished twice): nothing more to do
    destination = delivery.config.destinations.get(reply.destination)
    settings = destination.replies if destination is not None else None
    if destination is None or settings is None:
        raise Permanent(Reason.CONFIG, f"replies are no longer on for {reply.destination}")
    message = stored_message(destination.kind, body)
    if not isinstance(message, AgentMessage):
        raise Permanent(Reason.CONFIG, f"reply {reply.id}: {message.why}")
    text = await delivery.adapter.plain_text(message.text) if message.text else ""
    media = " Only text is sent: the attachment was not." if message.media else ""
    async with database.transaction() as connection:
        stopped = await store.opted_out(connection, conversation.receiver, conversation.sender)
    if stopped:
        why = "was not sent: the customer wrote STOP and gets no further answers."
        await _settle(delivery, reply, conversation, store.BLOCKED, FAILED, why)
        return
    if not text:
        await _settle(delivery, reply, conversation, store.REFUSED, FAILED, "was not sent." + media)
        return
    parts = sms_parts.parts(text)
    if parts > settings.max_parts:
        why = (
            f"was not sent: {parts} SMS parts ({len(text)} characters, "
            f"{sms_parts.encoding(text)}); "
            f"at most {settings.max_parts} are allowed. Shorten it and send again."
        )
        await _settle(delivery, reply, conversation, store.TOO_LONG, FAILED, why)
        return
    if delivery.smstools is None:
        raise Permanent(Reason.CONFIG, "SMSTOOLS_CLIENT_ID / SMSTOOLS_CLIENT_SECRET are not set")
    async with database.transaction() as connection:
        await store.set_state(connection, reply.id, store.SENDING, now())
    try:
        messageid = await delivery.smstools.send(
            to=conversation.sender,
            sender=conversation.receiver,
            message=text,
            reference=f"smsbridge-{delivery.job.id}",
        )
    except SendOutcomeUnknown:
        await _settle(delivery, reply, conversation, store.UNKNOWN, UNKNOWN, MAY_HAVE_BEEN_SENT)
        return
    except SmstoolsPermanent as error:
        if error.code in _CREDENTIALS or error.reason is Reason.AUTH:
            await notices.destination_failed(
                database, delivery.config, "Smstools API", error, now()
            )
        why = REFUSALS.get(error.code or "", error.detail)
        await _settle(delivery, reply, conversation, store.REFUSED, FAILED, f"was not sent: {why}.")
        return
    except Retryable:
        # It never reached Smstools, or Smstools answered 503 / 429: safe to try again. (A
        # cancelled call, the lease running out, leaves `sending` on purpose.)
        async with database.transaction() as connection:
            await store.set_state(connection, reply.id, store.PLANNED, now())
        raise
    async with database.transaction() as connection:
        await store.set_state(connection, reply.id, store.SENT, now(), messageid=messageid)
    _count(delivery, reply, "sent")
    log.info(
        "reply sent to %s from %s (job %d)",
        phones.mask(conversation.sender),
        reply.destination,
        delivery.job.id,
        extra={"destination": reply.destination, "job_id": delivery.job.id, "outcome": "sent"},
    )
    await _show(delivery, reply, ACCEPTED)
    await show_status(delivery, payload.reply_id)
    if messageid is None:
        await _note(delivery, conversation, NO_MESSAGEID)
    if message.media:
        await _note(delivery, conversation, media.strip())


async def deliver_reply_status(delivery: Delivery) -> None:
    """The reply's latest gateway status, shown on the agent's message."""
    payload = delivery.job.payload
    if not isinstance(payload, ReplyStatusJob):
        raise Permanent(Reason.CONFIG, f"job {delivery.job.id} has no reply status payload")
    await show_status(delivery, payload.reply_id)


def status_emoji(code: int | None, read: bool, failed: bool) -> str:
    """One visible state: read beats delivered beats accepted; a failure shows as failed."""
    if failed:
        return FAILED
    if read:
        return READ
    if code is not None and reports.rank(code) == reports.FINAL_RANK:
        return DELIVERED
    return ACCEPTED


async def show_status(delivery: Delivery, reply_id: int) -> None:
    """React with the reply's current status; a new failure also gets a note with the reason."""
    async with delivery.database.transaction() as connection:
        reply = await store.get(connection, reply_id)
        status = None
        if reply is not None and reply.messageid is not None:
            status = await reports_store.get(connection, reply.messageid)
    if reply is None or status is None:
        return
    code = status.delivery_code
    failed = code is not None and DELIVERY_CODES.get(code, ("", False, False))[2]
    emoji = status_emoji(code, status.read_at is not None, failed)
    if emoji == reply.shown:
        return
    await _show(delivery, reply, emoji)
    if failed:
        async with delivery.database.transaction() as connection:
            conversation = await conversations_store.get(connection, reply.conversation_id)
        if conversation is not None:
            reason = describe_delivery(code, status.delivery_detail)
            await _note(delivery, conversation, f"Your answer was not delivered: {reason}.")


async def _show(delivery: Delivery, reply: Reply, emoji: str) -> None:
    """Replace the reaction on the agent's message (stored first: a retry redoes no harm)."""
    async with delivery.database.transaction() as connection:
        current = await store.get(connection, reply.id)
    shown = current.shown if current is not None else None
    if shown == emoji:
        return
    where = Sent(reply.chat, reply.message, reply.message)
    if shown is not None:
        await delivery.adapter.unreact(where, shown)
    await delivery.adapter.react(where, emoji)
    async with delivery.database.transaction() as connection:
        await store.set_shown(connection, reply.id, emoji)


async def _settle(
    delivery: Delivery,
    reply: Reply,
    conversation: Conversation,
    state: str,
    emoji: str,
    why: str,
) -> None:
    """Record why the answer was not (or maybe not) sent, and say so in the thread."""
    async with delivery.database.transaction() as connection:
        await store.set_state(connection, reply.id, state, delivery.now(), problem=why)
    if state in _REFUSED:
        _count(delivery, reply, "refused")
    log.warning(
        "reply to %s from %s (job %d) %s: %s",
        phones.mask(conversation.sender),
        reply.destination,
        delivery.job.id,
        state,
        why,
        extra={"destination": reply.destination, "job_id": delivery.job.id, "outcome": state},
    )
    await _show(delivery, reply, emoji)
    await _note(delivery, conversation, f"Your answer {why}")


def _count(delivery: Delivery, reply: Reply, outcome: str) -> None:
    """`smsbridge_replies_total{destination, outcome}`, once per reply that reached `outcome`."""
    if delivery.count_reply is not None:
        delivery.count_reply(reply.destination, outcome)


async def _note(delivery: Delivery, conversation: Conversation, text: str) -> None:
    """A note for the agents in the conversation's thread (not recorded: nothing refers to it)."""
    if conversation.thread is None:
        return
    for part in delivery.adapter.render(Post(heading="Bridge", body=text)):
        await delivery.adapter.send(part, conversation.thread)
