"""Pruning's SQL: what outlived its retention, counted or removed a small batch at a time.

Each category is a query for the ids past their cutoff and what to do with a batch of them,
so `smsbridge prune --dry-run` counts exactly what a real run removes. Content is erased in
place where the row itself is a record (an event, a delivery status); what only served
delivery (raw bodies, finished jobs, links of finished conversations) is deleted.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Select, delete, exists, func, select, text
from sqlalchemy.ext.asyncio import AsyncConnection

from bridge.store.db import Database
from bridge.store.erasure import (
    delete_conversations,
    erase_chat_events,
    erase_events,
    erase_statuses,
)
from bridge.store.outbox import DEAD, DONE, PENDING
from bridge.store.replies import PLANNED, SENDING
from bridge.store.schema import (
    alert_groups,
    alert_notices,
    chat_events,
    chat_messages,
    conversations,
    events,
    message_status,
    outbox,
    pace,
    replies,
    webhook_requests,
)

ADVISORY_LOCK = 0x5D5B_71D7  # one pruner at a time across every smsbridge process


@dataclass(frozen=True)
class Cutoffs:
    """UNIX times: what is older goes (see `bridge.ops.retention.cutoffs`)."""

    raw_bodies: float
    content: float
    done_jobs: float
    dead_letters: float
    conversations: float  # quiet since before this, hence no longer live
    alert_groups: float
    pace: float  # untouched since before this, a destination's bucket is full again


@dataclass(frozen=True)
class Category:
    name: str  # "raw webhook bodies"
    verb: str  # what happens to them: "deleted", "erased"
    candidates: Callable[[Cutoffs], Select[Any]]  # one column: the keys past their cutoff
    apply: Callable[[AsyncConnection, list[Any], float], Awaitable[object]]


def _done_jobs(cutoffs: Cutoffs) -> Select[Any]:
    return select(outbox.c.id).where(
        outbox.c.status == DONE, outbox.c.finished_at < cutoffs.done_jobs
    )


def _dead_letters(cutoffs: Cutoffs) -> Select[Any]:
    return select(outbox.c.id).where(
        outbox.c.status == DEAD, outbox.c.finished_at < cutoffs.dead_letters
    )


async def _delete_jobs(connection: AsyncConnection, ids: list[Any], _now: float) -> None:
    await connection.execute(delete(outbox).where(outbox.c.id.in_(ids)))


def _event_contents(cutoffs: Cutoffs) -> Select[Any]:
    # A job still to deliver, or a dead letter that may be retried, needs its event's content.
    needed = exists().where(outbox.c.event_id == events.c.id, outbox.c.status.in_([PENDING, DEAD]))
    return select(events.c.id).where(
        events.c.erased_at.is_(None), events.c.received_at < cutoffs.content, ~needed
    )


def _raw_bodies(cutoffs: Cutoffs) -> Select[Any]:
    # A body still waiting for the intake is kept whatever its age: its events are not stored yet.
    return select(webhook_requests.c.id).where(
        webhook_requests.c.received_at < cutoffs.raw_bodies,
        webhook_requests.c.planned_at.is_not(None),
    )


async def _delete_bodies(connection: AsyncConnection, ids: list[Any], _now: float) -> None:
    await connection.execute(delete(webhook_requests).where(webhook_requests.c.id.in_(ids)))


def _statuses(cutoffs: Cutoffs) -> Select[Any]:
    return select(message_status.c.messageid).where(
        message_status.c.erased_at.is_(None), message_status.c.updated_at < cutoffs.content
    )


def _chat_message_links(cutoffs: Cutoffs) -> Select[Any]:
    # A job still posting its parts needs to know which it posted already.
    posting = exists().where(outbox.c.id == chat_messages.c.outbox_id, outbox.c.status == PENDING)
    return select(chat_messages.c.id).where(chat_messages.c.created_at < cutoffs.content, ~posting)


async def _delete_chat_messages(connection: AsyncConnection, ids: list[Any], _now: float) -> None:
    await connection.execute(delete(chat_messages).where(chat_messages.c.id.in_(ids)))


def _chat_events(cutoffs: Cutoffs) -> Select[Any]:
    # An agent's answer not sent yet is read from its chat event when the job runs.
    unsent = exists().where(replies.c.chat_event_id == chat_events.c.id, replies.c.state == PLANNED)
    return select(chat_events.c.id).where(
        chat_events.c.erased_at.is_(None), chat_events.c.received_at < cutoffs.content, ~unsent
    )


def _replies(cutoffs: Cutoffs) -> Select[Any]:
    # Settled long ago: no status report is coming any more to show on the agent's message.
    return select(replies.c.id).where(
        replies.c.updated_at < cutoffs.content, replies.c.state.not_in([PLANNED, SENDING])
    )


async def _delete_replies(connection: AsyncConnection, ids: list[Any], _now: float) -> None:
    await connection.execute(delete(replies).where(replies.c.id.in_(ids)))


def _conversations(cutoffs: Cutoffs) -> Select[Any]:
    # A reply still to send or to settle needs its conversation (who, from which line).
    unsettled = exists().where(
        replies.c.conversation_id == conversations.c.id, replies.c.state.in_([PLANNED, SENDING])
    )
    return select(conversations.c.id).where(
        conversations.c.last_message_at < cutoffs.conversations, ~unsettled
    )


async def _delete_conversations(connection: AsyncConnection, ids: list[Any], _now: float) -> None:
    await delete_conversations(connection, ids)


def _alert_groups(cutoffs: Cutoffs) -> Select[Any]:
    due = exists().where(
        alert_notices.c.group_id == alert_groups.c.id, alert_notices.c.pending_at.is_not(None)
    )
    return select(alert_groups.c.id).where(alert_groups.c.last_at < cutoffs.alert_groups, ~due)


async def _delete_alert_groups(connection: AsyncConnection, ids: list[Any], _now: float) -> None:
    await connection.execute(delete(alert_notices).where(alert_notices.c.group_id.in_(ids)))
    await connection.execute(delete(alert_groups).where(alert_groups.c.id.in_(ids)))


def _pace_at_rest(cutoffs: Cutoffs) -> Select[Any]:
    # A full bucket under no 429's pause holds nobody back: the same as no row at all.
    return select(pace.c.destination).where(
        pace.c.updated_at < cutoffs.pace, pace.c.paused_until < cutoffs.pace
    )


async def _delete_pace(connection: AsyncConnection, ids: list[Any], _now: float) -> None:
    # A worker taking a token in between at worst gets that one token back.
    await connection.execute(delete(pace).where(pace.c.destination.in_(ids)))


# Jobs first: a dead letter pruned now frees its event's content in the same run.
CATEGORIES: Sequence[Category] = (
    Category("delivered jobs", "deleted", _done_jobs, _delete_jobs),
    Category("dead letters", "deleted", _dead_letters, _delete_jobs),
    Category("message contents (text and numbers)", "erased", _event_contents, erase_events),
    Category("raw webhook bodies", "deleted", _raw_bodies, _delete_bodies),
    Category("delivery statuses' numbers", "erased", _statuses, erase_statuses),
    Category("agents' chat messages (text)", "erased", _chat_events, erase_chat_events),
    Category("chat message links", "deleted", _chat_message_links, _delete_chat_messages),
    Category("agents' replies", "deleted", _replies, _delete_replies),
    Category("conversations no longer live", "deleted", _conversations, _delete_conversations),
    Category("quiet alert groups", "deleted", _alert_groups, _delete_alert_groups),
    Category("destinations' pace at rest", "deleted", _pace_at_rest, _delete_pace),
)


# Every table pruning erases or deletes customer data in (a destination's pace holds none).
TABLES = (
    alert_groups,
    alert_notices,
    chat_events,
    chat_messages,
    conversations,
    events,
    message_status,
    outbox,
    replies,
    webhook_requests,
)


async def count(connection: AsyncConnection, category: Category, cutoffs: Cutoffs) -> int:
    query = select(func.count()).select_from(category.candidates(cutoffs).subquery())
    return int((await connection.execute(query)).scalar_one())


async def remove_batch(
    connection: AsyncConnection, category: Category, cutoffs: Cutoffs, now: float, limit: int
) -> int:
    """Remove up to `limit` of the category; return how many."""
    ids = list((await connection.execute(category.candidates(cutoffs).limit(limit))).scalars())
    if ids:
        await category.apply(connection, ids, now)
    return len(ids)


async def try_lock(database: Database, connection: AsyncConnection) -> bool:
    """Take the pruning lock until this transaction ends; False when another process holds
    it (PostgreSQL). On SQLite, BEGIN IMMEDIATE already serialises writers."""
    if database.dialect != "postgresql":
        return True
    query = text(f"SELECT pg_try_advisory_xact_lock({ADVISORY_LOCK})")
    return bool((await connection.execute(query)).scalar_one())
