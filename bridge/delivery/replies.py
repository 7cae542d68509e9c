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
import unicodedata
from dataclasses import dataclass, replace
from typing import Literal

from bridge import phones
from bridge.chat.base import Post, Sent
from bridge.config import Replies
from bridge.delivery import answers, marks, render, threads
from bridge.errors import Permanent, Reason, Retryable
from bridge.intake import notices, reports
from bridge.intake.agent_messages import (
    ASK_OR_NOTE,
    AgentMessage,
    is_internal_note,
    stored_message,
)
from bridge.jobs import Delivery, ReplyJob, ReplyStatusJob
from bridge.language import ENGLISH, N_, Phrase, Words
from bridge.smstools import sms_parts
from bridge.smstools.api import (
    ACCOUNT_CODES,
    SendOutcomeUnknown,
    SmstoolsPermanent,
    refusal,
)
from bridge.smstools.webhooks import ACCOUNT_WIDE_DETAILS, DELIVERY_CODES, describe_delivery
from bridge.store import conversations as conversations_store
from bridge.store import replies as replies_store
from bridge.store import reports as reports_store
from bridge.store.conversations import Conversation
from bridge.store.replies import Reply

log = logging.getLogger(__name__)

# The reactions on an agent's message, each also one of Telegram's allowed reaction emoji.
ACCEPTED, DELIVERED, READ, FAILED, UNKNOWN = "👌", "👍", "👀", "👎", "🤔"

WARNING = "⚠️"
# What happened to an answer and the agent's next step: said in the destination's language,
# the `what` kept in English as the reply's `problem` (for operators).
MAY_HAVE_BEEN_SENT = (
    Phrase("may not have been sent"),
    Phrase(
        "look for it in the Smstools dashboard's sent messages before sending it again",
    ),
)
NO_MESSAGEID = (
    Phrase(
        "was accepted by the gateway, but its message id is unknown (the answer was not the "
        "documented JSON), so its delivery reports cannot be shown"
    ),
    Phrase("look for it in the Smstools dashboard's sent messages"),
)
OUT_OF_CREDIT = (
    Phrase("not sent: the account is out of credit; on-call has been told"),
    Phrase("send it again once credit is back"),
)

# States in which the bridge or the gateway would not send the answer (`unknown` is neither
# sent nor refused: it may have gone).
_REFUSED = {replies_store.REFUSED, replies_store.BLOCKED, replies_store.TOO_LONG}


async def deliver_reply(delivery: Delivery) -> None:
    """Send the agent's answer to the customer, once, and react on the agent's message."""
    payload = delivery.job.payload
    if not isinstance(payload, ReplyJob):
        raise Permanent(Reason.CONFIG, f"job {delivery.job.id} has no reply payload")
    reply, conversation, body = await _stored_reply(delivery, payload.reply_id)
    if reply.state == replies_store.SENDING:
        # An earlier attempt called the gateway and never learnt the outcome.
        await _settle(
            delivery, reply, conversation, replies_store.UNKNOWN, UNKNOWN, *MAY_HAVE_BEEN_SENT
        )
        return
    if reply.state == replies_store.DECLINED:
        await _declined(delivery, reply, conversation)
        return
    if reply.state != replies_store.PLANNED:
        return  # done before (the job was finished twice): nothing more to do
    outgoing = await _outgoing(delivery, reply, conversation, body)
    if outgoing is None:
        return  # not to be sent; the agent's message says why
    text, media = outgoing
    # Named before the SMS goes: a failure to look the name up must not leave it `sending`.
    author = None
    if await answers.others_to_tell(delivery, conversation):
        author = await answers.author_of(delivery, reply, body)
    accepted = await _send(delivery, reply, conversation, text)
    if accepted is None:
        return  # the gateway's answer is shown on the agent's message
    async with delivery.database.transaction() as connection:
        await replies_store.set_state(
            connection, reply.id, replies_store.SENT, delivery.now(), messageid=accepted.messageid
        )
        if author is not None:
            sent = replace(reply, messageid=accepted.messageid)
            await answers.plan(delivery, connection, sent, conversation, author, text, update=False)
    _count(delivery, reply, "sent")
    log.info(
        "reply sent to %s from %s (job %d)",
        phones.mask(conversation.sender),
        reply.destination,
        delivery.job.id,
        extra={"destination": reply.destination, "job_id": delivery.job.id, "outcome": "sent"},
    )
    await _show(delivery, reply, ACCEPTED)
    await marks.mark_answered(delivery, conversation)
    await show_status(delivery, payload.reply_id)
    if accepted.messageid is None:
        await _note(delivery, conversation, await _about(delivery, reply, *NO_MESSAGEID))
    if media:
        await _note(delivery, conversation, await _about(delivery, reply, *MEDIA_LEFT_OUT))


