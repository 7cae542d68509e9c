"""Alert groups and their notices per destination, kept in the database so a restart neither
loses a pending alert nor repeats a sent one. The rules live in `bridge/intake/alerts.py`; here a
group or notice is only locked and loaded, then saved.

Locks are taken inside the caller's transaction (on PostgreSQL `FOR UPDATE`; SQLite takes its
write lock at BEGIN), so a webhook counting a new failure and a worker finishing a
notification see each other's changes whole.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, replace
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from bridge.store.db import Database
from bridge.store.schema import alert_groups, alert_notices


@dataclass(frozen=True)
class Group:
    """Failures counted together. A group with `count` 0 has just been created."""

    id: int
    group_key: str
    route: dict[str, list[str]] | None  # the matchers of the route it was grouped by
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
    cause: int | None = None  # the account-wide detail code: one incident whoever sent
    senders: list[str] = field(default_factory=list)  # every sender it failed for (keys)
    unsent: dict[str, int] = field(default_factory=dict)  # gateway `reference` → failures
    samples: dict[str, int] = field(default_factory=dict)  # a distinct text → its first event
    balance: str | None = None  # the low credit the credit watch read, as shown
    cleared_at: float | None = None  # the cause was seen gone: the incident is resolved


def _group(row: Any) -> Group:
    """A stored group; a row from before incidents has empty JSON columns."""
    group = Group(*row)
    return replace(
        group,
        senders=group.senders or [],
        unsent=group.unsent or {},
        samples=group.samples or {},
    )


@dataclass(frozen=True)
class Notice:
    """A group's alert at one destination: what is scheduled, what was told, what to edit."""

    group_id: int
    destination: str
    pending_at: float | None  # an outbox job is due then
    notified_at: float | None
    notified_count: int  # the group's count when last told
    posted_at: float | None
    chat: str | None
    message: str | None
    resolved_at: float | None = None  # when the alert was edited to say it is over


_GROUP_COLUMNS = tuple(alert_groups.c[name] for name in Group.__dataclass_fields__)
_NOTICE_COLUMNS = tuple(alert_notices.c[name] for name in Notice.__dataclass_fields__)


async def lock_group(
    database: Database,
    connection: AsyncConnection,
    *,
    group_key: str,
    route: dict[str, list[str]],
    labels: dict[str, str],
    at: float,
    event_id: int,
) -> Group:
    """The group with this key, locked until the transaction ends; created empty if new."""
    await connection.execute(
        database.insert(alert_groups)
        .values(
            group_key=group_key,
            route=route,
            labels=labels,
            sender="",
            timezone="",
            count=0,
            codes={},
            receivers=[],
            others=0,
            first_at=at,
            last_at=at,
            last_event_id=event_id,
            senders=[],
            unsent={},
            samples={},
        )
        .on_conflict_do_nothing(index_elements=["group_key"])
    )
    query = select(*_GROUP_COLUMNS).where(alert_groups.c.group_key == group_key)
    return _group((await connection.execute(query.with_for_update())).one())


async def save_group(connection: AsyncConnection, group: Group) -> None:
    values = asdict(group)
    del values["id"]
    await connection.execute(
        update(alert_groups).where(alert_groups.c.id == group.id).values(**values)
    )


async def forget_notices(connection: AsyncConnection, group_id: int) -> None:
    """A group starting afresh: forget what was told about its previous run (a pending
    notification stays due)."""
    await connection.execute(
        update(alert_notices)
        .where(alert_notices.c.group_id == group_id)
        .values(
            notified_at=None,
            notified_count=0,
            posted_at=None,
            chat=None,
            message=None,
            resolved_at=None,
        )
    )


async def lock_notice(
    database: Database, connection: AsyncConnection, group_id: int, destination: str
) -> Notice:
    """The group's notice at `destination`, locked until the transaction ends."""
    await connection.execute(
        database.insert(alert_notices)
        .values(group_id=group_id, destination=destination, notified_count=0)
        .on_conflict_do_nothing(index_elements=["group_id", "destination"])
    )
    notice = await _notice(connection, group_id, destination, lock=True)
    assert notice is not None
    return notice


async def save_notice(connection: AsyncConnection, notice: Notice) -> None:
    values: dict[str, Any] = asdict(notice)
    await connection.execute(
        update(alert_notices)
        .where(
            alert_notices.c.group_id == values.pop("group_id"),
            alert_notices.c.destination == values.pop("destination"),
        )
        .values(**values)
    )


async def load(
    connection: AsyncConnection, group_id: int, destination: str, *, lock: bool = False
) -> tuple[Group, Notice] | None:
    query = select(*_GROUP_COLUMNS).where(alert_groups.c.id == group_id)
    row = (await connection.execute(query.with_for_update() if lock else query)).first()
    notice = await _notice(connection, group_id, destination, lock=lock)
    if row is None or notice is None:
        return None
    return _group(row), notice


async def open_incidents(connection: AsyncConnection) -> list[Group]:
    """The account-wide groups whose cause is not known to be gone (few: one per cause at
    most), unlocked: `clear` decides under the row's own update."""
    query = (
        select(*_GROUP_COLUMNS)
        .where(alert_groups.c.cause.is_not(None), alert_groups.c.cleared_at.is_(None))
        .order_by(alert_groups.c.id)
    )
    return [_group(row) for row in await connection.execute(query)]


async def clear(connection: AsyncConnection, group: Group, at: float) -> bool:
    """Mark the incident's cause gone, unless it changed since `group` was read (a new
    failure, or another process cleared it first). True when this call did."""
    result = await connection.execute(
        update(alert_groups)
        .where(
            alert_groups.c.id == group.id,
            alert_groups.c.cleared_at.is_(None),
            alert_groups.c.count == group.count,
            alert_groups.c.last_at == group.last_at,
        )
        .values(cleared_at=at)
    )
    return bool(result.rowcount)


async def destinations_told(connection: AsyncConnection, group_id: int) -> list[str]:
    """The destinations where the group's alert is posted and not yet resolved."""
    query = select(alert_notices.c.destination).where(
        alert_notices.c.group_id == group_id,
        alert_notices.c.message.is_not(None),
        alert_notices.c.resolved_at.is_(None),
    )
    return [row[0] for row in await connection.execute(query.order_by(alert_notices.c.destination))]


async def _notice(
    connection: AsyncConnection, group_id: int, destination: str, *, lock: bool
) -> Notice | None:
    query = select(*_NOTICE_COLUMNS).where(
        alert_notices.c.group_id == group_id, alert_notices.c.destination == destination
    )
    row = (await connection.execute(query.with_for_update() if lock else query)).first()
    return Notice(*row) if row else None
