"""Rates as configured, and which destinations get a gate."""

from __future__ import annotations

import pytest

from bridge.chat.limits import TELEGRAM_GROUP_DEFAULT
from bridge.config import parse_rate
from bridge.delivery.pacing import spacing_for


def test_rates_are_read_per_second_minute_or_hour() -> None:
    assert parse_rate("1/s") == 1
    assert parse_rate("20/m") == pytest.approx(1 / 3)
    assert parse_rate("unlimited") is None
    with pytest.raises(ValueError, match="not a rate"):
        parse_rate("fast")


def test_only_destinations_paced_without_burst_get_a_gate() -> None:
    slack = spacing_for(parse_rate("1/s"))
    group = spacing_for(TELEGRAM_GROUP_DEFAULT)
    assert slack is not None and slack.interval == 1.0
    assert group is not None and group.interval == pytest.approx(60 / 19)
    assert spacing_for(parse_rate("5/s")) is None  # bursts allowed: the bucket alone
    assert spacing_for(None) is None