async def _stored_reply(delivery: Delivery, reply_id: int) -> tuple[Reply, Conversation, str]:
    """The reply, its conversation and what the agent wrote; Permanent when any is gone."""
    async with delivery.database.transaction() as connection:
        reply = await replies_store.get(connection, reply_id)
        conversation = (
            None
            if reply is None
            else await conversations_store.get(connection, reply.conversation_id)
        )
        body = (
            None
            if reply is None
            else await replies_store.event_body(connection, reply.chat_event_id)
        )
    if reply is None or conversation is None or body is None:
        raise Permanent(Reason.CONFIG, f"reply {reply_id} of job {delivery.job.id} is gone")
    return reply, conversation, body


async def _outgoing(
    delivery: Delivery, reply: Reply, conversation: Conversation, body: str
) -> tuple[str, bool] | None:
    """The SMS text, and whether an attachment was left out; None when the reply is not to
    be sent (it is settled here, saying why)."""
    destination = delivery.config.destinations.get(reply.destination)
    settings = destination.replies if destination is not None else None
    if destination is None or settings is None:
        raise Permanent(Reason.CONFIG, f"replies are no longer on for {reply.destination}")
    message = stored_message(destination.kind, body)
    if not isinstance(message, AgentMessage):
        raise Permanent(Reason.CONFIG, f"reply {reply.id}: {message.why}")
    text = await delivery.adapter.plain_text(message.text) if message.text else ""
    if await _kept_internal(delivery, reply, conversation, text, settings):
        return None
    async with delivery.database.transaction() as connection:
        stopped = await replies_store.opted_out(
            connection, conversation.receiver, conversation.sender
        )
    refused = _not_sent(stopped, text, message.media, settings.max_parts)
    if refused is not None:
        state, why, step = refused
        await _settle(delivery, reply, conversation, state, FAILED, why, step)
        return None
    if delivery.smstools is None:
        raise Permanent(Reason.CONFIG, "SMSTOOLS_CLIENT_ID / SMSTOOLS_CLIENT_SECRET are not set")
    return text, message.media


MEDIA_LEFT_OUT = (
    Phrase("was sent as text only: the attachment was not"),
    Phrase("send the attachment another way if the customer needs it"),
)


def _not_sent(
    stopped: bool, text: str, media: bool, max_parts: int
) -> tuple[str, Phrase, Phrase] | None:
    """The state a reply that is not to be sent is left in, why, and the agent's next step;
    None: it goes."""
    if stopped:
        return (
            replies_store.BLOCKED,
            Phrase("was not sent: the customer wrote STOP and gets no further answers"),
            Phrase("reach the customer another way if it matters"),
        )
    if not text:
        why = (
            Phrase("was not sent: only text can be sent, and it has none")
            if media
            else Phrase("was not sent: it has no text")
        )
        return replies_store.REFUSED, why, Phrase("write the answer as text")
    parts = sms_parts.parts(text)
    if parts > max_parts:
        too_long = Phrase(
            "was not sent: {parts} SMS parts ({characters} characters, {encoding}); at most "
            "{max_parts} are allowed",
            {
                "parts": parts,
                "characters": len(text),
                "encoding": sms_parts.encoding(text),
                "max_parts": max_parts,
            },
        )
        return replies_store.TOO_LONG, too_long, Phrase("shorten it and send it again")
    return None


@dataclass(frozen=True)
class _Accepted:
    """The gateway took the SMS; `messageid` is None when its answer did not name it."""

    messageid: str | None


