"""Why a delivery failed, classified: what to retry and what to give up on.

Chat adapters and the Smstools API client raise these; the worker's retry policy, the logs and
the dead letters read them. Nothing here is platform-specific.
"""

from __future__ import annotations

from enum import StrEnum


class Reason(StrEnum):
    """Why a delivery failed; labels logs, dead letters and metrics."""

    RATE_LIMITED = "rate_limited"
    SERVER = "server"
    TIMEOUT = "timeout"
    CONNECTION = "connection"
    AUTH = "auth"
    NOT_FOUND = "not_found"
    FORBIDDEN = "forbidden"
    BAD_REQUEST = "bad_request"
    CONFIG = "config"
    MOVED = "moved"  # the chat has a new id (Telegram group → supergroup); followed


class DeliveryError(Exception):
    """A failed chat or gateway API call, classified. `detail` never holds customer content."""

    def __init__(self, reason: Reason, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


class Retryable(DeliveryError):
    """Try again later; `retry_after` (seconds) is the platform's own wish when it gave one."""

    def __init__(self, reason: Reason, detail: str, retry_after: float | None = None) -> None:
        super().__init__(reason, detail)
        self.retry_after = retry_after


class Permanent(DeliveryError):
    """Retrying will not help until someone changes something (token, channel, config)."""
