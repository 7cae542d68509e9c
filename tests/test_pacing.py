from __future__ import annotations

import bisect
import math

import pytest

from bridge.pacing import TELEGRAM_GROUP_DEFAULT, Pacer, parse_rate


def posts_of_a_busy_destination(
    pacer: Pacer, destination: str, seconds: float, queued: int = 10_000
) -> list[int]:
    """When (in whole milliseconds) a destination with far more jobs queued than its rate
    allows posts them. Like the worker, it asks again at once after a post, at the moment
    `ready_at` names, and in between whenever something else wakes it (here every 100 ms).
    Gives up after `10 * queued` refusals, so a pacer that never lets go ends the run early."""
    posted: list[int] = []
    now = 0.0
    refusals = 0
    while now < seconds and len(posted) < queued and refusals < 10 * queued:
        if pacer.take(destination, now):
            posted.append(round(now * 1000))
            continue
        refusals += 1
        # ready_at's own rounding can leave the bucket a hair short at the moment it names.
        later = min(pacer.ready_at(destination, now), now + 0.1)
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


def test_rates_are_read_per_second_minute_or_hour() -> None:
    assert parse_rate("1/s") == 1
    assert parse_rate("20/m") == pytest.approx(1 / 3)
    assert parse_rate("unlimited") is None
    with pytest.raises(ValueError, match="not a rate"):
        parse_rate("fast")


def test_a_destination_gets_a_short_burst_then_its_rate() -> None:
    pacer = Pacer({"fast": 5.0}, burst=3)
    assert [pacer.take("fast", 0.0) for _ in range(4)] == [True, True, True, False]
    assert pacer.ready_at("fast", 0.0) == pytest.approx(0.2)
    assert not pacer.take("fast", 0.1)
    assert pacer.take("fast", 0.2)


def test_after_its_burst_a_busy_destination_posts_at_its_rate_neither_slower_nor_faster() -> None:
    posted = posts_of_a_busy_destination(Pacer({"fast": 5.0}, burst=3), "fast", 60)
    assert posted[:3] == [0, 0, 0]
    assert fewest_and_most_in_any_window(posted, 1.0, start=1.0, end=60) == (5, 5)


def test_one_a_second_never_bursts() -> None:
    pacer = Pacer({"slack": 1.0}, burst=3)
    assert [pacer.take("slack", 0.0) for _ in range(2)] == [True, False]
    assert pacer.take("slack", 1.0)


def test_one_a_second_is_one_in_every_second() -> None:
    posted = posts_of_a_busy_destination(Pacer({"slack": 1.0}, burst=3), "slack", 60)
    assert fewest_and_most_in_any_window(posted, 1.0, start=0, end=60) == (1, 1)


def test_destinations_are_paced_independently_and_unlimited_ones_not_at_all() -> None:
    pacer = Pacer({"busy": 1.0, "quiet": 1.0, "console": None}, burst=1)
    assert pacer.take("busy", 0.0) and not pacer.take("busy", 0.0)
    assert pacer.take("quiet", 0.0)
    assert all(pacer.take("console", 0.0) for _ in range(100))


def test_twenty_a_minute_is_twenty_in_every_minute() -> None:
    rate = parse_rate("20/m")
    posted = posts_of_a_busy_destination(Pacer({"group": rate}), "group", 600)
    assert fewest_and_most_in_any_window(posted, 60, start=0, end=600) == (20, 20)


def test_a_telegram_group_by_default_gets_nineteen_or_twenty_in_every_minute() -> None:
    """Telegram allows 20 a minute in a group: never more, and not much less either."""
    posted = posts_of_a_busy_destination(Pacer({"group": TELEGRAM_GROUP_DEFAULT}), "group", 600)
    fewest, most = fewest_and_most_in_any_window(posted, 60, start=0, end=600)
    assert 19 <= fewest and most <= 20
