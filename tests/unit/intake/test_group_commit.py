"""Which bodies may share a commit, decided without a database."""

from __future__ import annotations

import json
from typing import Any

from bridge.intake.group_commit import IN_FLIGHT, _conversations, _overlap
from bridge.intake.ingest import Body
from tests.conftest import sample
from tests.support.pipeline_fixtures import inbox


def _body(*items: dict[str, Any]) -> Body:
    return Body(json.dumps(list(items)).encode(), list(items), 1.0)


def test_only_bodies_of_other_conversations_commit_beside_a_group() -> None:
    """On PostgreSQL two groups may commit at once; a conversation's bodies are never in
    both, so they get ids, and are planned and delivered, in the order they arrived."""
    first = _conversations(_body(inbox("32470000001", "a"), inbox("32470000002", "b")))
    same_customer = _conversations(_body(inbox("+32 470 00 00 01", "c")))
    other_customer = _conversations(_body(inbox("32470000003", "d")))
    report = _conversations(_body(*sample("delivery_report_failed")))
    not_understood = _conversations(_body({"webhook_type": "inbox_message"}))
    assert _overlap(same_customer, first)
    assert not _overlap(other_customer, first)
    assert _overlap(report, other_customer) and _overlap(other_customer, report)
    assert not _overlap(not_understood, first)  # plans no job
    assert not _overlap(report, frozenset())  # nothing committing: a report goes at once
    assert IN_FLIGHT == {"sqlite": 1, "postgresql": 2}
