"""Agents' chat messages: which Slack events and Telegram updates are replies, which chats may
answer, and which threads a stored event is about; decided without a database."""

from __future__ import annotations

import json
from typing import Any

import pytest

from bridge.config import Replies, build
from bridge.intake.agent_messages import (
    ASK_OR_NOTE,
    AgentMessage,
    Declined,
    Ignored,
    _answering,
    decide,
    places,
    slack_message,
    stored_message,
    telegram_message,
)

ENV = {
    "SLACK_BOT_TOKEN": "xoxb-test",
    "SLACK_SIGNING_SECRET": "signing",
    "TELEGRAM_BOT_TOKEN": "123:abc",
    "TELEGRAM_WEBHOOK_SECRET": "telegram-secret",
    "SMSTOOLS_CLIENT_ID": "id",
    "SMSTOOLS_CLIENT_SECRET": "secret",
}
CONFIG = build(
    {
        "destinations": {
            "support": {"slack": {"channel": "C0SUPPORT"}, "replies": True},
            "sales": {"slack": {"channel": "C0SALES"}},
            "forum": {"telegram": {"chat_id": -100123, "topics": True}, "replies": True},
        },
        "default": ["support"],
    },
    "test config",
    ENV,
)


def slack_event(**event: Any) -> dict[str, Any]:
    base = {"type": "message", "channel": "C0SUPPORT", "user": "U0AGENT", "text": "Hello"}
    return {"type": "event_callback", "event": {**base, **event}}


def telegram_update(**message: Any) -> dict[str, Any]:
    base = {
        "message_id": 7,
        "from": {"id": 42, "is_bot": False},
        "chat": {"id": -100123},
        "text": "Hello",
    }
    return {"update_id": 1, "message": {**base, **message}}


def test_a_human_slack_message_in_a_thread_is_an_agent_message() -> None:
    message = slack_message(slack_event(ts="2.0", thread_ts="1.0"))
    assert message == AgentMessage("slack", "C0SUPPORT", "2.0", "U0AGENT", "Hello", "1.0")


def test_slack_events_that_are_no_agent_answer_say_why() -> None:
    cases = {
        "not a message event (reaction_added)": {"event": {"type": "reaction_added"}},
        "not a message event (no event)": {"type": "event_callback"},
        "a bot's message": slack_event(ts="2.0", thread_ts="1.0", bot_id="B0"),
        "a message_changed message": slack_event(
            ts="2.0", thread_ts="1.0", subtype="message_changed"
        ),
        "not in a thread": slack_event(ts="1.0"),
    }
    for why, envelope in cases.items():
        assert slack_message(envelope) == Ignored(why)
    assert slack_message(slack_event(ts="1.0", thread_ts="1.0")) == Ignored("not in a thread")
    no_user = slack_event(ts="2.0", thread_ts="1.0")
    del no_user["event"]["user"]
    assert slack_message(no_user) == Ignored("no user or channel")


def test_a_thread_broadcast_is_still_an_answer() -> None:
    message = slack_message(slack_event(ts="2.0", thread_ts="1.0", subtype="thread_broadcast"))
    assert isinstance(message, AgentMessage) and message.thread == "1.0"


def test_a_telegram_topic_message_or_reply_is_an_agent_message() -> None:
    in_topic = telegram_message(telegram_update(message_thread_id=5, is_topic_message=True))
    assert in_topic == AgentMessage("telegram", "-100123", "7", "42", "Hello", "5", None)
    replying = telegram_message(telegram_update(reply_to_message={"message_id": 3}))
    assert replying == AgentMessage("telegram", "-100123", "7", "42", "Hello", None, "3")


def test_a_photo_with_a_caption_or_none_is_an_answer_that_has_media() -> None:
    captioned = telegram_update(reply_to_message={"message_id": 3}, photo=[{}], caption="Look")
    del captioned["message"]["text"]
    message = telegram_message(captioned)
    assert isinstance(message, AgentMessage) and message.media and message.text == "Look"
    bare = telegram_update(reply_to_message={"message_id": 3}, photo=[{}])
    del bare["message"]["text"]
    assert isinstance(telegram_message(bare), AgentMessage)


def test_telegram_updates_that_are_no_agent_answer_say_why() -> None:
    edited = {"update_id": 1, "edited_message": {}}
    assert telegram_message(edited) == Ignored("not a new message (edited_message)")
    bot = telegram_update(**{"from": {"id": 1, "is_bot": True}}, reply_to_message={})
    assert telegram_message(bot) == Ignored("a bot's message")
    channel = telegram_update(sender_chat={"id": -100}, reply_to_message={"message_id": 3})
    assert telegram_message(channel) == Ignored("sent on behalf of a channel or another chat")
    service = telegram_update(new_chat_title="Support")
    del service["message"]["text"]
    assert telegram_message(service) == Ignored("a service message")
    assert telegram_message(telegram_update()) == Ignored("not in a thread")


def test_a_thread_id_outside_a_topic_names_the_root_of_a_supergroup_reply_chain() -> None:
    # The message replied to was deleted: Telegram leaves `reply_to_message` out.
    rootless = telegram_message(telegram_update(message_thread_id=5))
    assert rootless == AgentMessage(
        "telegram", "-100123", "7", "42", "Hello", None, None, chain_root="5"
    )
    replying = telegram_message(
        telegram_update(message_thread_id=5, reply_to_message={"message_id": 6})
    )
    assert isinstance(replying, AgentMessage)
    assert (replying.thread, replying.replying_to, replying.chain_root) == (None, "6", "5")
    in_topic = telegram_message(telegram_update(message_thread_id=5, is_topic_message=True))
    assert isinstance(in_topic, AgentMessage) and in_topic.chain_root is None


