"""When a low balance is told to on-call, decided without the API."""

from __future__ import annotations

from bridge.ops.credit import Tell, decide


def test_decide_tells_low_once_per_repeat_and_resolved_once() -> None:
    assert decide(50, 100, None, 0, 3600) == (Tell.LOW, 0)
    assert decide(40, 100, 0, 3599, 3600) == (None, 0)
    assert decide(40, 100, 0, 3600, 3600) == (Tell.LOW, 3600)
    assert decide(100, 100, 3600, 4000, 3600) == (Tell.RESOLVED, None)
    assert decide(150, 100, None, 4000, 3600) == (None, None)
