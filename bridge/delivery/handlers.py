"""What each kind of outbox job does once claimed: one handler per kind, assembled in
`HANDLERS`.

A handler gets a `Delivery` (the job, its event, the destination's adapter) and raises
`Retryable` or `Permanent` when it cannot finish. The worker owns claiming, retries and
bookkeeping; what to post is `render`'s, where in the conversation is `threads`'.
"""

from __future__ import annotations

import functools
import json
import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import replace
from typing import TypeVar

from sqlalchemy.ext.asyncio import AsyncConnection

from bridge import phones
from bridge.chat.base import MessageGone, Part, Post, Sent
from bridge.config import AlertRoute
from bridge.delivery import answers, combining, marks, render, replies, threads
from bridge.errors import Permanent, Reason
from bridge.intake import alerts
from bridge.intake.alerts import Action
from bridge.jobs import (
    NOT_UNDERSTOOD,
    AlertJob,
    CreditJob,
    Delivery,
    FailureNoteJob,
    Follower,
    InboxJob,
    Job,
    Kind,
    NoticeJob,
    ReadJob,
)
from bridge.smstools.webhooks import DeliveryReport, InboxMessage, ReadReport, parse_event
from bridge.store import alerts as alerts_store
from bridge.store import conversations as conversations_store
from bridge.store import events as events_store
from bridge.store import outbox as outbox_store
from bridge.store import replies as replies_store
from bridge.store import reports as reports_store
from bridge.store.alerts import Group, Notice
from bridge.store.conversations import Conversation

log = logging.getLogger(__name__)


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
    conversation, opens_thread, already_sent = await _conversation(delivery)
    await _post_inbox(delivery, conversation, opens_thread, already_sent)


async def deliver_inbox_combined(delivery: Delivery) -> tuple[Follower, ...]:
    """The head's message and as many of its followers as one chat message can show, posted
    as one (`combining`); returns the followers it showed. The others are left for the
    caller to hand back: they go out with the next post. A head that cannot share a post
    (too long, or partly posted before) is posted alone, in as many parts as it needs."""
    event = _event(delivery, InboxMessage)
    job = delivery.job
    conversation, opens_thread, already_sent = await _conversation(delivery)
    count = _combined_count(delivery, event, opens_thread, started=bool(already_sent))
    if count == 1:
        await _post_inbox(delivery, conversation, opens_thread, already_sent)
        return ()
    followers = delivery.followers[: count - 1]
    await _post_combined(delivery, conversation, event, followers, opens_thread)
    if not opens_thread:
        last = max(delivery.received_at, *(f.received_at for f in followers))
        await marks.unmark_on_customer(delivery, conversation, conversation.last_message_at, last)
    for shown_event in [event, *(f.event for f in followers)]:
        await _opt_out_on_stop(delivery, shown_event)
    key = _payload(delivery, InboxJob).conversation
    _log_delivered(
        job,
        "delivered %d inbox messages from %s to %s as one post (jobs %s)",
        count,
        functools.partial(phones.mask, key.sender),
        job.destination,
        ", ".join(str(job_id) for job_id in [job.id, *(f.job.id for f in followers)]),
    )
    return followers


def _combined_count(
    delivery: Delivery, event: InboxMessage, opens_thread: bool, *, started: bool
) -> int:
    """How many messages, the head's first, one post shows: 1 when the head was partly
    posted before (`started`), else as many of one conversation as fit one chat message."""
    config, adapter = delivery.config, delivery.adapter
    events = [event, *(follower.event for follower in delivery.followers)]
    received = [delivery.received_at, *(f.received_at for f in delivery.followers)]
    count = 1 if started else combining.one_conversation(received, config.idle_after)
    posted_at = delivery.now()

    def fits(messages: int) -> bool:
        post = render.combined_post(
            events[:messages],
            config,
            opens_thread=opens_thread,
            posted_at=posted_at,
            words=delivery.words,
        )
        return len(adapter.render(post)) == 1

    return combining.most_that_fit(count, fits)


