"""What the worker counts of its deliveries, in this process's metrics (none: not counted)."""

from __future__ import annotations

from bridge.errors import DeliveryError
from bridge.jobs import Job, Kind
from bridge.metrics import Metrics


class DeliveryCounters:
    """Counts deliveries, failures and replies by destination; does nothing without metrics."""

    def __init__(self, metrics: Metrics | None) -> None:
        self.metrics = metrics

    def delivered(self, job: Job, received_at: float | None, now: float) -> None:
        """`job` delivered at `now`; an inbox message's latency from when it was received."""
        if self.metrics is None:
            return
        metrics, destination = self.metrics, job.destination
        metrics.delivery_attempts.labels(destination, job.kind, "ok", "none").inc()
        if job.kind == Kind.INBOX and received_at is not None:
            metrics.delivery_latency.labels(destination).observe(max(0.0, now - received_at))
        elif job.kind == Kind.ALERT:
            metrics.alerts_sent.labels(destination).inc()
        elif job.kind in (Kind.NOTICE, Kind.CREDIT):
            metrics.notices_sent.labels(destination, job.kind).inc()

    def failed(self, job: Job, error: DeliveryError, *, dead: bool) -> None:
        """An attempt at `job` failed: it is retried later, or (`dead`) given up on."""
        if self.metrics is None:
            return
        outcome = "dead" if dead else "retry"
        labels = (job.destination, job.kind, outcome, str(error.reason))
        self.metrics.delivery_attempts.labels(*labels).inc()
        if dead:
            self.metrics.dead_letters.labels(job.destination).inc()

    def reply(self, destination: str, outcome: str) -> None:
        """A reply that got there: `sent`, or `refused` by the bridge or the gateway."""
        if self.metrics is not None:
            self.metrics.replies.labels(destination, outcome).inc()