async def _send(
    delivery: Delivery, reply: Reply, conversation: Conversation, text: str
) -> _Accepted | None:
    """Send the SMS, marked `sending` first so it never goes twice; what the gateway
    accepted, or None when it was refused or its fate is unknown (settled here)."""
    database, now = delivery.database, delivery.now
    assert delivery.smstools is not None  # checked by `_outgoing`
    async with database.transaction() as connection:
        await replies_store.set_state(connection, reply.id, replies_store.SENDING, now())
    try:
        messageid = await delivery.smstools.send(
            to=conversation.sender,
            sender=conversation.receiver,
            message=text,
            reference=f"smsbridge-{delivery.job.id}",
        )
    except SendOutcomeUnknown:
        await _settle(
            delivery, reply, conversation, replies_store.UNKNOWN, UNKNOWN, *MAY_HAVE_BEEN_SENT
        )
        return None
    except SmstoolsPermanent as error:
        if error.code in ACCOUNT_CODES or error.reason is Reason.AUTH:
            await notices.destination_failed(
                database, delivery.config, "Smstools API", error, now()
            )
        refused, step = refusal(error.code, error.detail)
        why = Phrase("was not sent: {why}", {"why": refused})
        await _settle(delivery, reply, conversation, replies_store.REFUSED, FAILED, why, step)
        return None
    except Retryable:
        # It never reached Smstools, or Smstools answered 503 / 429: safe to try again. (A
        # cancelled call, the lease running out, leaves `sending` on purpose.)
        async with database.transaction() as connection:
            await replies_store.set_state(connection, reply.id, replies_store.PLANNED, now())
        raise
    return _Accepted(messageid)


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
        reply = await replies_store.get(connection, reply_id)
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
    # Planned before the reaction changes: once it has, a retry of this job stops above.
    await answers.plan_update(delivery, reply)
    await _show(delivery, reply, emoji)
    if failed:
        async with delivery.database.transaction() as connection:
            conversation = await conversations_store.get(connection, reply.conversation_id)
        if conversation is not None:
            what, step = _undelivered(code, status.delivery_detail, delivery.words)
            await _note(delivery, conversation, await _about(delivery, reply, what, step))


def _undelivered(code: int | None, detail: int | None, words: Words) -> tuple[Phrase, Phrase]:
    """What the gateway's failure report means for the agent whose answer it was, and their
    next step: for a cause of the whole account, that on-call has been told."""
    if detail == render.CREDIT:
        return OUT_OF_CREDIT
    if detail in ACCOUNT_WIDE_DETAILS:
        return (
            Phrase(
                "not sent: {why}; on-call has been told",
                {"why": describe_delivery(code, detail, words)},
            ),
            Phrase("send it again once on-call has fixed it"),
        )
    step = render.NEXT_STEPS.get(detail, render.DEFAULT_STEP) if detail is not None else ""
    return (
        Phrase("was not delivered: {why}", {"why": describe_delivery(code, detail, words)}),
        Phrase(step or render.DEFAULT_STEP),
    )


async def _show(delivery: Delivery, reply: Reply, emoji: str) -> None:
    """Replace the reaction on the agent's message (stored first: a retry redoes no harm)."""
    async with delivery.database.transaction() as connection:
        current = await replies_store.get(connection, reply.id)
    shown = current.shown if current is not None else None
    if shown == emoji:
        return
    where = Sent(reply.chat, reply.message, reply.message)
    if shown is not None:
        await delivery.adapter.unreact(where, shown)
    await delivery.adapter.react(where, emoji)
    async with delivery.database.transaction() as connection:
        await replies_store.set_shown(connection, reply.id, emoji)


async def _settle(
    delivery: Delivery,
    reply: Reply,
    conversation: Conversation,
    state: str,
    emoji: str,
    why: Phrase,
    step: Phrase,
) -> None:
    """Record why the answer was not (or maybe not) sent (in English: the reply's `problem`
    is for operators), and say so in the thread, with the agent's next `step`."""
    problem = ENGLISH.say(why)
    async with delivery.database.transaction() as connection:
        await replies_store.set_state(connection, reply.id, state, delivery.now(), problem=problem)
    if state in _REFUSED:
        _count(delivery, reply, "refused")
    log.warning(
        "reply to %s from %s (job %d) %s: %s",
        phones.mask(conversation.sender),
        reply.destination,
        delivery.job.id,
        state,
        problem,
        extra={"destination": reply.destination, "job_id": delivery.job.id, "outcome": state},
    )
    await _show(delivery, reply, emoji)
    await _note(delivery, conversation, await _about(delivery, reply, why, step))


async def _declined(delivery: Delivery, reply: Reply, conversation: Conversation) -> None:
    """A reply refused on the request path (`agent_messages.decide`): say why in the thread
    (its `problem` ends with the next step; the known reasons are msgids)."""
    why, _, step = (reply.problem or N_("it may not be sent")).partition(" — ")
    said = Phrase("was not sent: {why}", {"why": Phrase(why)})
    destination = delivery.config.destinations.get(reply.destination)
    prefix = destination.replies.prefix if destination and destination.replies else None
    filled = {}
    if step == ASK_OR_NOTE:  # the prefix is today's, or gone from the config since
        if prefix:
            filled = {"prefix": prefix}
        else:
            step = N_("ask one of them to answer")
    await _settle(
        delivery,
        reply,
        conversation,
        replies_store.REFUSED,
        FAILED,
        said,
        Phrase(step or N_("ask on-call why"), filled),
    )


