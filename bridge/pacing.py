"""Per-destination pacing: stay under the platform's rate limits instead of collecting 429s.

A token bucket per destination: `rate` posts a second on average, bursts of up to `burst`.
The bucket lives in the database (`store/pace.py`), so every worker process shares one pace
per destination, and a 429's Retry-After holds the destination back for all of them. The
worker only claims jobs for destinations with a token, so a busy channel waits for its own
tokens while the other destinations go on.
"""

from __future__ import annotations

import re
from collections.abc import Collection, Mapping

from sqlalchemy.ext.asyncio import AsyncConnection

from bridge.spacing import Spacing
from bridge.store import pace as pace_store
from bridge.store.db import Database
from bridge.store.pace import Bucket

_RATE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*/\s*(s|m|h)\s*$")
_PER = {"s": 1.0, "m": 60.0, "h": 3600.0}

# Documented platform limits (shared/reference): Slack about 1 post/s per channel;
# Telegram 1/s per private chat and 20/min per group. Paced at those rates, less 5 % for
# jitter: posts leave a process at least this far apart (`Spacing`), but what happens between
# that moment and the wire, and tokens granted to other workers at their claims, can still
# bring two arrivals closer. Measured: at 2 % three workers drew 6 × 429 in 60 posts, at 5 %
# one.
SLACK_DEFAULT = 1 / 1.05
TELEGRAM_PRIVATE_DEFAULT = 1 / 1.05
TELEGRAM_GROUP_DEFAULT = 19 / 60  # a bucket of one plus 19 refills stays at 20 in any minute
BURST = 3.0  # at most, and only where the rate allows several posts a second


def parse_rate(value: object) -> float | None:
    """`1/s`, `20/m`, `500/h` → posts per second; `unlimited` → None."""
    if isinstance(value, str) and value.strip().lower() == "unlimited":
        return None
    match = _RATE.match(str(value))
    if not match or float(match.group(1)) <= 0:
        raise ValueError(f"{value!r} is not a rate like 1/s, 20/m or unlimited")
    return float(match.group(1)) / _PER[match.group(2)]


def burst_for(rate: float, burst: float = BURST) -> float:
    """Bursts only where the rate allows several a second: Telegram's 20/min per group also
    means 1/s per chat, and Slack's 1/s per channel is best kept strictly."""
    return max(1.0, min(burst, rate))


def tokens_at(bucket: Bucket, rate: float, burst: float, now: float) -> float:
    """The bucket's tokens at `now` (a clock behind the last writer's refills nothing)."""
    return min(burst, bucket.tokens + max(0.0, now - bucket.updated_at) * rate)


def ready_at(bucket: Bucket | None, rate: float | None, burst: float, now: float) -> float:
    """When the destination next has a token (`now` when it has one already)."""
    if bucket is None:
        return now
    paused = max(now, bucket.paused_until)
    if rate is None:
        return paused
    tokens = tokens_at(bucket, rate, burst, now)
    if tokens >= 1:
        return paused
    return max(now + (1 - tokens) / rate, paused)


class Pacer:
    """The shared pace of the configured destinations, read and taken inside the caller's
    transaction; a destination without a rate is held back only while paused."""

    def __init__(
        self, database: Database, rates: Mapping[str, float | None], burst: float = BURST
    ) -> None:
        self._database = database
        self._rates = dict(rates)
        self._bursts = {name: burst_for(rate, burst) for name, rate in rates.items() if rate}

    async def waiting(
        self, connection: AsyncConnection, destinations: Collection[str], now: float
    ) -> dict[str, float]:
        """Destinations without a token now, and when each gets its next one."""
        stored = await pace_store.buckets(connection, destinations)
        waiting = {}
        for destination, bucket in stored.items():
            rate = self._rates.get(destination)
            at = ready_at(bucket, rate, self._bursts.get(destination, 1.0), now)
            if at > now:
                waiting[destination] = at
        return waiting

    async def take(self, connection: AsyncConnection, destination: str, now: float) -> bool:
        """Use a token of `destination` if it has one (any destination not paused, when it
        has no rate)."""
        rate = self._rates.get(destination)
        if rate is None:
            return True  # paused ones were left out of the claim
        burst = self._bursts[destination]
        return await pace_store.take(
            self._database, connection, destination, rate=rate, burst=burst, now=now
        )

    async def pause(
        self, connection: AsyncConnection, destination: str, until: float, now: float
    ) -> None:
        """No token for `destination` before `until`, for every worker (429 Retry-After)."""
        await pace_store.pause(self._database, connection, destination, until=until, now=now)


def spacing_for(rate: float | None) -> Spacing | None:
    """The gate for a destination paced with no burst (Slack channels, Telegram chats); None
    where bursts are allowed or there is no rate."""
    if rate is None or burst_for(rate) > 1:
        return None
    return Spacing(1 / rate)
