"""Readiness decisions that need no database."""

from __future__ import annotations

from bridge.ops import readiness


def test_a_loop_quiet_for_longer_than_a_minute_is_not_ready() -> None:
    now = 10_000.0
    stale = readiness.WORKER_STALE_AFTER
    assert readiness.worker_check(True, True, now - stale + 1, now).ok
    late = readiness.worker_check(True, True, now - stale - 1, now)
    assert not late.ok and late.detail == "the delivery loop has not gone round for 61s"
    assert not readiness.worker_check(True, True, None, now).ok  # not started yet
    assert readiness.worker_check(False, False, None, now).ok  # BRIDGE_WORKER=0
