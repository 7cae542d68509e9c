"""The label checks that keep metrics to config names and fixed values."""

from __future__ import annotations

from bridge.metrics import delivery_code, webhook_type
from tests.support.metrics_fixtures import (
    LABEL_VALUES,
    unexpected_labels,
)


def test_the_label_check_refuses_numbers_and_values_of_no_enum() -> None:
    assert {"inbox", "alert", "notice", "credit", "reply", "reply_status"} <= LABEL_VALUES["kind"]
    samples = {
        ("a_total", frozenset({("destination", "support"), ("kind", "reply_status")})): 1.0,
        ("b_total", frozenset({("destination", "32470123456")})): 1.0,
        ("c_total", frozenset({("kind", "sms_to_grandma")})): 1.0,
        ("d_total", frozenset({("sender", "32470123456")})): 1.0,
    }
    assert sorted(unexpected_labels(samples, ["support"])) == [
        ("destination", "32470123456"),
        ("kind", "sms_to_grandma"),
        ("sender", "32470123456"),
    ]


def test_label_helpers_keep_unknown_values_out() -> None:
    assert webhook_type("inbox_message") == "inbox_message"
    assert webhook_type("32470123456") == "unknown"
    assert webhook_type(None) == "unknown"
    assert delivery_code(5) == "5"
    assert delivery_code(32470123456) == "other"
    assert delivery_code(None) == "none"