async def _post_combined(
    delivery: Delivery,
    conversation: Conversation,
    event: InboxMessage,
    followers: tuple[Follower, ...],
    opens_thread: bool,
) -> None:
    """Post the head's message and `followers`' as one chat message in the thread."""
    job, config, adapter = delivery.job, delivery.config, delivery.adapter
    by_job = {job.id: event, **{f.job.id: f.event for f in followers}}
    shown = [
        threads.Shown(job.id, event.message.id or None, _replied_to(event), delivery.received_at),
        *(
            threads.Shown(f.job.id, f.event.message.id or None, _replied_to(f.event), f.received_at)
            for f in followers
        ),
    ]

    def render_part(messages: Sequence[threads.Shown], untouched: bool) -> Part:
        post = render.combined_post(
            [by_job[message.outbox_id] for message in messages],
            config,
            opens_thread=opens_thread and untouched,
            posted_at=delivery.now(),
            words=delivery.words,
        )
        parts = adapter.render(post)
        if len(parts) != 1:  # fewer messages than fitted never take more room
            raise RuntimeError(f"{len(messages)} combined messages no longer fit one post")
        return parts[0]

    unsure = job.unsure or any(f.job.unsure for f in followers)
    message = event.message
    await threads.post_combined(
        delivery.database,
        adapter,
        conversation,
        shown,
        render_part,
        title=render.thread_title(message.sender, message.receiver, message.type, config),
        now=delivery.now(),
        unsure_since=job.created_at - 60 if unsure else None,
        words=delivery.words,
    )


async def _conversation(delivery: Delivery) -> tuple[Conversation, bool, set[int]]:
    """The conversation the job's message belongs to, whether it opens its thread, and the
    job's parts posted before: read with other jobs' reads (`Database.shared`)."""
    key = _payload(delivery, InboxJob).conversation
    job = delivery.job
    conversation, posted = await threads.current_conversation(
        delivery.database,
        job.destination,
        key.receiver,
        key.sender,
        at=delivery.received_at,
        idle_after=delivery.config.idle_after,
        outbox_id=job.id,
    )
    # Only a job leased before (unsure) can have posted parts: none to look for else.
    already_sent: set[int] = set()
    if job.unsure:

        async def sent(connection: AsyncConnection) -> set[int]:
            return await conversations_store.sent_parts(connection, job.id)

        already_sent = await delivery.database.shared.run(sent, atomic=False)
    return conversation, not posted, already_sent


def _replied_to(event: InboxMessage) -> str | None:
    """The gateway message a customer's message answers, if any."""
    return (event.isreply.orig_messageid or None) if event.isreply else None


async def _post_inbox(
    delivery: Delivery, conversation: Conversation, opens_thread: bool, already_sent: set[int]
) -> None:
    """The job's message alone, in as many parts as it needs."""
    event = _event(delivery, InboxMessage)
    key = _payload(delivery, InboxJob).conversation
    job = delivery.job
    post = render.inbox_post(
        event,
        delivery.config,
        opens_thread=opens_thread,
        posted_at=delivery.now(),
        words=delivery.words,
    )
    message = event.message
    posted = await threads.post_in_thread(
        delivery.database,
        delivery.adapter,
        conversation,
        delivery.adapter.render(post),
        title=render.thread_title(message.sender, message.receiver, message.type, delivery.config),
        outbox_id=job.id,
        gateway_messageid=message.id or None,
        replied_to=_replied_to(event),
        at=delivery.received_at,
        now=delivery.now(),
        unsure_since=job.unsure_since,
        words=delivery.words,
        already_sent=already_sent,
    )
    if not opens_thread and posted.thread == conversation.thread:
        # `conversation` is as it was before this message: its last one is the previous.
        await marks.unmark_on_customer(
            delivery, posted, conversation.last_message_at, delivery.received_at
        )
    await _opt_out_on_stop(delivery, event)
    _log_delivered(
        job,
        "delivered inbox message from %s to %s (job %d)",
        functools.partial(phones.mask, key.sender),
        job.destination,
        job.id,
    )


