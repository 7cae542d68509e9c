"""The Grafana dashboard and the Prometheus rules in deploy/ stay true to what the bridge
exports: every query names a metric a scrape after a scripted run shows."""

from __future__ import annotations

import asyncio
import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from testkit.fakes.slack import FakeSlack
from testkit.fakes.smstools import FakeSmstools
from testkit.fakes.telegram import FakeTelegram
from tests.support.harness import Clock
from tests.support.metrics_fixtures import (
    LABEL_VALUES,
    scripted_run,
    unpaced_config,
    watching_credit,
)

DEPLOY = Path(__file__).parents[2] / "deploy"
DASHBOARD = DEPLOY / "grafana" / "smstools-bridge.json"
RULES = DEPLOY / "prometheus" / "alerts.yml"
# Our metric names: every one starts with a prefix the bridge owns.
_METRIC = re.compile(r"\b(?:smsbridge|smstools)_[a-z0-9_]+\b")
_DURATION = re.compile(r"^\d+[smhdw]$")
# A label matcher inside a selector: kind="reply", outcome!="ok", reason=~"server|timeout".
_MATCHER = re.compile(r'\b([a-z_]+)\s*(=~|!~|!=|=)\s*"([^"]*)"')
_SUFFIXES = {"counter": ("_total",), "histogram": ("_bucket", "_count", "_sum"), "gauge": ("",)}


async def scrape_after_a_scripted_run(database_url: str) -> str:
    with FakeSlack() as slack, FakeTelegram() as telegram, FakeSmstools() as smstools:
        clock = Clock()
        async with watching_credit(
            database_url, unpaced_config(), slack, telegram, smstools, clock
        ) as bridge:
            assert bridge.app.state.credit is not None
            await bridge.app.state.credit.check()
            await scripted_run(bridge, clock, slack)
            return (await bridge.client.get("/metrics")).text


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory) -> set[str]:
    """Every series name a scrape shows after a scripted run (credit check included)."""
    database = tmp_path_factory.mktemp("exported") / "bridge.db"
    text = asyncio.run(scrape_after_a_scripted_run(f"sqlite:///{database}"))
    names = set()
    for family in text_string_to_metric_families(text):
        names |= {sample.name for sample in family.samples}
        names |= {family.name + suffix for suffix in _SUFFIXES.get(family.type, ("",))}
    return names


def queries(document: Any) -> list[str]:
    """Every `expr` anywhere in a dashboard."""
    if isinstance(document, dict):
        found = [document["expr"]] if isinstance(document.get("expr"), str) else []
        return found + [q for value in document.values() for q in queries(value)]
    if isinstance(document, list):
        return [q for value in document for q in queries(value)]
    return []


def unknown_label_values(expr: str) -> list[tuple[str, str]]:
    """Matchers of a fixed-value label (kind, outcome, reason, ...) on a value it never takes."""
    wrong = []
    for label, operator, matched in _MATCHER.findall(expr):
        if label not in LABEL_VALUES:
            continue
        alternatives = matched.split("|") if operator in ("=~", "!~") else [matched]
        wrong += [(label, one) for one in alternatives if one not in LABEL_VALUES[label]]
    return wrong


def test_a_matcher_on_a_value_no_label_takes_is_caught() -> None:
    assert unknown_label_values('x{kind="reply", outcome!="ok"}') == []
    assert unknown_label_values('x{kind=~"reply|replies", reason="server"}') == [
        ("kind", "replies")
    ]
    assert unknown_label_values('x{outcome="delivered"}') == [("outcome", "delivered")]


def test_the_dashboard_is_json_whose_every_query_names_an_exported_metric(
    exported: set[str],
) -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    assert dashboard["title"] == "smstools-bridge" and dashboard["panels"]
    found = queries(dashboard)
    assert len(found) >= 12
    shown = set()
    for expr in found:
        named = set(_METRIC.findall(expr))
        assert named, f"query names no bridge metric: {expr}"
        assert named <= exported, f"{expr}: {named - exported} not exported"
        assert unknown_label_values(expr) == [], expr
        shown |= named
    # The metrics the issue asks for each have a panel.
    for metric in (
        "smsbridge_webhook_events_total",
        "smsbridge_webhook_requests_total",
        "smsbridge_webhook_duration_seconds_bucket",
        "smsbridge_outbox_depth",
        "smsbridge_outbox_oldest_due_age_seconds",
        "smsbridge_delivery_attempts_total",
        "smsbridge_delivery_latency_seconds_bucket",
        "smsbridge_dead_letters_total",
        "smsbridge_alert_groups_open",
        "smsbridge_alerts_sent_total",
        "smsbridge_delivery_reports_total",
        "smsbridge_replies_total",
        "smstools_balance",
    ):
        assert metric in shown, metric
    panel_ids = [panel["id"] for panel in dashboard["panels"]]
    assert len(panel_ids) == len(set(panel_ids))


def test_the_alert_rules_parse_and_name_exported_metrics(exported: set[str]) -> None:
    document = yaml.safe_load(RULES.read_text())
    assert set(document) == {"groups"}
    alerts = {}
    for group in document["groups"]:
        assert set(group) <= {"name", "interval", "rules"} and group["name"]
        for rule in group["rules"]:
            assert set(rule) <= {"alert", "expr", "for", "labels", "annotations"}, rule
            assert isinstance(rule["expr"], str) and rule["expr"].strip()
            if "for" in rule:
                assert _DURATION.match(rule["for"]), rule["for"]
            assert all(isinstance(v, str) for v in rule.get("labels", {}).values())
            assert rule["annotations"]["summary"]
            named = set(_METRIC.findall(rule["expr"]))
            assert named and named <= exported, (rule["alert"], named - exported)
            assert unknown_label_values(rule["expr"]) == [], rule["alert"]
            alerts[rule["alert"]] = rule["expr"]
    assert set(alerts) == {
        "SmsBridgeOutboxStuck",
        "SmsBridgeDatabaseDown",
        "SmsBridgeDeadLettersRising",
        "SmsBridgeWebhooksRefused",
        "SmsBridgeDestinationFailing",
        "SmstoolsCreditLow",
    }


@pytest.mark.skipif(shutil.which("promtool") is None, reason="promtool not installed")
def test_promtool_accepts_the_rules() -> None:
    promtool = shutil.which("promtool")
    assert promtool is not None
    checked = subprocess.run(
        [promtool, "check", "rules", str(RULES)], capture_output=True, text=True, check=False
    )
    assert checked.returncode == 0, checked.stdout + checked.stderr
