"""Each destination's pace, shared by every worker process: a token bucket per destination.

One row per destination holds its tokens as of `updated_at` and `paused_until` (a 429's
Retry-After). Taking a token is one statement that refills and takes at once (the row is
locked by the upsert on PostgreSQL; SQLite's BEGIN IMMEDIATE serialises writers), so workers
together never take more tokens than the destination has.
"""

from __future__ import annotations

import functools
from collections.abc import Collection
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Float, Select, bindparam, case, literal, select
from sqlalchemy.ext.asyncio import AsyncConnection
from sqlalchemy.sql.elements import ColumnElement

from bridge.store.db import Database, insert_for, listed, one_of
from bridge.store.schema import pace


@dataclass(frozen=True)
class Bucket:
    """A destination's stored pace: `tokens` as of `updated_at`, none before `paused_until`."""

    tokens: float
    updated_at: float
    paused_until: float = 0.0


_NOW = bindparam("now", type_=Float)


def _refilled(rate: float, burst: float) -> ColumnElement[float]:
    """The row's tokens at `now`: SQL for `pacing.tokens_at`."""
    elapsed = case((pace.c.updated_at < _NOW, _NOW - pace.c.updated_at), else_=0.0)
    refilled = pace.c.tokens + elapsed * rate
    return case((refilled > burst, literal(burst)), else_=refilled)


@functools.cache
def _taking(dialect: str, rate: float, burst: float, ahead: float) -> Any:
    """`take`'s statement, built once per pace: building and keying it for every token
    would weigh on a worker posting to many channels at once."""
    refilled = _refilled(rate, burst)
    return (
        insert_for(dialect, pace)
        .values(
            destination=bindparam("destination"),
            tokens=burst - 1,
            updated_at=_NOW,
            paused_until=0.0,
        )
        .on_conflict_do_update(
            index_elements=[pace.c.destination],
            set_={
                "tokens": refilled - 1,
                "updated_at": case((pace.c.updated_at < _NOW, _NOW), else_=pace.c.updated_at),
            },
            where=(pace.c.paused_until <= _NOW) & (refilled >= 1 - rate * ahead),
        )
        .returning(pace.c.tokens)
    )


async def take(
    database: Database,
    connection: AsyncConnection,
    destination: str,
    *,
    rate: float,
    burst: float,
    now: float,
    ahead: float = 0.0,
) -> float | None:
    """Take one token of `destination` if it has one (or will have within `ahead` seconds)
    and is not paused; return the tokens left, below zero for a token taken ahead (None:
    no token)."""
    statement = _taking(database.dialect, rate, burst, ahead)
    left = (await connection.execute(statement, {"destination": destination, "now": now})).scalar()
    return None if left is None else float(left)


async def pause(
    database: Database, connection: AsyncConnection, destination: str, *, until: float, now: float
) -> None:
    """No token for `destination` before `until`, for any worker (never shortens a pause)."""
    statement = (
        database.insert(pace)
        .values(destination=destination, tokens=0.0, updated_at=now, paused_until=until)
        .on_conflict_do_update(
            index_elements=[pace.c.destination],
            set_={"paused_until": until},
            where=pace.c.paused_until < until,
        )
    )
    await connection.execute(statement)


@functools.cache
def _buckets(dialect: str) -> Select[Any]:
    """The buckets of the destinations given as one value (`db.one_of`)."""
    columns = select(pace.c.destination, pace.c.tokens, pace.c.updated_at, pace.c.paused_until)
    return columns.where(one_of(dialect, pace.c.destination, "destinations"))


async def buckets(
    database: Database, connection: AsyncConnection, destinations: Collection[str]
) -> dict[str, Bucket]:
    """The stored state of these destinations (a destination never paced has none); read by
    every claim."""
    value = listed(database.dialect, destinations)
    rows = await database.fetch_in(connection, _buckets(database.dialect), {"destinations": value})
    return {
        destination: Bucket(tokens, updated_at, paused_until)
        for destination, tokens, updated_at, paused_until in rows
    }
