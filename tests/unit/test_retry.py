from __future__ import annotations

from bridge.errors import Permanent, Reason, Retryable
from bridge.retry import DAY, RetryPolicy, backoff


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


def test_a_permanent_error_or_a_day_of_retries_gives_up_and_anything_else_waits() -> None:
    policy = RetryPolicy()
    retryable = Retryable(Reason.SERVER, "503")
    assert policy.next_attempt(retryable, attempts=0, created_at=0, now=1, rand=lambda: 1) == 2
    assert policy.next_attempt(retryable, attempts=0, created_at=0, now=DAY) is None
    gone = Permanent(Reason.NOT_FOUND, "channel_not_found")
    assert policy.next_attempt(gone, attempts=0, created_at=0, now=1) is None


def test_one_backoff_doubles_up_to_its_cap_with_or_without_jitter() -> None:
    assert [backoff(n, first=1, cap=30) for n in range(7)] == [1, 2, 4, 8, 16, 30, 30]
    assert backoff(3, first=1, cap=30, rand=lambda: 0.0) == 4
    assert backoff(10**6, first=1, cap=30) == 30  # no overflow, however long it went on