async def _kept_internal(
    delivery: Delivery, reply: Reply, conversation: Conversation, text: str, settings: Replies
) -> bool:
    """The last look before sending: text that reads as an internal note once it is plain
    (a link's label, say) is never sent; True when it was held back and the thread told."""
    if not settings.prefix or not is_internal_note(text, settings.prefix):
        return False
    why = Phrase(
        'was not sent: as the customer would read it, it starts with "{prefix}", which marks '
        "an internal note",
        {"prefix": settings.prefix},
    )
    step = Phrase("reword its start if it was meant for the customer")
    await _settle(delivery, reply, conversation, replies_store.BLOCKED, FAILED, why, step)
    return True


def _count(delivery: Delivery, reply: Reply, outcome: str) -> None:
    """`smsbridge_replies_total{destination, outcome}`, once per reply that reached `outcome`."""
    if delivery.count_reply is not None:
        delivery.count_reply(reply.destination, outcome)


def note_text(what: str, step: str) -> str:
    """The one form of every note to the agents: `⚠️ <what happened to which message> —
    <one next step>`."""
    return f"{WARNING} {what} — {step}"


async def _about(delivery: Delivery, reply: Reply, what: Phrase, step: Phrase) -> str:
    """A note about the reply, naming it by its first words as the customer would read them
    (`Your answer “Refund approved, see you…” was not sent: …`), in the destination's
    language."""
    async with delivery.database.transaction() as connection:
        body = await replies_store.event_body(connection, reply.chat_event_id)
    destination = delivery.config.destinations.get(reply.destination)
    message = stored_message(destination.kind, body) if destination and body else None
    text = ""
    if isinstance(message, AgentMessage) and message.text:
        text = await delivery.adapter.plain_text(message.text)
    words = delivery.words
    said = words.say(what)
    named = (
        words.gettext("Your answer “{snippet}” {what}", snippet=render.snippet(text), what=said)
        if text.strip()
        else words.gettext("Your answer {what}", what=said)
    )
    return note_text(named, words.say(step))


async def _note(delivery: Delivery, conversation: Conversation, text: str) -> None:
    """A note for the agents in the conversation's thread, part of its reply chain; it
    notifies nobody."""
    parts = delivery.adapter.render(Post(heading="", body=text, quiet=True))
    await threads.post_note(
        delivery.database, delivery.adapter, conversation, parts, now=delivery.now()
    )


def customer_keyword(content: str, settings: Replies) -> Literal["stop", "start"] | None:
    """Whether a customer's message is one of the stop words or start words alone:
    case-insensitive, after trimming whitespace and punctuation (`Stop.`, ` STOP! `), as
    carriers do. A keyword inside a sentence (`stop please`) is an ordinary message."""
    word = _trimmed(content)
    if word in {_trimmed(stop) for stop in settings.stop_words}:
        return "stop"
    if word in {_trimmed(start) for start in settings.start_words}:
        return "start"
    return None


def _trimmed(text: str) -> str:
    def loose(character: str) -> bool:
        return character.isspace() or unicodedata.category(character)[0] in "PZC"

    start, end = 0, len(text)
    while start < end and loose(text[start]):
        start += 1
    while end > start and loose(text[end - 1]):
        end -= 1
    return text[start:end].upper()


async def note_opt_out(
    delivery: Delivery,
    conversation: Conversation,
    keyword: Literal["stop", "start"],
    settings: Replies,
) -> None:
    """Tell the conversation's thread that the customer opted out, or back in."""
    words = delivery.words
    if keyword == "start":
        what = words.gettext(
            "The customer opted back in (a start word): answers are sent to them again"
        )
        step = words.gettext("answer as usual")
    else:
        what = words.gettext("The customer opted out (STOP): answers are no longer sent to them")
        step = words.gettext("reach them another way if it matters")
        if settings.start_words:
            what = words.gettext(
                "The customer opted out (STOP): answers are not sent until they write {words}",
                words=words.gettext(" or ").join(sorted(settings.start_words)),
            )
    await _note(delivery, conversation, note_text(what, step))