async def _opt_out_on_stop(delivery: Delivery, event: InboxMessage) -> None:
    """A customer message that is only a stop word stops answers to that customer; one that is
    only a start word lets them through again. The thread says which."""
    key = _payload(delivery, InboxJob).conversation
    destination = delivery.config.destinations.get(delivery.job.destination)
    if destination is None or destination.replies is None:
        return
    keyword = replies.customer_keyword(event.message.content, destination.replies)
    if keyword is None:
        return
    # In the conversation's lane: every answer planned after this message sees the change.
    async with delivery.database.transaction() as connection:
        if keyword == "stop":
            await replies_store.opt_out(
                delivery.database, connection, key.receiver, key.sender, delivery.now()
            )
        else:
            await replies_store.opt_in(connection, key.receiver, key.sender)
        conversation = await conversations_store.latest(
            connection, delivery.job.destination, key.receiver, key.sender
        )
    if conversation is not None:
        await replies.note_opt_out(delivery, conversation, keyword, destination.replies)


async def deliver_failure_note(delivery: Delivery) -> None:
    """The failure, noted in the customer's live thread at this destination."""
    event = _event(delivery, DeliveryReport)
    note = _payload(delivery, FailureNoteJob)
    async with delivery.database.transaction() as connection:
        conversation = await conversations_store.get(connection, note.conversation_id)
    if conversation is None or conversation.thread is None:
        return  # the thread went away since: nothing to add to
    parts = delivery.adapter.render(render.failure_note_post(event, delivery.words))
    await threads.post_aside(delivery, conversation, parts, gateway_messageid=None)


async def deliver_read(delivery: Delivery) -> None:
    """`✓ Read by the customer at 09:06: "Your parcel…"` in the thread where our message was
    shown or answered; a report the bridge cannot place stays only recorded."""
    event = _event(delivery, ReadReport)
    messageid = _payload(delivery, ReadJob).messageid
    job, database = delivery.job, delivery.database
    async with database.transaction() as connection:
        found = await reports_store.conversations_showing(connection, messageid, job.destination)
        conversations = [await conversations_store.get(connection, i) for i in found]
    live = [c for c in conversations if c is not None and c.thread is not None]
    if live:
        conversation = live[0]  # the newest: one line, where the customer last wrote
        parts = delivery.adapter.render(render.read_post(event, delivery.words))
        await threads.post_aside(delivery, conversation, parts, gateway_messageid=None)
    async with database.transaction() as connection:
        await reports_store.count_read_shown(connection, messageid, 1 if live else 0)


async def deliver_alert(delivery: Delivery) -> None:
    """Post the group's alert, or edit the one posted, then plan the next if it grew, else
    a check for when it may have gone quiet; that check, or the incident's cause going away,
    edits it (`_check`)."""
    job, database = delivery.job, delivery.database
    payload = _payload(delivery, AlertJob)
    group_id = payload.group_id
    if delivery.config.alerts is None:
        raise Permanent(Reason.CONFIG, "alerts are no longer configured")
    async with database.transaction() as connection:
        loaded = await alerts_store.load(connection, group_id, job.destination)
    if loaded is None:
        raise Permanent(Reason.CONFIG, f"alert group {group_id} of job {job.id} is missing")
    group, notice = loaded
    route = alerts.route_of(delivery.config.alerts, group)
    now = delivery.now()
    if payload.resolve:
        await _check(delivery, group, notice, route, now)
        return
    mention = _alert_mention(delivery, group, route)
    if group.cleared_at is not None:
        post = await _resolved_post(delivery, group, mention)
    else:
        firing = alerts.pages(group, route)
        post = render.alert_post(
            group, mention, firing=firing, threshold=_threshold(delivery), words=delivery.words
        )
    # An alert is short (ten receivers at most): its first part is all of it.
    part = delivery.adapter.render(post)[0]
    action = alerts.next_action(notice, group, now, route)
    if action is Action.EDIT:
        assert notice.chat is not None and notice.message is not None
        try:
            await delivery.adapter.edit(Sent(notice.chat, notice.message, notice.message), part)
        except MessageGone:
            action = Action.REPOST  # someone deleted the alert message: post it again
    if action in (Action.POST, Action.REPOST):
        sent = await delivery.adapter.send(part, None)
        resolved_at = now if group.cleared_at is not None else None
        notice = replace(
            notice, chat=sent.chat, message=sent.message, posted_at=now, resolved_at=resolved_at
        )
        async with database.transaction() as connection:
            # Stored at once: a retry must edit this message, not post another.
            await alerts_store.save_notice(connection, notice)
    await _plan_after_alert(delivery, group, route, action, now)


