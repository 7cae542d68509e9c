"""An erasure runs in a process of its own (`smsbridge forget`): a running bridge, web side
or worker, forgets the numbers it remembers to save work within `remembered.FORGET_EVERY`."""

from __future__ import annotations

import pytest

from bridge import phones, remembered
from bridge.intake import ingest
from testkit.fakes.slack import FakeSlack
from testkit.fakes.telegram import FakeTelegram
from tests.support.harness import running_bridge, wait_until
from tests.support.pipeline_fixtures import adapters, inbox, make_config


@pytest.mark.parametrize("run_worker", [False, True], ids=["web only", "with its worker"])
async def test_a_running_bridge_forgets_the_numbers_it_remembers(
    sqlite_url: str,
    slack: FakeSlack,
    telegram: FakeTelegram,
    monkeypatch: pytest.MonkeyPatch,
    run_worker: bool,
) -> None:
    monkeypatch.setattr(remembered, "FORGET_EVERY", 0.05)
    async with running_bridge(
        sqlite_url, make_config(), adapters(slack, telegram), run_worker=run_worker
    ) as bridge:
        answer = await bridge.post([inbox("+32 470 99 88 77", "Is my order on its way?")])
        assert answer.status_code == 200
        if run_worker:
            await wait_until(lambda: bool(slack.posts()), "the message posted")
        assert ingest._inbox_job.cache_info().currsize  # remembered while it was stored

        def forgotten() -> bool:
            caches = [phones.key, ingest._inbox_job]
            return not any(cache.cache_info().currsize for cache in caches)

        await wait_until(forgotten, "the remembered numbers forgotten")
