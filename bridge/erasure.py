"""Erasure on request: `smsbridge forget NUMBER` removes what is stored about one customer.

Their messages' text and their number go from events, raw bodies, delivery statuses, outbox
lanes and alert groups; their conversations and the links to the chat messages that showed
them are deleted. Counts stay right: events, statuses, jobs and alert groups keep their rows
(a receiver removed from a group's list still counts among its "more"). Jobs not delivered
yet are closed: the text they would post is gone. Posts already in Slack or Telegram are not
the bridge's to delete; the threads they are in are listed so someone can.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from typing import Any

from bridge.phones import international
from bridge.routing import number_key
from bridge.store import erasure as store
from bridge.store.db import Database

SCAN_BATCH = 1000  # events read per transaction while looking for the customer's
_NUMBER_FIELDS = {"sender", "receiver", "orig_sender", "orig_receiver"}
FORGOTTEN = "forgotten"


@dataclass
class Erased:
    number: str
    events: int = 0
    raw_bodies: int = 0
    jobs: int = 0
    closed_jobs: int = 0
    statuses: int = 0
    conversations: int = 0
    chat_links: int = 0
    alert_groups: int = 0
    threads: list[store.Thread] = field(default_factory=list)

    @property
    def anything(self) -> bool:
        counts = (self.events, self.raw_bodies, self.jobs, self.statuses, self.conversations)
        return any(counts) or bool(self.chat_links or self.alert_groups)

    def lines(self) -> list[str]:
        who = international(self.number)
        if not self.anything:
            return [f"nothing stored about {who}"]
        lines = [
            f"erased what was stored about {who}:",
            f"  events: {self.events} (text and numbers erased; each still counted)",
            f"  raw webhook bodies: {self.raw_bodies} deleted",
            f"  outbox jobs: {self.jobs} (lane erased; {self.closed_jobs} not delivered, closed)",
            f"  delivery statuses: {self.statuses} (numbers erased)",
            f"  conversations: {self.conversations} deleted, "
            f"with {self.chat_links} chat message link(s)",
            f"  alert groups: {self.alert_groups} (number taken out of the receivers)",
        ]
        threads = [thread for thread in self.threads if thread.thread is not None]
        if threads:
            lines.append("posts already made stay in the chat; delete them there if needed:")
            for thread in threads:
                lines.append(f"  {thread.destination}: chat {thread.chat}, thread {thread.thread}")
        return lines


def concerns(event: store.StoredEvent, number: str) -> bool:
    """Whether a stored event is about the customer: a sender or receiver field holds their
    number; in an event not understood, the number anywhere in it."""
    try:
        document = json.loads(event.payload)
    except ValueError:
        document = None
    if any(number_key(value) == number for value in _number_fields(document)):
        return True
    if event.status != "ok":
        return re.search(rf"(?<!\d){re.escape(number)}(?!\d)", event.payload) is not None
    return False


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


def without_number(group: store.AlertGroup, number: str) -> store.AlertGroup:
    """The alert group with the customer's number taken out; its counts unchanged."""
    receivers = json.loads(group.receivers)
    labels = json.loads(group.labels)
    others, group_key, sender = group.others, group.group_key, group.sender
    if number in receivers:
        receivers.remove(number)
        others += 1  # still one of the failures, now among "and N more"
    for label in ("sender", "receiver"):
        if labels.get(label) == number:
            labels[label] = FORGOTTEN
            # Unique per group: two forgotten customers' groups must stay two groups.
            group_key = group_key.replace(f"{label}={number}", f"{label}={FORGOTTEN}-{group.id}")
    if number_key(sender) == number:
        sender = ""
    return replace(
        group,
        group_key=group_key,
        labels=json.dumps(labels, sort_keys=True),
        sender=sender,
        receivers=json.dumps(receivers),
        others=others,
    )


async def forget(database: Database, number: str, now: float) -> Erased:
    """Erase what is stored about the customer with this number key (E.164 digits)."""
    erased = Erased(number)
    matching, after = [], 0
    while True:  # short read transactions: webhooks keep being stored meanwhile
        async with database.transaction() as connection:
            batch = await store.events_after(connection, after, SCAN_BATCH)
        if not batch:
            break
        matching += [event.id for event in batch if concerns(event, number)]
        after = batch[-1].id
    async with database.transaction() as connection:
        erased.events, erased.raw_bodies = await store.erase_events(connection, matching, now)
        erased.jobs, erased.closed_jobs = await store.erase_jobs(connection, matching, now)
        erased.statuses = await store.erase_statuses(connection, number, now)
        (
            erased.conversations,
            erased.chat_links,
            erased.threads,
        ) = await store.delete_conversations(connection, number)
        for group in await store.alert_groups_all(connection):
            changed = without_number(group, number)
            if changed != group:
                await store.rewrite_alert_group(connection, changed)
                erased.alert_groups += 1
    return erased
