"""GET /metrics: the counters of a scripted run, exactly, read with prometheus-client's own
parser; the database gauges; the bearer token."""

from __future__ import annotations

from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from bridge.config import Config
from bridge.metrics import delivery_code, webhook_type
from tests.alert_fixtures import CONFIG, Clock, adapters, make_config, report
from tests.fakes.slack import FakeSlack
from tests.fakes.telegram import FakeTelegram
from tests.harness import TOKEN, RunningBridge, running_bridge
from tests.test_pipeline import inbox

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


async def scrape(bridge: RunningBridge, **headers: str) -> Samples:
    response = await bridge.client.get("/metrics", headers=headers)
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(response.text)
        for sample in family.samples
    }


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


def names(samples: Samples) -> set[str]:
    return {name for name, _ in samples}


async def scripted_run(bridge: RunningBridge, clock: Clock, slack: FakeSlack) -> None:
    """Webhooks of every outcome, a 429, an alert, a dead letter, and one job left waiting."""
    body: list[dict[str, Any]] = [
        inbox("32470111111", "hello"),
        inbox("32470222222", "hi"),
        report(2, 10),
    ]
    assert (await bridge.post(body)).status_code == 200
    assert (await bridge.post(body)).status_code == 200  # every event a duplicate
    odd = [{"webhook_id": "wh_odd", "webhook_type": "mystery"}]
    assert (await bridge.post(odd)).status_code == 200  # kept, not understood
    assert (
        await bridge.client.post("/webhooks/smstools/wrong-token", json=body)
    ).status_code == 404
    bad = await bridge.client.post(f"/webhooks/smstools/{TOKEN}", content=b"{not json")
    assert bad.status_code == 400

    slack.set_rate_limited("C0SUPPORT", retry_after=1, times=1)
    await bridge.worker.drain()  # the first inbox job hears 429
    clock.advance(60)  # the retry, the second message and the alert (group_wait 30s) are due
    await bridge.worker.drain()

    slack.set_error("C0SUPPORT", "channel_not_found")
    assert (await bridge.post([inbox("32470333333", "bye")])).status_code == 200
    await bridge.worker.drain()  # buried at once: a permanent error; on-call gets a notice
    slack.set_error("C0SUPPORT", None)

    assert (await bridge.post([inbox("32470444444", "later")])).status_code == 200
    clock.advance(90)  # not delivered: waits in the outbox for 90 s


def unpaced_config() -> Config:
    """The alerts test config with no pacing, so a fixed clock never holds a post back."""
    destinations = {
        name: {**spec, "max_rate": "unlimited"} for name, spec in CONFIG["destinations"].items()
    }
    return make_config(top={"destinations": destinations})


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
    assert attempts("oncall", "notice", "ok", "none") == 1
    assert value(samples, "smsbridge_dead_letters_total", destination="support") == 1
    assert value(samples, "smsbridge_alerts_sent_total", destination="oncall") == 1
    assert value(samples, "smsbridge_notices_sent_total", destination="oncall", kind="notice") == 1
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
    allowed = {
        "destination": set(config.destinations),
        "kind": {"inbox", "failure_note", "read", "alert", "notice", "credit"},
        "type": {"inbox_message", "delivery_report", "read_report", "unknown"},
        "outcome": {"ok", "retry", "dead", "stored", "rejected", "accepted", "duplicate"}
        | {"not_understood", "sent", "refused"},
        "reason": {"none", "rate_limited", "server", "timeout", "connection", "auth"}
        | {"not_found", "forbidden", "bad_request", "config"},
        "status": {"200", "400", "401", "404", "413", "503"},
        "code": {"0", "1", "2", "3", "4", "5", "9", "other", "none"},
    }
    for _, labels in samples:
        for label, shown in labels:
            if label in ("le", "quantile"):
                continue
            assert shown in allowed[label], (label, shown)


def test_label_helpers_keep_unknown_values_out() -> None:
    assert webhook_type("inbox_message") == "inbox_message"
    assert webhook_type("32470123456") == "unknown"
    assert webhook_type(None) == "unknown"
    assert delivery_code(5) == "5"
    assert delivery_code(32470123456) == "other"
    assert delivery_code(None) == "none"


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