def test_a_stored_event_gives_back_the_same_message() -> None:
    slack = slack_event(ts="2.0", thread_ts="1.0")
    telegram = telegram_update(reply_to_message={"message_id": 3})
    assert stored_message("slack", json.dumps(slack)) == slack_message(slack)
    assert stored_message("telegram", json.dumps(telegram)) == telegram_message(telegram)


def test_only_destinations_of_that_platform_and_chat_with_replies_on_may_answer() -> None:
    assert [d.name for d in _answering(CONFIG, "slack", "C0SUPPORT")] == ["support"]
    assert _answering(CONFIG, "slack", "C0SALES") == []  # replies off
    assert _answering(CONFIG, "telegram", "C0SUPPORT") == []  # another platform
    assert [d.name for d in _answering(CONFIG, "telegram", "-100123")] == ["forum"]


def test_places_name_every_message_and_thread_a_slack_event_is_about() -> None:
    edit = {
        "event": {
            "type": "message",
            "subtype": "message_changed",
            "channel": "C0",
            "message": {"ts": "2.0", "thread_ts": "1.0"},
            "previous_message": {"ts": "2.0"},
        }
    }
    assert places("slack", json.dumps(edit)) == {("C0", "2.0"), ("C0", "1.0")}
    reaction = {"event": {"type": "reaction_added", "item": {"channel": "C1", "ts": "3.0"}}}
    assert places("slack", json.dumps(reaction)) == {("C1", "3.0")}


def test_places_name_a_telegram_message_its_topic_and_what_it_answers() -> None:
    update = telegram_update(message_thread_id=5, reply_to_message={"message_id": 3})
    assert places("telegram", json.dumps(update)) == {
        ("-100123", "7"),
        ("-100123", "5"),
        ("-100123", "3"),
    }


def test_places_of_a_body_that_is_not_an_object_are_none() -> None:
    assert places("slack", "not json") == set()
    assert places("telegram", "[1, 2]") == set()
    assert places("slack", json.dumps({"event": "gone"})) == set()


def replies(prefix: str = "note:", allow: frozenset[str] | None = None) -> Replies:
    return Replies(prefix, allow, frozenset({"STOP"}), frozenset({"START"}), max_parts=3)


def agent(text: str = "Hello", user: str = "U0AGENT", **more: Any) -> AgentMessage:
    return AgentMessage("slack", "C0SUPPORT", "2.0", user, text, "1.0", **more)


ALLOW = frozenset({"U0AGENT"})


@pytest.mark.parametrize(
    ("message", "settings", "own_team", "decision"),
    [
        (agent(), replies(allow=ALLOW), "T0", None),
        (agent(user="U0NEW"), replies(), "T0", None),
        (agent(team="T0PARTNER"), replies(allow=ALLOW), "T0", None),
        (agent("note: VIP", user="U0NEW"), replies(allow=ALLOW), "T0", "internal"),
        (agent("note: VIP", anonymous=True), replies(allow=ALLOW), None, "internal"),
        (agent("note: VIP", team="T0PARTNER"), replies(), "T0", "internal"),
        (agent(user="U0NEW"), replies(allow=ALLOW), "T0", "declined"),
        (agent(anonymous=True), replies(allow=ALLOW), None, "declined"),
        (agent(team="T0PARTNER"), replies(), "T0", "declined"),
        (agent("/start", command=True), replies(), None, "declined"),
    ],
    ids=[
        "a member in allow answers",
        "anyone answers without allow",
        "another workspace's member in allow answers",
        "a note of a member not in allow stays internal",
        "an anonymous admin's note stays internal",
        "a shared channel's note stays internal",
        "a member not in allow is declined",
        "an anonymous admin is declined where allow is set",
        "another workspace's member is declined without allow",
        "a bot command is declined",
    ],
)
def test_what_becomes_of_a_message_in_a_bridged_thread(
    message: AgentMessage, settings: Replies, own_team: str | None, decision: str | None
) -> None:
    decided = decide(message, settings, own_team)
    if decision is None:
        assert decided is None
    elif decision == "internal":
        assert decided == Ignored("an internal note")
    else:
        assert isinstance(decided, Declined)
        why, _, step = decided.why.partition(" — ")
        assert why and step  # what happened, then one next step


def test_a_member_not_in_allow_is_told_who_answers_and_how_to_keep_a_note_internal() -> None:
    decided = decide(agent(user="U0NEW"), replies("n.b.", ALLOW), None)
    assert isinstance(decided, Declined)
    why, _, step = decided.why.partition(" — ")
    assert "replies.allow" in why and "ask one of them to answer" in step
    # The configured prefix is filled in where the thread is told (tests/system/test_reply_input).
    assert step == ASK_OR_NOTE and "{prefix}" in step


def test_without_a_prefix_a_member_not_in_allow_is_only_told_who_answers() -> None:
    decided = decide(agent(user="U0NEW"), replies("", ALLOW), None)
    assert isinstance(decided, Declined)
    assert "ask one of them to answer" in decided.why and "note" not in decided.why
