"""The Smstools credit, watched: read `GET /balance` every `balance_check_interval`, tell
on-call once when it falls under `alerts.low_balance` (again at most every repeat_interval
while it stays low), and resolve the incident when it rises again.

One process asks per interval (`store.credit.claim_check`). The notice opens the
out-of-credit incident (`intake.alerts.plan_low_credit`): the alert its failures grow, posted
to the destinations of the route for detail 2000 and delivered and retried like any post.
An API error is logged once per reason and never touches delivery.
"""

from __future__ import annotations

import asyncio
import logging
import math
from collections.abc import Callable
from enum import StrEnum

from bridge.config import Config
from bridge.errors import DeliveryError
from bridge.intake import alerts as intake_alerts
from bridge.metrics import Metrics
from bridge.smstools.api import SmstoolsApi
from bridge.store import credit as credit_store
from bridge.store import wakeups as wakeups_store
from bridge.store.db import Database

log = logging.getLogger(__name__)


class Tell(StrEnum):
    LOW = "low"
    RESOLVED = "resolved"


def decide(
    amount: float, threshold: float, low_told_at: float | None, now: float, repeat: float
) -> tuple[Tell | None, float | None]:
    """What to tell on-call about a balance just read, and the new `low_told_at`."""
    if amount < threshold:
        if low_told_at is None or now - low_told_at >= repeat:
            return Tell.LOW, now
        return None, low_told_at
    if low_told_at is not None:
        return Tell.RESOLVED, None
    return None, None


class CreditWatch:
    """Reads the balance when due; `check()` once, or `run()` until cancelled."""

    def __init__(
        self,
        database: Database,
        config: Config,
        api: SmstoolsApi,
        *,
        now: Callable[[], float],
        metrics: Metrics | None = None,
        poll_interval: float = 30.0,
    ) -> None:
        self.database = database
        self.config = config
        self.api = api
        self.now = now
        self.metrics = metrics
        self.poll_interval = poll_interval
        self._reported: set[str] = set()  # problems logged since the last good read

    async def run(self) -> None:
        """Check whenever due, until cancelled; nothing here stops delivery."""
        while True:
            try:
                await self.check()
            except Exception as error:  # a database hiccup: the next poll tries again
                self._once(f"internal:{type(error).__name__}", f"internal error ({error!r})")
            await asyncio.sleep(min(self.poll_interval, self.config.balance_check_interval))

    async def check(self) -> float | None:
        """Read the balance if no process did within the interval; the amount, else None."""
        now = self.now()
        async with self.database.transaction() as connection:
            due = await credit_store.claim_check(
                self.database, connection, now, self.config.balance_check_interval
            )
        if not due:
            return None
        try:
            balance = await self.api.balance()
        except DeliveryError as error:
            self._count(str(error.reason))
            self._once(str(error.reason), error.detail)
            return None
        try:
            amount = float(balance.amount)
        except ValueError:
            amount = math.nan
        if not math.isfinite(amount):
            self._count("unreadable")
            self._once("unreadable", "the balance in its answer is not a number")
            return None
        self._count("ok")
        if self._reported:
            self._reported.clear()
            log.info("the Smstools balance can be read again", extra={"outcome": "ok"})
        await self._record(amount, str(balance), now)
        return amount

    async def _record(self, amount: float, shown: str, now: float) -> None:
        alerts = self.config.alerts
        threshold = None if alerts is None else alerts.low_balance
        async with self.database.transaction() as connection:
            told_at = (await credit_store.state(connection)).low_told_at
            tell = None
            if alerts is not None and threshold is not None:
                repeat = alerts.top.repeat_interval
                tell, told_at = decide(amount, threshold, told_at, now, repeat)
            await credit_store.record(self.database, connection, amount, told_at)
            if tell is None or alerts is None:
                return
            # The notice is the out-of-credit incident's alert: one message, one mention,
            # edited as failures come; credit back resolves it (bridge/intake/alerts.py).
            if tell is Tell.LOW:
                await intake_alerts.plan_low_credit(self.database, connection, alerts, shown, now)
            else:
                await intake_alerts.plan_cleared(self.database, connection, now, credit_back=True)
            await wakeups_store.announce(self.database, connection)
        log.warning(
            "Smstools credit %s: %s (alerts.low_balance %g); on-call told",
            "is low" if tell is Tell.LOW else "is back up",
            shown,
            threshold,
            extra={"outcome": f"credit_{tell}"},
        )

    def _count(self, outcome: str) -> None:
        if self.metrics is not None:
            self.metrics.balance_checks.labels(outcome=outcome).inc()

    def _once(self, reason: str, detail: str) -> None:
        """Log a problem the first time it happens since the balance was last read."""
        if reason in self._reported:
            return
        self._reported.add(reason)
        log.warning(
            "cannot read the Smstools balance (%s): %s; delivery goes on",
            reason,
            detail,
            extra={"outcome": reason},
        )
