"""The Smstools credit as last read, and what on-call was told about it (in `facts`).

Shared by every process: one claims each check (`claim_check`), so the API is asked once per
interval, and any process can report the last balance at scrape time.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncConnection

from bridge.store.db import Database
from bridge.store.schema import facts

CHECKED_AT = "balance_checked_at"
AMOUNT = "balance_amount"
LOW_TOLD_AT = "balance_low_told_at"  # set while on-call knows the balance is low
_LOCK = "smstools_balance"


@dataclass(frozen=True)
class CreditState:
    amount: float | None
    low_told_at: float | None


async def claim_check(
    database: Database, connection: AsyncConnection, now: float, interval: float
) -> bool:
    """Whether this process should read the balance now; if so, the check is marked taken.

    On PostgreSQL an advisory lock makes two processes asking at once take turns, so only
    one hears yes; SQLite's BEGIN IMMEDIATE already serialises.
    """
    if database.dialect == "postgresql":
        await connection.execute(select(func.pg_advisory_xact_lock(func.hashtext(_LOCK))))
    checked = await _number(connection, CHECKED_AT)
    if checked is not None and now - checked < interval:
        return False
    await _put(database, connection, CHECKED_AT, repr(now))
    return True


async def state(connection: AsyncConnection) -> CreditState:
    return CreditState(await _number(connection, AMOUNT), await _number(connection, LOW_TOLD_AT))


async def record(
    database: Database, connection: AsyncConnection, amount: float, low_told_at: float | None
) -> None:
    await _put(database, connection, AMOUNT, repr(amount))
    await _put(database, connection, LOW_TOLD_AT, "" if low_told_at is None else repr(low_told_at))


async def last_balance(connection: AsyncConnection) -> float | None:
    return await _number(connection, AMOUNT)


async def _number(connection: AsyncConnection, key: str) -> float | None:
    query = select(facts.c.value).where(facts.c.key == key)
    value = (await connection.execute(query)).scalar_one_or_none()
    return float(value) if value else None


async def _put(database: Database, connection: AsyncConnection, key: str, value: str) -> None:
    insert = database.insert(facts).values(key=key, value=value)
    await connection.execute(
        insert.on_conflict_do_update(index_elements=[facts.c.key], set_={"value": value})
    )
