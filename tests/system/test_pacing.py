from __future__ import annotations

import bisect
import itertools
import math

import pytest

from bridge.chat.limits import TELEGRAM_GROUP_DEFAULT
from bridge.config import parse_rate
from bridge.delivery.pacing import Pacer
from bridge.store.db import Database


async def take(pacer: Pacer, database: Database, destination: str, now: float) -> bool:
    async with database.transaction() as connection:
        return await pacer.take(connection, destination, now) is not None


async def ready_at(pacer: Pacer, database: Database, destination: str, now: float) -> float:
    async with database.transaction() as connection:
        waiting = await pacer.waiting(connection, [destination], now)
    return waiting.get(destination, now)


async def posts_of_a_busy_destination(
    pacer: Pacer, database: Database, destination: str, seconds: float, queued: int = 10_000
) -> list[int]:
    """When (in whole milliseconds) a destination with far more jobs queued than its rate
    allows posts them. Like the worker, it asks again at once after a post, at the moment
    `waiting` names, and in between whenever something else wakes it (here every 500 ms).
    Gives up after `10 * queued` refusals, so a pacer that never lets go ends the run early."""
    posted: list[int] = []
    now = 0.0
    refusals = 0
    while now < seconds and len(posted) < queued and refusals < 10 * queued:
        if await take(pacer, database, destination, now):
            posted.append(round(now * 1000))
            continue
        refusals += 1
        # ready_at's own rounding can leave the bucket a hair short at the moment it names.
        later = min(await ready_at(pacer, database, destination, now), now + 0.5)
        now = max(later, math.nextafter(now, math.inf))
    return posted


def fewest_and_most_in_any_window(
    posted: list[int], width: float, start: float, end: float
) -> tuple[int, int]:
    """The least and the most posts in any window [s, s + width) between `start` and `end`
    (seconds). Counts change only at a post, so windows starting at `start`, at each post and
    1 ms after each post are all the windows there are."""
    width_ms, start_ms, end_ms = (round(seconds * 1000) for seconds in (width, start, end))
    starts = {start_ms, *posted, *(t + 1 for t in posted)}
    counts = [
        bisect.bisect_left(posted, s + width_ms) - bisect.bisect_left(posted, s)
        for s in starts
        if start_ms <= s and s + width_ms <= end_ms
    ]
    return min(counts), max(counts)


async def test_a_destination_gets_a_short_burst_then_its_rate(database: Database) -> None:
    pacer = Pacer(database, {"fast": 5.0}, burst=3)
    assert [await take(pacer, database, "fast", 0.0) for _ in range(4)] == [
        True,
        True,
        True,
        False,
    ]
    assert await ready_at(pacer, database, "fast", 0.0) == pytest.approx(0.2)
    assert not await take(pacer, database, "fast", 0.1)
    assert await take(pacer, database, "fast", 0.2)


async def test_after_its_burst_a_busy_destination_posts_at_its_rate_neither_slower_nor_faster(
    database: Database,
) -> None:
    pacer = Pacer(database, {"fast": 5.0}, burst=3)
    posted = await posts_of_a_busy_destination(pacer, database, "fast", 20)
    assert posted[:3] == [0, 0, 0]
    assert fewest_and_most_in_any_window(posted, 1.0, start=1.0, end=20) == (5, 5)


async def test_one_a_second_never_bursts(database: Database) -> None:
    pacer = Pacer(database, {"slack": 1.0}, burst=3)
    assert [await take(pacer, database, "slack", 0.0) for _ in range(2)] == [True, False]
    assert await take(pacer, database, "slack", 1.0)


async def test_one_a_second_is_one_in_every_second(database: Database) -> None:
    pacer = Pacer(database, {"slack": 1.0}, burst=3)
    posted = await posts_of_a_busy_destination(pacer, database, "slack", 30)
    assert fewest_and_most_in_any_window(posted, 1.0, start=0, end=30) == (1, 1)


async def test_destinations_are_paced_independently_and_unlimited_ones_not_at_all(
    database: Database,
) -> None:
    pacer = Pacer(database, {"busy": 1.0, "quiet": 1.0, "console": None}, burst=1)
    assert await take(pacer, database, "busy", 0.0)
    assert not await take(pacer, database, "busy", 0.0)
    assert await take(pacer, database, "quiet", 0.0)
    assert all([await take(pacer, database, "console", 0.0) for _ in range(100)])


async def test_twenty_a_minute_is_twenty_in_every_minute(database: Database) -> None:
    pacer = Pacer(database, {"group": parse_rate("20/m")})
    posted = await posts_of_a_busy_destination(pacer, database, "group", 180)
    assert fewest_and_most_in_any_window(posted, 60, start=0, end=180) == (20, 20)


