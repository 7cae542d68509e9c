"""Prometheus metrics: what this process counted, and what the database holds right now.

A `Metrics` owns its own `CollectorRegistry` (one per app or worker, a fresh one per test) and
is passed down to the webhook receiver and the worker. Counters and histograms are this
process's; gauges read from the database (outbox depth, oldest due job, dead letters, open
alert groups, the Smstools balance) are computed at scrape time, so any process gives the same
answer; when the database cannot answer, a scrape still shows this process's own metrics, with
`smsbridge_database_up 0` in place of the gauges. Label values come only from the config
(destination names) and fixed enums (job kinds, reasons, webhook types, delivery codes): never
a number or a customer string.
"""

from __future__ import annotations

import asyncio
import hmac
import logging
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest
from pydantic import SecretStr
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from bridge.smstools.webhooks import DELIVERY_CODES, WEBHOOK_TYPES
from bridge.store import credit as credit_store
from bridge.store import events as events_store
from bridge.store import gauges as gauges_store
from bridge.store.db import UNAVAILABLE, Database, describe_error

log = logging.getLogger(__name__)

# Webhook handling is milliseconds; delivery spans retries and backoff (minutes, hours).
_HANDLING_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
_LATENCY_BUCKETS = (0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0, 3600.0)


def webhook_type(name: str | None) -> str:
    """A webhook type as a label: one of the known types, else `unknown`."""
    return name if name in WEBHOOK_TYPES else "unknown"


def delivery_code(code: int | None) -> str:
    """A delivery code as a label: a documented code, else `other` (or `none`)."""
    if code is None:
        return "none"
    return str(code) if code in DELIVERY_CODES else "other"