def _alert_mention(delivery: Delivery, group: Group, route: AlertRoute) -> str | None:
    """The route's mention for this destination's platform, when the group pages."""
    destination = delivery.config.destinations.get(delivery.job.destination)
    if destination is None or not alerts.pages(group, route):
        return None
    return route.mention.get(destination.kind)


def _threshold(delivery: Delivery) -> str | None:
    alerts_config = delivery.config.alerts
    if alerts_config is None or alerts_config.low_balance is None:
        return None
    return f"{alerts_config.low_balance:g}"


async def _resolved_post(delivery: Delivery, group: Group, mention: str | None) -> Post:
    """The incident resolved, with the first words of each distinct text never sent, read
    back from the stored events (an erased one is left out)."""
    async with delivery.database.transaction() as connection:
        stored = await events_store.get_many(connection, list(group.samples.values()))
    texts = []
    for event_id in sorted(stored):
        event = parse_event(_json_or_none(stored[event_id].payload))
        if isinstance(event, DeliveryReport):
            texts.append((event.message.reference.strip(), event.message.content))
    return render.resolved_post(
        group, texts, mention, threshold=_threshold(delivery), words=delivery.words
    )


def _json_or_none(payload: str) -> object:
    try:
        return json.loads(payload)
    except ValueError:
        return None


async def _plan_after_alert(
    delivery: Delivery, group: Group, route: AlertRoute, action: Action, now: float
) -> None:
    """Once the alert is out: the next alert job if the group grew meanwhile, else (when
    something was posted or edited) a check for when it may have gone quiet."""
    job, database = delivery.job, delivery.database
    group_id = _payload(delivery, AlertJob).group_id
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
                event_id=latest.last_event_id or None,
                destination=job.destination,
                payload=AlertJob(group_id=group_id),
                now=now,
                due=next_due,
            )
            next_due = next_due if added else None
        elif latest.cleared_at != group.cleared_at or (
            action is not Action.NOTHING and group.count > 0 and group.cleared_at is None
        ):
            # The cause went away while this was being sent: resolve what was just told, now.
            # Otherwise (not tied to an event, which has its alert job already): checked when
            # it is due.
            cleared = latest.cleared_at != group.cleared_at
            await outbox_store.enqueue(
                database,
                connection,
                event_id=None,
                destination=job.destination,
                payload=AlertJob(group_id=group_id, resolve=True),
                now=now,
                due=None if cleared else alerts.resolve_after_ends(group, route, now),
            )
        told = replace(notice, notified_at=now, notified_count=group.count, pending_at=next_due)
        await alerts_store.save_notice(connection, told)


async def _check(
    delivery: Delivery, group: Group, notice: Notice, route: AlertRoute, now: float
) -> None:
    """A posted alert, checked (`alerts.check_action`): once quiet, edited to say since
    when nothing new failed (an incident stays red and open; a per-recipient group's alert
    is then over); once the incident's cause is gone, edited to say it is resolved and what
    is still undone, and a short resolution posted as a reply to it, so whoever was paged
    hears of it (an edit notifies no one)."""
    action = alerts.check_action(notice, group, now, route)
    if action is Action.NOTHING:
        return
    assert notice.chat is not None and notice.message is not None
    alert = Sent(notice.chat, notice.message, notice.message)
    mention = _alert_mention(delivery, group, route)
    if action is Action.RESOLVE:
        resolved = await _resolved_post(delivery, group, mention)
        await _edit_if_there(delivery, alert, replace(resolved, mention=None))
        reply = render.resolution_reply(
            group, mention, threshold=_threshold(delivery), words=delivery.words
        )
        await delivery.adapter.reply(alert, delivery.adapter.render(reply)[0])
    else:
        incident = alerts.is_incident(group)
        quiet = render.alert_post(
            group,
            mention,
            firing=incident,
            threshold=_threshold(delivery),
            quiet=True,
            words=delivery.words,
        )
        await _edit_if_there(delivery, alert, quiet)
        if incident:
            return  # still open: a later failure edits the same alert
    async with delivery.database.transaction() as connection:
        current = await alerts_store.load(connection, group.id, notice.destination, lock=True)
        if current is not None:
            await alerts_store.save_notice(connection, replace(current[1], resolved_at=now))


