"""What an answer shown in another destination's thread says: who, where, the text exactly,
and its status."""

from __future__ import annotations

import json

from bridge.delivery import render
from bridge.delivery.answers import status_words
from bridge.intake.agent_messages import author_name
from bridge.store.reports import MessageStatus


def _status(code: int | None, detail: int | None = None, read: bool = False) -> MessageStatus:
    read_at = "2026-11-26 10:02:00" if read else None
    return MessageStatus("m1", code, detail, 0, None, read_at)


def test_the_post_says_who_answered_where_and_keeps_the_text_exactly() -> None:
    text = "  *Of course*, see you <Monday>!\n"
    post = render.answer_shown_post("Anna P.", "nl-team", "telegram", text, "👍 delivered")
    assert post.heading == "Answered by Anna P. in nl-team (Telegram)"
    assert post.context[0] == "👍 delivered"
    assert post.body == text


def test_the_status_reads_accepted_delivered_read_or_failed_with_why() -> None:
    assert status_words(None) == "👌 accepted by the gateway"
    assert status_words(_status(0)) == "👌 accepted by the gateway"
    assert status_words(_status(1)) == "👍 delivered"
    assert status_words(_status(1, read=True)) == "👀 read by the customer"
    failed = status_words(_status(2, 11))
    assert failed.startswith("👎 not delivered: ") and len(failed) > len("👎 not delivered: ")


def test_a_telegram_author_is_named_a_slack_one_is_left_to_the_adapter() -> None:
    def update(sender: dict[str, object], **more: object) -> str:
        chat = {"id": -100, "type": "supergroup", "title": "Support"}
        return json.dumps({"update_id": 1, "message": {"from": sender, "chat": chat, **more}})

    assert author_name("telegram", update({"id": 1, "first_name": "Anna", "last_name": "P."}))
    assert author_name("telegram", update({"id": 1, "first_name": "Anna"})) == "Anna"
    assert author_name("telegram", update({"id": 1, "username": "anna_p"})) == "@anna_p"
    anonymous = update(
        {"id": 1087968824, "is_bot": True, "first_name": "Group"},
        sender_chat={"id": -100, "title": "Support"},
    )
    assert author_name("telegram", anonymous) == "Support"  # as Telegram shows them
    assert author_name("telegram", "{}") is None
    assert author_name("slack", json.dumps({"event": {"user": "U0AGENT"}})) is None
