"""Alert groups and their notices per destination: the grouping state, kept in the database
so a restart neither loses a pending alert nor repeats a sent one.

Every function runs inside the caller's transaction and locks the rows it changes (on
PostgreSQL `FOR UPDATE`; SQLite takes its write lock at BEGIN), so a webhook counting a new
failure and a worker finishing a notification see each other's changes whole.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from bridge.store.db import Database
from bridge.store.schema import alert_groups, alert_notices

MAX_RECEIVERS = 10


@dataclass(frozen=True)
class Group:
    id: int
    group_key: str
    labels: dict[str, str]
    sender: str
    timezone: str
    count: int
    codes: dict[str, int]  # "code/detail" → failures
    receivers: list[str]  # the first ten distinct receivers
    others: int  # failures to receivers not in `receivers`
    first_at: float
    last_at: float
    last_event_id: int


@dataclass(frozen=True)
class Notice:
    group_id: int
    destination: str
    pending_at: float | None
    notified_at: float | None
    notified_count: int
    posted_at: float | None
    chat: str | None
    message: str | None


_GROUP_COLUMNS = (
    alert_groups.c.id,
    alert_groups.c.group_key,
    alert_groups.c.labels,
    alert_groups.c.sender,
    alert_groups.c.timezone,
    alert_groups.c.count,
    alert_groups.c.codes,
    alert_groups.c.receivers,
    alert_groups.c.others,
    alert_groups.c.first_at,
    alert_groups.c.last_at,
    alert_groups.c.last_event_id,
)
_NOTICE_COLUMNS = (
    alert_notices.c.group_id,
    alert_notices.c.destination,
    alert_notices.c.pending_at,
    alert_notices.c.notified_at,
    alert_notices.c.notified_count,
    alert_notices.c.posted_at,
    alert_notices.c.chat,
    alert_notices.c.message,
)


def _group(row: Any) -> Group:
    values = list(row)
    values[2], values[6], values[7] = (json.loads(values[i]) for i in (2, 6, 7))
    return Group(*values)


async def add_failure(
    database: Database,
    connection: AsyncConnection,
    *,
    group_key: str,
    labels: dict[str, str],
    sender: str,
    timezone: str,
    code: str,
    receiver: str,
    at: float,
    event_id: int,
    quiet_after: float,
) -> tuple[Group, bool]:
    """Count one failure into its group; True when this starts the group afresh.

    A group that has been quiet for `quiet_after` (repeat_interval) starts again from zero:
    a new alert message rather than an edit of one from hours ago.
    """
    await connection.execute(
        database.insert(alert_groups)
        .values(
            group_key=group_key,
            labels=json.dumps(labels, sort_keys=True),
            sender=sender,
            timezone=timezone,
            count=0,
            codes="{}",
            receivers="[]",
            others=0,
            first_at=at,
            last_at=at,
            last_event_id=event_id,
        )
        .on_conflict_do_nothing(index_elements=["group_key"])
    )
    row = (
        await connection.execute(
            select(*_GROUP_COLUMNS).where(alert_groups.c.group_key == group_key).with_for_update()
        )
    ).one()
    group = _group(row)
    fresh = group.count == 0 or at - group.last_at > quiet_after
    codes = {} if fresh else dict(group.codes)
    receivers = [] if fresh else list(group.receivers)
    others = 0 if fresh else group.others
    codes[code] = codes.get(code, 0) + 1
    if receiver in receivers:
        pass
    elif len(receivers) < MAX_RECEIVERS:
        receivers.append(receiver)
    else:
        others += 1
    values = {
        "count": 1 if fresh else group.count + 1,
        "codes": json.dumps(codes, sort_keys=True),
        "receivers": json.dumps(receivers),
        "others": others,
        "first_at": at if fresh else min(group.first_at, at),
        "last_at": at if fresh else max(group.last_at, at),
        "last_event_id": event_id,
        "sender": sender if fresh else group.sender,
        "timezone": timezone if fresh else group.timezone,
    }
    await connection.execute(
        update(alert_groups).where(alert_groups.c.id == group.id).values(**values)
    )
    if fresh:
        # Forget what was told about the previous run; a pending notification stays due.
        await connection.execute(
            update(alert_notices)
            .where(alert_notices.c.group_id == group.id)
            .values(notified_at=None, notified_count=0, posted_at=None, chat=None, message=None)
        )
    row = (
        await connection.execute(select(*_GROUP_COLUMNS).where(alert_groups.c.id == group.id))
    ).one()
    return _group(row), fresh


async def schedule(
    database: Database,
    connection: AsyncConnection,
    group_id: int,
    destination: str,
    *,
    now: float,
    group_wait: float,
    group_interval: float,
) -> float | None:
    """When this destination should next hear about the group; None when that is already
    scheduled. The first notification waits `group_wait`, later ones `group_interval` after
    the previous."""
    await connection.execute(
        database.insert(alert_notices)
        .values(group_id=group_id, destination=destination, notified_count=0)
        .on_conflict_do_nothing(index_elements=["group_id", "destination"])
    )
    notice = await _notice(connection, group_id, destination, lock=True)
    assert notice is not None
    if notice.pending_at is not None:
        return None
    if notice.notified_at is None:
        due = now + group_wait
    else:
        due = max(now, notice.notified_at + group_interval)
    await _set_notice(connection, group_id, destination, pending_at=due)
    return due


async def load(
    connection: AsyncConnection, group_id: int, destination: str, *, lock: bool = False
) -> tuple[Group, Notice] | None:
    query = select(*_GROUP_COLUMNS).where(alert_groups.c.id == group_id)
    row = (await connection.execute(query.with_for_update() if lock else query)).first()
    notice = await _notice(connection, group_id, destination, lock=lock)
    if row is None or notice is None:
        return None
    return _group(row), notice


async def record_post(
    connection: AsyncConnection,
    group_id: int,
    destination: str,
    chat: str,
    message: str,
    now: float,
) -> None:
    """The alert message to edit from now on (stored at once: a retry must not post again)."""
    await _set_notice(connection, group_id, destination, chat=chat, message=message, posted_at=now)


async def notified(
    connection: AsyncConnection,
    group_id: int,
    destination: str,
    *,
    count: int,
    now: float,
    next_due: float | None,
) -> None:
    await _set_notice(
        connection,
        group_id,
        destination,
        notified_at=now,
        notified_count=count,
        pending_at=next_due,
    )


async def _notice(
    connection: AsyncConnection, group_id: int, destination: str, *, lock: bool
) -> Notice | None:
    query = select(*_NOTICE_COLUMNS).where(
        alert_notices.c.group_id == group_id, alert_notices.c.destination == destination
    )
    row = (await connection.execute(query.with_for_update() if lock else query)).first()
    return Notice(*row) if row else None


async def _set_notice(
    connection: AsyncConnection, group_id: int, destination: str, **values: Any
) -> None:
    await connection.execute(
        update(alert_notices)
        .where(alert_notices.c.group_id == group_id, alert_notices.c.destination == destination)
        .values(**values)
    )
