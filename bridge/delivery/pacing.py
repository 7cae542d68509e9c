"""Per-destination pacing: stay under the platform's rate limits instead of collecting 429s.

A token bucket per destination: `rate` posts a second on average, bursts of up to `burst`.
The bucket lives in the database (`store/pace.py`), so every worker process shares one pace
per destination, and a 429's Retry-After holds the destination back for all of them. The
worker only claims jobs for destinations with a token, so a busy channel waits for its own
tokens while the other destinations go on.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping

from sqlalchemy.ext.asyncio import AsyncConnection

from bridge.chat.limits import MARGIN
from bridge.chat.spacing import Spacing
from bridge.store import pace as pace_store
from bridge.store.db import Database
from bridge.store.pace import Bucket

BURST = 3.0  # at most, and only where the rate allows several posts a second
# How long before its token is due a job may be claimed, so that it is prepared (its reads
# and writes before the post) by then and its post leaves on time (`Pacer`).
AHEAD = 0.25  # seconds


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
    transaction; a destination without a rate is held back only while paused.

    With `ahead`, a destination paced without burst (the ones with a `Spacing` gate) gives
    its next token up to `ahead` seconds before it is due: the job is claimed and prepared
    meanwhile, and its post waits at the gate for the token's moment (`take` returns it).
    Every worker's posts then leave at the moments the shared bucket names, one interval
    apart, instead of one interval after each claim plus however long each job took to
    prepare.
    """

    def __init__(
        self,
        database: Database,
        rates: Mapping[str, float | None],
        burst: float = BURST,
        ahead: float = 0.0,
    ) -> None:
        self._database = database
        self._rates = dict(rates)
        self._bursts = {name: burst_for(rate, burst) for name, rate in rates.items() if rate}
        self._ahead = {name: ahead if b == 1 else 0.0 for name, b in self._bursts.items()}

    def paces(self, destinations: Collection[str]) -> bool:
        """Whether any of `destinations` has a rate: its claims take tokens."""
        return any(self._rates.get(destination) for destination in destinations)

    async def waiting(
        self, connection: AsyncConnection, destinations: Collection[str], now: float
    ) -> dict[str, float]:
        """Destinations without a token to give now, and when each can give its next one:
        up to `ahead` before it is due, never while a 429 pauses it."""
        waiting = {}
        for destination, (at, bucket) in (await self._ready(connection, destinations, now)).items():
            at = max(at - self._ahead.get(destination, 0.0), bucket.paused_until)
            if at > now:
                waiting[destination] = at
        return waiting

    async def behind(
        self, connection: AsyncConnection, destinations: Collection[str], now: float
    ) -> set[str]:
        """Destinations without a token due now. One without a rate has one whenever it is
        not paused (paused ones are not claimed): not asked for."""
        rated = [destination for destination in destinations if self._rates.get(destination)]
        if not rated:
            return set()
        ready = await self._ready(connection, rated, now)
        return {destination for destination, (at, _) in ready.items() if at > now}

    async def _ready(
        self, connection: AsyncConnection, destinations: Collection[str], now: float
    ) -> dict[str, tuple[float, Bucket]]:
        """When each stored destination has its next token due, with its stored bucket."""
        stored = await pace_store.buckets(self._database, connection, destinations)
        return {
            destination: (
                ready_at(
                    bucket, self._rates.get(destination), self._bursts.get(destination, 1.0), now
                ),
                bucket,
            )
            for destination, bucket in stored.items()
        }

    async def take(self, connection: AsyncConnection, destination: str, now: float) -> float | None:
        """Use a token of `destination` if it has one (any destination not paused, when it
        has no rate); return the moment it is due (`now`, or up to `ahead` later), or None
        when there is none to give."""
        rate = self._rates.get(destination)
        if rate is None:
            return now  # paused ones were left out of the claim
        left = await pace_store.take(
            self._database,
            connection,
            destination,
            rate=rate,
            burst=self._bursts[destination],
            now=now,
            ahead=self._ahead[destination],
        )
        return None if left is None else now + max(0.0, -left) / rate

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
    return Spacing(1 / rate, after_answer=1 / (rate * MARGIN))
