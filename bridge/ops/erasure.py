"""Erasure on request: `smsbridge forget NUMBER` removes what is stored about one customer.

Webhook bodies still waiting for the worker's intake lose the customer's events first (a body
of only theirs is deleted): those were never shown to anyone, and never will be. Then their
messages' text and their number go from events, raw bodies, delivery statuses, outbox
jobs (lanes and payloads) and alert groups; what agents wrote in the customer's threads goes
from the chat events; their conversations, the links to the chat messages that showed them,
the replies sent to them and their opt-out are deleted. Counts stay right: events, statuses,
jobs, chat events and alert groups keep their rows (a receiver removed from a group's list
still counts among its "more"). Jobs not delivered yet are closed: the text they would post
or send is gone. Then the old copies of those rows are overwritten on the database's disk
(`store.disk`); if that cannot finish now, it says so, and running it again finishes it.
Posts already in Slack or Telegram are not the bridge's to delete; the threads they are in
are listed so someone can.
"""

from __future__ import annotations

import functools
import json
import re
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass, field, replace
from typing import Any, Protocol, TypeVar

from sqlalchemy.ext.asyncio import AsyncConnection

from bridge import json_text, phones
from bridge.intake import alerts
from bridge.intake.agent_messages import places
from bridge.intake.ingest import stored_items
from bridge.jobs import (
    AnswerShownJob,
    ConversationKey,
    FailureNoteJob,
    InboxJob,
    ReadJob,
    ReplyJob,
    ReplyStatusJob,
    Unreadable,
    conversation_lane,
)
from bridge.store import erasure as erasure_store
from bridge.store import events as events_store
from bridge.store.db import Database
from bridge.store.disk import Scrubbed, scrub

SCAN_BATCH = 1000  # rows read per transaction while looking for the customer's
_NUMBER_FIELDS = {"sender", "receiver", "orig_sender", "orig_receiver"}
FORGOTTEN = "forgotten"


@dataclass
class Erased:
    number: str
    events: int = 0
    raw_bodies: int = 0
    waiting: int = 0  # events taken out of bodies not planned yet
    jobs: int = 0
    closed_jobs: int = 0
    statuses: int = 0
    conversations: int = 0
    chat_links: int = 0
    replies: int = 0
    chat_events: int = 0
    opt_outs: int = 0
    alert_groups: int = 0
    threads: list[erasure_store.Thread] = field(default_factory=list)
    disk: Scrubbed | None = None  # what became of the old copies on disk

    @property
    def anything(self) -> bool:
        stored = (self.events, self.raw_bodies, self.waiting, self.jobs, self.statuses)
        linked = (self.conversations, self.chat_links, self.replies, self.chat_events)
        return any(stored) or any(linked) or bool(self.opt_outs or self.alert_groups)

    def lines(self) -> list[str]:
        who = phones.international(self.number)
        if not self.anything:
            return [f"nothing stored about {who}", *self._disk_lines()]
        lines = [
            f"erased what was stored about {who}:",
            f"  events: {self.events} (text and numbers erased; each still counted)",
            f"  raw webhook bodies: {self.raw_bodies} deleted",
            f"  events not planned yet: {self.waiting} taken out of their bodies (never shown)",
            f"  outbox jobs: {self.jobs} (number erased; {self.closed_jobs} not delivered, closed)",
            f"  delivery statuses: {self.statuses} (numbers erased)",
            f"  conversations: {self.conversations} deleted, "
            f"with {self.chat_links} chat message link(s)",
            f"  agents' replies: {self.replies} deleted",
            f"  chat events: {self.chat_events} (what agents wrote erased; each still counted)",
            f"  alert groups: {self.alert_groups} (number taken out of the receivers)",
        ]
        if self.opt_outs:
            lines.append(
                f"  opt-outs: {self.opt_outs} deleted (if this customer writes again, agents "
                "can answer them: they must write STOP again to stop that)"
            )
        threads = [thread for thread in self.threads if thread.thread is not None]
        if threads:
            lines.append("posts already made stay in the chat; delete them there if needed:")
            for thread in threads:
                lines.append(f"  {thread.destination}: chat {thread.chat}, thread {thread.thread}")
        return lines + self._disk_lines()

    def _disk_lines(self) -> list[str]:
        if self.disk is None:
            return []
        if not self.disk.done:
            return [f"old copies on disk NOT overwritten yet: {self.disk.detail}; run it again"]
        return [f"old copies on disk overwritten: {self.disk.detail}"] if self.anything else []


