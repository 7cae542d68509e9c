from __future__ import annotations

from bridge.outbox import DAY, RetryPolicy


def test_backoff_grows_exponentially_with_jitter_and_a_cap() -> None:
    policy = RetryPolicy(first_delay=2, max_delay=600)
    assert [policy.delay(n, rand=lambda: 1.0) for n in range(4)] == [2, 4, 8, 16]
    assert policy.delay(2, rand=lambda: 0.0) == 4  # jitter keeps at least half the backoff
    assert policy.delay(50, rand=lambda: 1.0) == 600


def test_the_platforms_retry_after_comes_first() -> None:
    assert RetryPolicy().delay(5, retry_after=7, rand=lambda: 0.5) == 7.5


def test_the_bridge_gives_up_after_a_day_by_default() -> None:
    policy = RetryPolicy()
    assert not policy.exhausted(created_at=0, now=DAY - 1)
    assert policy.exhausted(created_at=0, now=DAY)
