"""Per-destination pacing: stay under the platform's rate limits instead of collecting 429s.

A token bucket per destination: `rate` posts a second on average, bursts of up to `burst`.
The worker only claims jobs for destinations with a token, so a busy channel waits for its
own tokens while the other destinations go on.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass

_RATE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*/\s*(s|m|h)\s*$")
_PER = {"s": 1.0, "m": 60.0, "h": 3600.0}

# Documented platform limits (shared/reference): Slack about 1 post/s per channel with short
# bursts; Telegram 1/s per private chat and 20/min per group.
# Aim a little under 1/s: requests sent 1.0 s apart can arrive closer than that.
SLACK_DEFAULT = 1 / 1.2
TELEGRAM_PRIVATE_DEFAULT = 1 / 1.2
TELEGRAM_GROUP_DEFAULT = 19 / 60  # a bucket of one plus 19 refills stays at 20 in any minute


def parse_rate(value: object) -> float | None:
    """`1/s`, `20/m`, `500/h` → posts per second; `unlimited` → None."""
    if isinstance(value, str) and value.strip().lower() == "unlimited":
        return None
    match = _RATE.match(str(value))
    if not match or float(match.group(1)) <= 0:
        raise ValueError(f"{value!r} is not a rate like 1/s, 20/m or unlimited")
    return float(match.group(1)) / _PER[match.group(2)]


@dataclass
class _Bucket:
    rate: float
    burst: float
    tokens: float
    updated: float

    def refill(self, now: float) -> None:
        self.tokens = min(self.burst, self.tokens + (now - self.updated) * self.rate)
        self.updated = now


class Pacer:
    """Token buckets by destination; a destination without a rate is held back only while
    paused (the platform answered 429 with a Retry-After)."""

    def __init__(self, rates: Mapping[str, float | None], burst: float = 3.0) -> None:
        self._rates = dict(rates)
        self._burst = burst
        self._buckets: dict[str, _Bucket] = {}
        self._paused: dict[str, float] = {}  # destination → until when

    def pause(self, destination: str, until: float) -> None:
        """No token for `destination` before `until`: it said to wait (429 Retry-After)."""
        self._paused[destination] = max(until, self._paused.get(destination, until))

    def _bucket(self, destination: str, now: float) -> _Bucket | None:
        rate = self._rates.get(destination)
        if rate is None:
            return None
        bucket = self._buckets.get(destination)
        if bucket is None:
            # Bursts only where the rate allows several a second: Telegram's 20/min per group
            # also means 1/s per chat, and Slack's 1/s per channel is best kept strictly.
            burst = max(1.0, min(self._burst, rate))
            bucket = self._buckets[destination] = _Bucket(rate, burst, burst, now)
        bucket.refill(now)
        return bucket

    def take(self, destination: str, now: float) -> bool:
        """Use a token if there is one."""
        if self._paused.get(destination, now) > now:
            return False
        bucket = self._bucket(destination, now)
        if bucket is None:
            return True
        if bucket.tokens >= 1:
            bucket.tokens -= 1
            return True
        return False

    def ready_at(self, destination: str, now: float) -> float:
        """When the destination next has a token (`now` when it has one already)."""
        paused = self._paused.get(destination, now)
        bucket = self._bucket(destination, now)
        if bucket is None or bucket.tokens >= 1:
            return max(now, paused)
        return max(now + (1 - bucket.tokens) / bucket.rate, paused)