def concerns(event: erasure_store.UnerasedEvent, number: str) -> bool:
    """Whether a stored event is about the customer: a sender or receiver field holds their
    number; in an event not understood, the number anywhere in it."""
    try:
        document = json.loads(event.payload)
    except ValueError:
        document = None
    if _names(document, number):
        return True
    if event.status != "ok":
        return _mentions(event.payload, number)
    return False


def _item_concerns(item: Any, number: str) -> bool:
    """Whether an event not stored yet is about the customer: a sender or receiver field, or
    the number anywhere in it."""
    return _names(item, number) or _mentions(json_text.compact(item), number)


def _names(document: Any, number: str) -> bool:
    """Whether a sender or receiver field of `document` holds the number."""
    return any(phones.key(value) == number for value in _number_fields(document))


def _mentions(text: str, number: str) -> bool:
    return re.search(rf"(?<!\d){re.escape(number)}(?!\d)", text) is not None


def _number_fields(value: Any) -> Iterator[str]:
    if isinstance(value, dict):
        for key, item in value.items():
            if key in _NUMBER_FIELDS and isinstance(item, str | int) and item != "":
                yield str(item)
            else:
                yield from _number_fields(item)
    elif isinstance(value, list):
        for item in value:
            yield from _number_fields(item)


def said_in(event: erasure_store.StoredChatEvent, where: set[tuple[str, str]], number: str) -> bool:
    """Whether a chat event was written in one of the customer's threads (`where`: their
    (chat, thread) and (chat, message) places), or names their number."""
    return bool(places(event.platform, event.body) & where) or _mentions(event.body, number)


@dataclass(frozen=True)
class JobErasure:
    """What to do with one of the customer's jobs: close it if still open, and..."""

    payload: dict[str, Any] | None  # ...store this payload instead (None: keep it)
    lane: bool  # ...erase its lane (it holds the number)


def job_erasure(job: erasure_store.StoredJob, number: str) -> JobErasure | None:
    """How a job found for the customer is erased; None when it is not theirs to erase (an
    alert job: its group is rewritten and keeps notifying about the other failures)."""
    match job.payload:
        case (
            InboxJob(conversation=conversation)
            | FailureNoteJob(conversation=conversation)
            | ReplyJob(conversation=conversation)
            | ReplyStatusJob(conversation=conversation)
        ) if conversation.sender == number:
            erased = ConversationKey(receiver=conversation.receiver, sender="")
            payload = job.payload.model_copy(update={"conversation": erased})
            return JobErasure(payload.model_dump(mode="json"), lane=True)
        case AnswerShownJob(conversation=conversation) if conversation.sender == number:
            # It carries what the customer was sent, and who answered them.
            erased = ConversationKey(receiver=conversation.receiver, sender="")
            forgotten = {"conversation": erased, "text": "", "author": ""}
            shown = job.payload.model_copy(update=forgotten)
            return JobErasure(shown.model_dump(mode="json"), lane=True)
        case ReadJob():
            return JobErasure(None, lane=False)  # its event is erased: nothing left to mark
        case Unreadable():
            return JobErasure({}, lane=True)
    return None


def without_number(group: erasure_store.AlertGroup, number: str) -> erasure_store.AlertGroup:
    """The alert group with the customer's number taken out; its counts unchanged.

    A group_by label that held the number says `forgotten`; the group key is built again
    from the group's route and labels (`alerts.key_of`) with `forgotten-<group id>` there,
    so two forgotten customers' groups stay two groups.
    """
    receivers, labels, others = list(group.receivers), dict(group.labels), group.others
    if number in receivers:
        receivers.remove(number)
        others += 1  # still one of the failures, now among "and N more"
    grouped, group_key = dict(labels), group.group_key
    forgotten = [label for label, value in labels.items() if value == number]
    for label in forgotten:
        labels[label] = FORGOTTEN
        grouped[label] = f"{FORGOTTEN}-{group.id}"
    if forgotten:
        group_key = alerts.key_of(group.route, grouped)
    sender = "" if phones.key(group.sender) == number else group.sender
    return replace(
        group,
        group_key=group_key,
        labels=labels,
        sender=sender,
        receivers=receivers,
        others=others,
    )


