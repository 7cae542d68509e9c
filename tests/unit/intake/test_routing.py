from __future__ import annotations

from pathlib import Path

from bridge.config import load
from bridge.intake.routing import destinations_for
from bridge.jobs import ConversationKey, InboxJob, lane
from bridge.smstools.webhooks import InboxMessage
from tests.unit.test_config import ENV, EXAMPLE


def inbox(receiver: str, kind: str = "sms") -> InboxMessage:
    return InboxMessage.model_validate(
        {
            "webhook_id": "w",
            "webhook_type": "inbox_message",
            "message": {
                "sender": "32470123456",
                "receiver": receiver,
                "content": "hi",
                "type": kind,
            },
        }
    )


def test_first_matching_route_wins_and_default_catches_the_rest(tmp_path: Path) -> None:
    (tmp_path / "c.yaml").write_text(EXAMPLE)
    config = load(tmp_path / "c.yaml", ENV)
    assert destinations_for(inbox("32460200000", "whatsapp"), config) == ("nl-team",)
    assert destinations_for(inbox("32460200000", "sms"), config) == ("support", "log")
    assert destinations_for(inbox("32469999999"), config) == ("support", "log")
    assert destinations_for(inbox("31612345678"), config) == ("support",)


def test_without_default_unmatched_messages_go_nowhere(tmp_path: Path) -> None:
    (tmp_path / "c.yaml").write_text(EXAMPLE.replace("default: [support]", ""))
    assert destinations_for(inbox("31612345678"), load(tmp_path / "c.yaml", ENV)) == ()


def test_a_lane_is_one_customer_on_one_line_in_one_destination() -> None:
    job = InboxJob(conversation=ConversationKey(receiver="32460200000", sender="32470123456"))
    other = InboxJob(conversation=ConversationKey(receiver="32460200000", sender="32470999999"))
    assert lane("support", job) == "support|32460200000|32470123456"
    assert lane("support", job) != lane("log", job)
    assert lane("support", job) != lane("support", other)


def test_non_ascii_digits_route_like_the_same_number_in_ascii(tmp_path: Path) -> None:
    (tmp_path / "c.yaml").write_text(EXAMPLE)
    config = load(tmp_path / "c.yaml", ENV)
    assert destinations_for(inbox("٣٢٤٦٠٢٠٠٠٠٠", "whatsapp"), config) == ("nl-team",)
    assert destinations_for(inbox("３２４６０２０００００"), config) == ("support", "log")