async def _edit_if_there(delivery: Delivery, alert: Sent, post: Post) -> None:
    try:
        await delivery.adapter.edit(alert, delivery.adapter.render(post)[0])
    except MessageGone:
        pass  # someone deleted the alert: nothing is left to edit


async def deliver_notice(delivery: Delivery) -> None:
    """A destination that fails for good, or whose chat moved, told to on-call."""
    notice = _payload(delivery, NoticeJob)
    mention = _on_call_mention(delivery)
    if notice.reason == NOT_UNDERSTOOD:
        post = await _not_understood_post(delivery, notice, mention)
    elif notice.reason == Reason.MOVED:
        post = render.chat_moved_post(notice, mention, delivery.words)
    else:
        post = render.destination_failure_post(
            notice.failing, notice.reason, notice.detail, mention, delivery.words
        )
    await _post_alone(delivery, post)


async def _not_understood_post(delivery: Delivery, notice: NoticeJob, mention: str | None) -> Post:
    """How many such events came in the interval before the notice (and since)."""
    alerts_config = delivery.config.alerts
    window = alerts_config.top.repeat_interval if alerts_config is not None else 3600.0
    async with delivery.database.transaction() as connection:
        count = await events_store.not_understood_count(
            connection, notice.failing or None, notice.detail, delivery.job.created_at - window
        )
    return render.not_understood_post(
        notice.failing, notice.detail, count, window, mention, delivery.words
    )


async def deliver_credit(delivery: Delivery) -> None:
    """The Smstools credit fell under `alerts.low_balance`, or rose above it again."""
    credit = _payload(delivery, CreditJob)
    mention = _on_call_mention(delivery)
    await _post_alone(
        delivery,
        render.credit_post(credit.low, credit.balance, credit.threshold, mention, delivery.words),
    )


def _log_delivered(job: Job, message: str, *args: object) -> None:
    """Log a delivery at INFO; `args` may be callables, called only when the line is
    written (masking a number costs more than the rest of the line)."""
    if not log.isEnabledFor(logging.INFO):
        return
    args = tuple(arg() if callable(arg) else arg for arg in args)
    log.info(
        message,
        *args,
        extra={
            "event_id": job.event_id,
            "webhook_type": "inbox_message",
            "destination": job.destination,
            "job_id": job.id,
            "outcome": "delivered",
        },
    )


def _on_call_mention(delivery: Delivery) -> str | None:
    """The top alerts level's mention for this destination's platform, if any."""
    destination = delivery.config.destinations.get(delivery.job.destination)
    if delivery.config.alerts is None or destination is None:
        return None
    return delivery.config.alerts.top.mention.get(destination.kind)


async def _post_alone(delivery: Delivery, post: Post) -> None:
    """A post of its own (no thread): every part of it."""
    for part in delivery.adapter.render(post):
        await delivery.adapter.send(part, None)


HANDLERS: dict[Kind, Callable[[Delivery], Awaitable[None]]] = {
    Kind.INBOX: deliver_inbox,
    Kind.FAILURE_NOTE: deliver_failure_note,
    Kind.READ: deliver_read,
    Kind.ALERT: deliver_alert,
    Kind.NOTICE: deliver_notice,
    Kind.REPLY: replies.deliver_reply,
    Kind.REPLY_STATUS: replies.deliver_reply_status,
    Kind.ANSWER_SHOWN: answers.deliver_answer_shown,
    Kind.CREDIT: deliver_credit,
}
