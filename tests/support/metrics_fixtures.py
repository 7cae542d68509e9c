"""Reading `/metrics` in tests: a scrape parsed with prometheus-client's own parser, the label
values the bridge may show, a scripted run of every webhook and delivery outcome, and the
environment of a bridge with Smstools API credentials and a hand-run credit check. Shared by
the tests of metrics, the credit watch, incidents, replies and the deploy/ dashboards."""

from __future__ import annotations

from collections.abc import Iterable
from contextlib import AbstractAsyncContextManager
from typing import Any

from prometheus_client.parser import text_string_to_metric_families

from bridge.config import Config
from bridge.errors import Reason
from bridge.jobs import Kind
from bridge.ops.credit import CreditWatch
from bridge.smstools.webhooks import DELIVERY_CODES, WEBHOOK_TYPES
from testkit.fakes.slack import FakeSlack
from testkit.fakes.smstools import FakeSmstools
from testkit.fakes.telegram import FakeTelegram
from tests.support.alert_fixtures import CONFIG, ENV, adapters, make_config, report
from tests.support.harness import TOKEN, Clock, RunningBridge, running_bridge
from tests.support.pipeline_fixtures import inbox

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]

REASONS = {str(reason) for reason in Reason}
# Every value each label may take besides destination names: fixed enums only, never a
# number or a customer string.
LABEL_VALUES: dict[str, set[str]] = {
    "kind": {str(kind) for kind in Kind},
    "type": {*WEBHOOK_TYPES, "unknown"},
    "outcome": {"ok", "retry", "dead", "stored", "rejected", "accepted", "duplicate"}
    | {"not_understood", "sent", "refused", "unreadable"}
    | REASONS,  # a balance check that failed is counted by its reason
    "reason": {"none"} | REASONS,
    "status": {"200", "400", "401", "404", "413", "503"},
    "code": {str(code) for code in DELIVERY_CODES} | {"other", "none"},
}


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


def unexpected_labels(samples: Samples, destinations: Iterable[str]) -> list[tuple[str, str]]:
    """Every (label, value) of a scrape outside the config's destinations and the fixed sets."""
    allowed = LABEL_VALUES | {"destination": set(destinations)}
    return [
        (label, shown)
        for _, labels in samples
        for label, shown in labels
        if label not in ("le", "quantile") and shown not in allowed.get(label, set())
    ]


def credentials(smstools: FakeSmstools) -> dict[str, str]:
    """The alerts test environment plus Smstools API credentials for the fake."""
    return ENV | {
        "SMSTOOLS_CLIENT_ID": smstools.client_id,
        "SMSTOOLS_CLIENT_SECRET": smstools.client_secret,
        "SMSTOOLS_API_URL": smstools.api_url,
    }


def unpaced_config() -> Config:
    """The alerts test config with no pacing, so a fixed clock never holds a post back; a
    lone failure is posted (`lone_failures: post`), so the scripted run has an alert."""
    destinations = {
        name: {**spec, "max_rate": "unlimited"} for name, spec in CONFIG["destinations"].items()
    }
    return make_config(top={"destinations": destinations}, lone_failures="post")


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
    assert (await bridge.post(odd)).status_code == 200  # kept, not understood: a notice
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
    await bridge.plan()  # planned, not delivered
    clock.advance(90)  # not delivered: waits in the outbox for 90 s


def watching_credit(
    database_url: str,
    config: Config,
    slack: FakeSlack,
    telegram: FakeTelegram,
    smstools: FakeSmstools,
    clock: Clock,
) -> AbstractAsyncContextManager[RunningBridge]:
    """The bridge in-process on `clock`, its credit watch asking the fake Smstools; the
    worker is run by hand (`check_credit`, `bridge.worker.drain`)."""
    return running_bridge(
        database_url,
        config,
        adapters(slack, telegram),
        run_worker=False,
        now=clock,
        env=credentials(smstools),
    )


async def check_credit(bridge: RunningBridge, clock: Clock, seconds: float) -> None:
    """Let `seconds` pass, read the balance as the worker's credit watch does, deliver."""
    clock.advance(seconds)
    credit: CreditWatch | None = bridge.app.state.credit
    assert credit is not None
    await credit.check()
    await bridge.worker.drain()
