"""The README pictures' day (`docs/screenshots`) plays through a real `smsbridge serve`, and
the page shows each message the fake Slack received in its last form."""

from __future__ import annotations

from pathlib import Path

import pytest

from docs.screenshots.day import ANSWER, ONCALL, SUPPORT, play
from docs.screenshots.slack_page import messages, page

pytestmark = pytest.mark.slow


def test_the_screenshots_day_shows_every_message_in_its_last_form(tmp_path: Path) -> None:
    recorded = play(tmp_path)
    support = messages(recorded, SUPPORT)
    assert [m.author for m in support if m.thread_ts is None] == [
        "+32 470 12 34 56",
        "+32 471 12 34 56",
        "+32 472 55 51 11",
    ]
    first = support[0]
    assert first.reactions == ("white_check_mark",)
    (answer,) = [m for m in support if m.author == "Anna Peeters"]
    assert answer.thread_ts == first.ts and answer.reactions == ("+1",)
    thread = page(recorded, SUPPORT, first.ts)
    assert "Is it *really* coming today?" in thread and ANSWER in thread
    assert "Not delivered to +32 470 12 34 56" in thread
    (alert, resolution) = messages(recorded, ONCALL)
    assert alert.edited and resolution.thread_ts == alert.ts
    oncall = page(recorded, ONCALL, alert.ts)
    assert "🔴" not in oncall and oncall.count("Resolved: Out of credit: 12 messages") == 2