async def forget(database: Database, number: str, now: float) -> Erased:
    """Erase what is stored about the customer with this number key (`phones.key`), then
    overwrite the old copies on disk (`Erased.disk` says whether that finished)."""
    erased = Erased(number)
    erased.waiting = await _erase_waiting(database, number)
    async with database.transaction() as connection:
        threads = await erasure_store.conversations_of(connection, number)
        conversation_ids = [thread.id for thread in threads]
        where = await erasure_store.chat_messages_of(connection, conversation_ids)
        said = await erasure_store.reply_events(connection, conversation_ids)
    where |= {(t.chat, t.thread) for t in threads if t.chat is not None and t.thread is not None}
    # Short read transactions: webhooks and chat events keep being stored meanwhile.
    matching = [
        event.id
        async for event in _scan(database, erasure_store.events_after)
        if concerns(event, number)
    ]
    said |= {
        event.id
        async for event in _scan(database, erasure_store.chat_events_after)
        if said_in(event, where, number)
    }
    async with database.transaction() as connection:
        erased.raw_bodies = await erasure_store.delete_bodies_of(connection, matching)
        erased.events = await erasure_store.erase_events(connection, matching, now)
        threads = await erasure_store.conversations_of(connection, number)  # any started meanwhile
        conversation_ids = [thread.id for thread in threads]
        lanes = {
            conversation_lane(t.destination, ConversationKey(receiver=t.receiver, sender=number))
            for t in threads
        }
        erased.jobs, erased.closed_jobs = await _erase_jobs(
            connection, matching, lanes, number, now
        )
        statuses = await erasure_store.statuses_of(connection, number)
        erased.statuses = await erasure_store.erase_statuses(connection, statuses, now)
        said |= await erasure_store.reply_events(connection, conversation_ids)
        erased.replies = await erasure_store.delete_replies(connection, conversation_ids)
        erased.chat_events = await erasure_store.erase_chat_events(connection, said, now)
        erased.opt_outs = await erasure_store.delete_opt_outs(connection, number)
        erased.conversations, erased.chat_links = await erasure_store.delete_conversations(
            connection, conversation_ids
        )
        erased.threads = threads
        erased.alert_groups = await _erase_from_alert_groups(connection, number)
    # Even when nothing was found: an earlier run may have erased without finishing this.
    erased.disk = await scrub(database, erasure_store.TABLES)
    return erased


async def _erase_waiting(database: Database, number: str) -> int:
    """Take the customer's events out of the bodies the intake has not planned yet (before
    the events are scanned: a body planned meanwhile is left alone, and its events found
    there); returns how many."""
    taken = 0
    async for body in _scan(database, functools.partial(events_store.waiting, database)):
        items = stored_items(body.raw) or []
        others = [item for item in items if not _item_concerns(item, number)]
        if len(others) == len(items) and not _mentions(body.raw.decode("utf-8", "replace"), number):
            continue
        raw = json.dumps(others, ensure_ascii=False).encode() if others else None
        async with database.transaction() as connection:
            if await erasure_store.rewrite_waiting(connection, body.id, raw):
                taken += max(len(items) - len(others), 1)
    return taken


async def _erase_jobs(
    connection: AsyncConnection,
    matching: list[int],
    lanes: set[str],
    number: str,
    now: float,
) -> tuple[int, int]:
    """Erase the number from the jobs of its events and conversations; (jobs, closed)."""
    found = await erasure_store.jobs_of(connection, matching, lanes)
    # Jobs of the events may be in lanes no conversation names any more (not delivered
    # yet, or the conversation pruned): everything else in those lanes is theirs too.
    theirs = {job.lane for job in found if _is_theirs(job, number)} - lanes
    known = {job.id for job in found}
    found += [
        job for job in await erasure_store.jobs_of(connection, (), theirs) if job.id not in known
    ]
    jobs = closed = 0
    for job in found:
        plan = job_erasure(job, number)
        if plan is not None:
            jobs += 1
            closed += await erasure_store.erase_job(
                connection, job, plan.payload, now, lane=plan.lane
            )
    return jobs, closed


async def _erase_from_alert_groups(connection: AsyncConnection, number: str) -> int:
    """Take the number out of every alert group that names it; how many changed."""
    changed_groups = 0
    for group in await erasure_store.alert_groups_all(connection):
        changed = without_number(group, number)
        if changed != group:
            await erasure_store.rewrite_alert_group(connection, changed)
            changed_groups += 1
    return changed_groups


def _is_theirs(job: erasure_store.StoredJob, number: str) -> bool:
    plan = job_erasure(job, number)
    return plan is not None and plan.lane


class _Row(Protocol):
    @property
    def id(self) -> int: ...


Row = TypeVar("Row", bound=_Row)


async def _scan(
    database: Database, batch: Callable[[AsyncConnection, int, int], Awaitable[list[Row]]]
) -> AsyncIterator[Row]:
    """Every row `batch(connection, after, limit)` gives, in id order, a batch per
    transaction."""
    after = 0
    while True:
        async with database.transaction() as connection:
            rows = await batch(connection, after, SCAN_BATCH)
        if not rows:
            return
        for row in rows:
            yield row
        after = rows[-1].id