async def test_a_telegram_group_by_default_gets_nineteen_or_twenty_in_every_minute(
    database: Database,
) -> None:
    """Telegram allows 20 a minute in a group: never more, and not much less either."""
    pacer = Pacer(database, {"group": TELEGRAM_GROUP_DEFAULT})
    posted = await posts_of_a_busy_destination(pacer, database, "group", 180)
    fewest, most = fewest_and_most_in_any_window(posted, 60, start=0, end=180)
    assert 19 <= fewest and most <= 20


async def test_two_pacers_on_one_database_share_the_destinations_tokens(
    database: Database,
) -> None:
    """Two workers, one pace: what one takes, the other does not get."""
    first, second = (Pacer(database, {"slack": 1.0}) for _ in range(2))
    assert await take(first, database, "slack", 0.0)
    assert not await take(second, database, "slack", 0.5)
    assert await take(second, database, "slack", 1.0)
    assert not await take(first, database, "slack", 1.5)


async def test_a_destination_is_behind_once_its_token_is_taken_and_an_unlimited_one_never(
    database: Database,
) -> None:
    """Whether a claimed head's followers may share its post: a paced destination is behind
    when its head took the last token; one without a rate always has a token (its paused
    times are not claimed at all), so combining never waits on it."""
    pacer = Pacer(database, {"slack": 1.0, "console": None}, burst=1)
    async with database.transaction() as connection:
        assert await pacer.behind(connection, ["slack", "console"], 0.0) == set()
    assert await take(pacer, database, "slack", 0.0)
    assert await take(pacer, database, "console", 0.0)
    async with database.transaction() as connection:
        assert await pacer.behind(connection, ["slack", "console"], 0.5) == {"slack"}
        assert await pacer.behind(connection, ["slack", "console"], 1.0) == set()


async def test_a_pause_holds_the_destination_back_for_every_pacer_and_outlives_them(
    database: Database,
) -> None:
    """A 429's Retry-After seen by one worker holds back the others, and a restarted one."""
    first = Pacer(database, {"slack": 1.0, "console": None})
    async with database.transaction() as connection:
        await first.pause(connection, "slack", 30.0, now=0.0)
        await first.pause(connection, "console", 30.0, now=0.0)
        await first.pause(connection, "slack", 10.0, now=0.0)  # never shortens a pause
    restarted = Pacer(database, {"slack": 1.0, "console": None})
    async with database.transaction() as connection:
        waiting = await restarted.waiting(connection, ["slack", "console"], 5.0)
    assert waiting == {"slack": 30.0, "console": 30.0}
    assert not await take(restarted, database, "slack", 29.0)
    assert await take(restarted, database, "slack", 30.0)


async def test_tokens_taken_ahead_are_due_one_interval_apart_whichever_worker_takes_them(
    database: Database,
) -> None:
    """Two workers claim a busy channel's jobs as early as they may (`ahead`): each token is
    given at most `ahead` before it is due, and the moments they are due (when the posts
    leave) are one interval apart across both, however their claims interleave."""
    workers = [Pacer(database, {"slack": 1.0}, ahead=0.25) for _ in range(2)]
    taken: list[tuple[float, float]] = []  # (claimed at, due at)
    now = 0.0
    for pacer in itertools.cycle(workers):
        if now >= 10:
            break
        async with database.transaction() as connection:
            due = await pacer.take(connection, "slack", now)
            waiting = await pacer.waiting(connection, ["slack"], now)
        if due is not None:
            taken.append((now, due))
            continue
        now = max(waiting.get("slack", now), math.nextafter(now, math.inf))
    due_at = [due for _, due in taken]
    assert due_at == sorted(due_at)
    assert [round(b - a, 6) for a, b in itertools.pairwise(due_at)] == [1.0] * (len(due_at) - 1)
    assert all(0 <= due - claimed <= 0.25 for claimed, due in taken)
    assert any(due - claimed > 0.2 for claimed, due in taken)  # claimed ahead, not at the time
    assert len(due_at) == 11  # 0 s, 1 s, … 10 s: the rate, not more


async def test_a_paused_destination_gives_no_token_ahead_of_the_pause_end(
    database: Database,
) -> None:
    pacer = Pacer(database, {"slack": 1.0}, ahead=0.25)
    async with database.transaction() as connection:
        await pacer.pause(connection, "slack", until=10.0, now=0.0)  # a 429's Retry-After
        waiting = await pacer.waiting(connection, ["slack"], 9.8)
        early = await pacer.take(connection, "slack", 9.8)
        due = await pacer.take(connection, "slack", 10.0)
    assert waiting == {"slack": 10.0}  # the worker sleeps until then, not 9.75
    assert early is None and due == 10.0
