"""The gap a gate keeps between posts, measured on the loop's clock."""

from __future__ import annotations

import asyncio
import itertools
import time

import pytest

from bridge.chat.spacing import NOT_BEFORE, Spacing, leaving


async def test_posts_granted_together_leave_one_interval_apart() -> None:
    """Tokens granted at the claim can reach the adapter close together: the gate spaces them
    where they leave (in any order: posts of one lane are never in flight together)."""
    spacing = Spacing(0.05)
    left: list[tuple[int, float]] = []

    async def post(number: int) -> None:
        await spacing.wait()
        left.append((number, time.monotonic()))

    await asyncio.gather(*(post(number) for number in range(4)))
    assert sorted(number for number, _ in left) == [0, 1, 2, 3]
    gaps = [b - a for (_, a), (_, b) in itertools.pairwise(left)]
    assert min(gaps) >= 0.05 - 0.005  # the loop's timers may fire a clock tick early


@pytest.mark.usefixtures("settled_heap")
async def test_a_post_after_a_quiet_spell_leaves_at_once() -> None:
    ticks = iter([10.0, 10.2, 11.0, 20.0])
    spacing = Spacing(1.0, clock=lambda: next(ticks))
    await spacing.wait()  # at 10.0
    started = time.monotonic()
    await spacing.wait()  # at 10.2: waits 0.8 s on the loop, then (11.0) leaves
    assert time.monotonic() - started >= 0.8 - 0.005
    started = time.monotonic()
    await spacing.wait()  # at 20.0, long after 12.0: no wait
    assert time.monotonic() - started < 0.5


@pytest.mark.usefixtures("settled_heap")
async def test_a_post_waits_for_the_moment_its_token_is_due() -> None:
    spacing = Spacing(0.01)

    async def job(not_before: float) -> float:
        NOT_BEFORE.set(not_before)  # as the worker sets it for each job's task
        await spacing.wait()
        return time.monotonic()

    due = time.monotonic() + 0.2
    assert await asyncio.create_task(job(due)) >= due
    started = time.monotonic()
    await spacing.wait()  # another task, no token taken ahead: the interval only
    assert time.monotonic() - started < 0.15


async def test_a_post_answered_late_holds_the_next_back_from_its_answer() -> None:
    """The platform sees a post somewhere between when it left and when it was answered: the
    next one leaves `after_answer` after the answer, so a post held up on its way (a busy
    loop, a slow connection) cannot arrive too close to the one after it."""
    spacing = Spacing(0.1, after_answer=0.09)
    async with leaving(spacing):
        await asyncio.sleep(0.05)  # on its way for 50 ms
    answered = time.monotonic()
    async with leaving(spacing):
        left = time.monotonic()
    assert left - answered >= 0.09 - 0.005  # not 0.1 after it left: 0.05 after its answer
    async with leaving(None):  # a destination without a gate: nothing to wait for
        pass
