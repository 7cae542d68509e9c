from __future__ import annotations

import pytest

from bridge.pacing import Pacer, parse_rate


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


def test_one_a_second_never_bursts() -> None:
    pacer = Pacer({"slack": 1.0}, burst=3)
    assert [pacer.take("slack", 0.0) for _ in range(2)] == [True, False]
    assert pacer.take("slack", 1.0)


def test_destinations_are_paced_independently_and_unlimited_ones_not_at_all() -> None:
    pacer = Pacer({"busy": 1.0, "quiet": 1.0, "console": None}, burst=1)
    assert pacer.take("busy", 0.0) and not pacer.take("busy", 0.0)
    assert pacer.take("quiet", 0.0)
    assert all(pacer.take("console", 0.0) for _ in range(100))


def test_twenty_a_minute_stays_at_twenty_a_minute() -> None:
    pacer = Pacer({"group": 20 / 60})
    taken = sum(pacer.take("group", t / 10) for t in range(600))  # one minute, every 100 ms
    assert taken <= 21
