"""GET /metrics: the counters of a scripted run, exactly, read with prometheus-client's own
parser; the database gauges; the bearer token."""

from __future__ import annotations

import pytest

from testkit.fakes.slack import FakeSlack
from testkit.fakes.telegram import FakeTelegram
from tests.support.alert_fixtures import adapters, inbox, make_config
from tests.support.harness import Clock, running_bridge
from tests.support.metrics_fixtures import (
    names,
    scrape,
    scripted_run,
    unexpected_labels,
    unpaced_config,
    value,
)


async def test_a_scrape_after_a_scripted_run_shows_exact_counts(
    database_url: str, slack: FakeSlack, telegram: FakeTelegram
) -> None:
    clock = Clock()
    async with running_bridge(
        database_url, unpaced_config(), adapters(slack, telegram), run_worker=False, now=clock
    ) as bridge:
        await scripted_run(bridge, clock, slack)
        samples = await scrape(bridge)

    def requests(outcome: str, status: str) -> float:
        return value(samples, "smsbridge_webhook_requests_total", outcome=outcome, status=status)

    assert requests("stored", "200") == 5
    assert requests("rejected", "404") == 1
    assert requests("rejected", "400") == 1
    assert value(samples, "smsbridge_webhook_duration_seconds_count") == 7

    def events(kind: str, outcome: str) -> float:
        return value(samples, "smsbridge_webhook_events_total", type=kind, outcome=outcome)

    assert events("inbox_message", "accepted") == 4
    assert events("delivery_report", "accepted") == 1
    assert events("inbox_message", "duplicate") == 2
    assert events("delivery_report", "duplicate") == 1
    assert events("unknown", "not_understood") == 1
    assert value(samples, "smsbridge_delivery_reports_total", code="2") == 1

    def attempts(destination: str, kind: str, outcome: str, reason: str) -> float:
        return value(
            samples,
            "smsbridge_delivery_attempts_total",
            destination=destination,
            kind=kind,
            outcome=outcome,
            reason=reason,
        )

    assert attempts("support", "inbox", "retry", "rate_limited") == 1
    assert attempts("support", "inbox", "ok", "none") == 2
    assert attempts("support", "inbox", "dead", "not_found") == 1
    assert attempts("oncall", "alert", "ok", "none") == 1
    assert attempts("oncall", "notice", "ok", "none") == 2  # the dead letter, the odd event
    assert value(samples, "smsbridge_dead_letters_total", destination="support") == 1
    assert value(samples, "smsbridge_alerts_sent_total", destination="oncall") == 1
    assert value(samples, "smsbridge_notices_sent_total", destination="oncall", kind="notice") == 2
    latency = "smsbridge_delivery_latency_seconds"
    assert value(samples, f"{latency}_count", destination="support") == 2
    # One message went through at once (0 s); the one that heard 429 went after 60 s.
    assert value(samples, f"{latency}_sum", destination="support") == 60
    assert value(samples, f"{latency}_bucket", destination="support", le="0.1") == 1
    assert value(samples, f"{latency}_bucket", destination="support", le="30.0") == 1
    assert value(samples, f"{latency}_bucket", destination="support", le="60.0") == 2

    # Read from the database at scrape time.
    assert value(samples, "smsbridge_outbox_depth", destination="support", kind="inbox") == 1
    age = "smsbridge_outbox_oldest_due_age_seconds"
    assert value(samples, age, destination="support", kind="inbox") == 90
    assert value(samples, "smsbridge_dead_letters_kept", destination="support") == 1
    assert value(samples, "smsbridge_alert_groups_open") == 1
    assert "smstools_balance" not in names(samples)  # no Smstools API credentials here


async def test_labels_hold_only_config_names_and_fixed_values(
    sqlite_url: str, slack: FakeSlack, telegram: FakeTelegram
) -> None:
    clock = Clock()
    config = unpaced_config()
    async with running_bridge(
        sqlite_url, config, adapters(slack, telegram), run_worker=False, now=clock
    ) as bridge:
        await scripted_run(bridge, clock, slack)
        samples = await scrape(bridge)
    assert unexpected_labels(samples, config.destinations) == []


@pytest.mark.parametrize(
    ("header", "status"),
    [(None, 401), ("Bearer wrong-token-000", 401), ("metrics-secret-42", 401)],
)
async def test_metrics_need_the_bearer_token_when_one_is_set(
    sqlite_url: str, slack: FakeSlack, telegram: FakeTelegram, header: str | None, status: int
) -> None:
    env = {"METRICS_TOKEN": "metrics-secret-42"}
    async with running_bridge(
        sqlite_url, make_config(), adapters(slack, telegram), run_worker=False, env=env
    ) as bridge:
        headers = {} if header is None else {"Authorization": header}
        refused = await bridge.client.get("/metrics", headers=headers)
        assert refused.status_code == status
        assert "METRICS_TOKEN" in refused.json()["error"]
        assert "metrics-secret-42" not in refused.text
        samples = await scrape(bridge, Authorization="Bearer metrics-secret-42")
    assert "smsbridge_alert_groups_open" in names(samples)


async def test_metrics_are_open_without_a_token(
    sqlite_url: str, slack: FakeSlack, telegram: FakeTelegram
) -> None:
    async with running_bridge(
        sqlite_url, make_config(), adapters(slack, telegram), run_worker=False
    ) as bridge:
        samples = await scrape(bridge)
    assert value(samples, "smsbridge_alert_groups_open") == 0


async def test_bodies_waiting_for_a_worker_show_as_a_gauge_until_it_plans_them(
    sqlite_url: str, slack: FakeSlack, telegram: FakeTelegram
) -> None:
    clock = Clock()
    async with running_bridge(
        sqlite_url, unpaced_config(), adapters(slack, telegram), run_worker=False, now=clock
    ) as bridge:
        clock.advance(-40)
        for customer in ("32470111111", "32470222222"):
            assert (await bridge.post([inbox(customer, "hello")])).status_code == 200
        clock.advance(40)
        waiting = await scrape(bridge)
        await bridge.plan()
        planned = await scrape(bridge)
    assert value(waiting, "smsbridge_webhook_bodies_waiting") == 2
    assert value(waiting, "smsbridge_webhook_oldest_waiting_seconds") == pytest.approx(40, abs=1)
    assert value(planned, "smsbridge_webhook_bodies_waiting") == 0
    assert value(planned, "smsbridge_webhook_oldest_waiting_seconds") == 0
