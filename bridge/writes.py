"""Whether a writer's latest write went through: the webhooks' group commit and the worker's
records each keep one `LastWrite`, and readiness reports them (a full disk answers every read
and refuses every write)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class LastWrite:
    """When one writer's writes last succeeded and last failed (Unix times), and why the
    last failure failed. Recording is two assignments: it sits on the hot paths."""

    ok_at: float | None = None
    failed_at: float | None = None
    why: str | None = None

    def succeeded(self, at: float) -> None:
        self.ok_at = at

    def failed(self, why: str, at: float) -> None:
        self.failed_at, self.why = at, why

    @property
    def failing(self) -> bool:
        """Whether the latest write failed (none since has succeeded)."""
        return self.failed_at is not None and (self.ok_at is None or self.failed_at > self.ok_at)