class Metrics:
    """The metric objects of one process, in a registry of their own."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        # Registered in the order a scrape shows them.
        self._webhooks(self.registry)
        self._chat_posts(self.registry)
        self._smstools(self.registry)
        self._database_view = DatabaseView()
        self.registry.register(self._database_view)
        # The webhook path's labelled counters, looked up once per label values: `labels()`
        # takes a lock and builds a key on every call. Values are bounded (module docstring).
        self._webhook_children: dict[tuple[object, ...], Any] = {}

    def _webhooks(self, r: CollectorRegistry) -> None:
        """What the webhook edge counts of the requests it answers."""
        self.webhook_requests = Counter(
            "smsbridge_webhook_requests",
            "Webhook requests answered, by outcome (stored, rejected) and HTTP status.",
            ["outcome", "status"],
            registry=r,
        )
        self.webhook_events = Counter(
            "smsbridge_webhook_events",
            "Webhook events received, by type and outcome (accepted, duplicate, not_understood).",
            ["type", "outcome"],
            registry=r,
        )
        self.webhook_seconds = Histogram(
            "smsbridge_webhook_duration_seconds",
            "Time to handle one webhook request, from its first byte to the answer.",
            buckets=_HANDLING_BUCKETS,
            registry=r,
        )

    def _chat_posts(self, r: CollectorRegistry) -> None:
        """What the worker counts of its chat posts, on-call's included."""
        self.delivery_attempts = Counter(
            "smsbridge_delivery_attempts",
            "Delivery attempts by destination, job kind, outcome (ok, retry, dead) and reason.",
            ["destination", "kind", "outcome", "reason"],
            registry=r,
        )
        self.delivery_latency = Histogram(
            "smsbridge_delivery_latency_seconds",
            "From a customer message's webhook received to its chat post acknowledged.",
            ["destination"],
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.dead_letters = Counter(
            "smsbridge_dead_letters",
            "Jobs given up on (kept as dead letters) by this process, by destination.",
            ["destination"],
            registry=r,
        )
        self.alerts_sent = Counter(
            "smsbridge_alerts_sent",
            "On-call alerts posted or updated, by destination.",
            ["destination"],
            registry=r,
        )
        self.notices_sent = Counter(
            "smsbridge_notices_sent",
            "On-call notices posted (destination failing, Smstools credit), by destination "
            "and kind.",
            ["destination", "kind"],
            registry=r,
        )

    def _smstools(self, r: CollectorRegistry) -> None:
        """What went through Smstools: its delivery reports, agents' replies, balance reads."""
        self.delivery_reports = Counter(
            "smsbridge_delivery_reports",
            "Delivery reports accepted, by delivery code.",
            ["code"],
            registry=r,
        )
        # Replies (agent → customer through the Smstools send API): `sent` when the gateway
        # accepted the message, `refused` when the bridge or the gateway would not send it.
        self.replies = Counter(
            "smsbridge_replies",
            "Agent replies to customers, by destination and outcome (sent, refused).",
            ["destination", "outcome"],
            registry=r,
        )
        self.balance_checks = Counter(
            "smstools_balance_checks",
            "Smstools balance reads by outcome (ok, or the error reason).",
            ["outcome"],
            registry=r,
        )

    def webhook_answered(self, status: int, seconds: float) -> None:
        """A webhook request answered with `status` after `seconds`."""
        outcome = "stored" if status == 200 else "rejected"
        self._child(self.webhook_requests, outcome, str(status)).inc()
        self.webhook_seconds.observe(seconds)

    def webhook_event(self, kind: str | None, outcome: str) -> None:
        """An event of a webhook: accepted, duplicate or not_understood."""
        self._child(self.webhook_events, webhook_type(kind), outcome).inc()

    def delivery_report(self, code: int | None) -> None:
        """An accepted delivery report, by its delivery code."""
        self._child(self.delivery_reports, delivery_code(code)).inc()

    def _child(self, metric: Counter, *labels: str) -> Any:
        key = (metric, *labels)
        child = self._webhook_children.get(key)
        if child is None:
            child = self._webhook_children[key] = metric.labels(*labels)
        return child

    def watch(self, database: Database, now: Callable[[], float], open_window: float) -> None:
        """Read the database gauges from `database` at each scrape; alert groups count as
        open for `open_window` seconds after their last failure."""
        self._database_view.source = (database, now, open_window)

    async def exposition(self) -> bytes:
        """The text format of every metric, the database gauges read just now."""
        await self._database_view.refresh()
        return generate_latest(self.registry)


@dataclass(eq=False)  # registered by identity
class DatabaseView:
    """A collector of the gauges read from the database, refreshed before each scrape
    (collectors are synchronous; the queries are not)."""

    source: tuple[Database, Callable[[], float], float] | None = None
    families: list[Metric] = field(default_factory=list)
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    up: bool = True  # whether the last read succeeded

    async def refresh(self) -> None:
        if self.source is None:
            return
        async with self.lock:
            try:
                families = await self._read()
            except UNAVAILABLE as error:
                if self.up:  # said once when it goes, not at every scrape
                    log.warning("metrics: cannot read the database (%s)", describe_error(error))
                self.up = False
                self.families = [_database_up(False)]
                return
            self.up = True
            self.families = [_database_up(True), *families]

    async def _read(self) -> list[Metric]:
        assert self.source is not None
        database, now, open_window = self.source
        at = now()
        async with database.transaction() as connection:
            backlog = await gauges_store.backlog(connection, at)
            dead = await gauges_store.dead_letters(connection)
            open_groups = await gauges_store.open_alert_groups(connection, at - open_window)
            balance = await credit_store.last_balance(connection)
            waiting, oldest = await events_store.waiting_backlog(connection)
        depth = GaugeMetricFamily(
            "smsbridge_outbox_depth",
            "Jobs waiting in the outbox, by destination and kind.",
            labels=["destination", "kind"],
        )
        age = GaugeMetricFamily(
            "smsbridge_outbox_oldest_due_age_seconds",
            "How long the oldest due job has waited, by destination and kind.",
            labels=["destination", "kind"],
        )
        for row in backlog:
            depth.add_metric([row.destination, row.kind], row.depth)
            age.add_metric([row.destination, row.kind], row.oldest_due_age)
        kept = GaugeMetricFamily(
            "smsbridge_dead_letters_kept",
            "Dead letters in the database, by destination.",
            labels=["destination"],
        )
        for destination, count in dead.items():
            kept.add_metric([destination], count)
        groups = GaugeMetricFamily(
            "smsbridge_alert_groups_open",
            "Alert groups with a failure within their repeat interval.",
            value=open_groups,
        )
        bodies = GaugeMetricFamily(
            "smsbridge_webhook_bodies_waiting",
            "Webhook bodies stored but not planned yet (a worker's intake plans them).",
            value=waiting,
        )
        waited = GaugeMetricFamily(
            "smsbridge_webhook_oldest_waiting_seconds",
            "How long the oldest webhook body not planned yet has waited; 0 when none waits.",
            value=0.0 if oldest is None else max(0.0, at - oldest),
        )
        families: list[Metric] = [depth, age, kept, groups, bodies, waited]
        if balance is not None:
            families.append(
                GaugeMetricFamily(
                    "smstools_balance",
                    "The Smstools account credit, as last read from the API.",
                    value=balance,
                )
            )
        return families

    def collect(self) -> Iterator[Metric]:
        yield from self.families

    def describe(self) -> Iterator[Metric]:
        return iter(())  # the families change with the data: never checked at registration


def _database_up(up: bool) -> GaugeMetricFamily:
    return GaugeMetricFamily(
        "smsbridge_database_up",
        "1 when the database gauges could be read at this scrape, 0 when the database did not "
        "answer (the other database gauges are missing then).",
        value=1 if up else 0,
    )


def endpoint(metrics: Metrics, token: SecretStr | None) -> Callable[[Request], Awaitable[Response]]:
    """`GET /metrics`; with METRICS_TOKEN set, only for `Authorization: Bearer <token>`."""
    expected = None if token is None else f"Bearer {token.get_secret_value()}".encode()

    async def serve(request: Request) -> Response:
        if expected is not None:
            offered = request.headers.get("authorization", "").encode()
            if not hmac.compare_digest(offered, expected):
                return JSONResponse(
                    {"error": "metrics need Authorization: Bearer <METRICS_TOKEN>"},
                    status_code=401,
                    headers={"WWW-Authenticate": "Bearer"},
                )
        return Response(await metrics.exposition(), media_type=CONTENT_TYPE_LATEST)

    return serve
