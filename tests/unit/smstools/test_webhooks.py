from __future__ import annotations

from bridge.smstools.webhooks import (
    DeliveryReport,
    InboxMessage,
    ReadReport,
    Unparsed,
    describe_delivery,
    parse_event,
)
from tests.conftest import sample


def test_every_documented_sample_is_understood() -> None:
    kinds = {
        "inbox_message": InboxMessage,
        "inbox_message_whatsapp_reply": InboxMessage,
        "delivery_report_delivered": DeliveryReport,
        "delivery_report_failed": DeliveryReport,
        "delivery_report_insufficient_funds": DeliveryReport,
        "read_report": ReadReport,
    }
    for name, kind in kinds.items():
        (event,) = sample(name)
        assert isinstance(parse_event(event), kind), name


def test_codes_arrive_as_strings_and_become_numbers() -> None:
    (raw,) = sample("delivery_report_insufficient_funds")
    event = parse_event(raw)
    assert isinstance(event, DeliveryReport)
    assert (event.message.delivery_code, event.message.delivery_code_detail) == (5, 2000)


def test_a_reply_carries_the_original_message() -> None:
    (raw,) = sample("inbox_message_whatsapp_reply")
    event = parse_event(raw)
    assert isinstance(event, InboxMessage) and event.isreply is not None
    assert event.isreply.orig_message_content.startswith("Can we deliver")
    assert event.message.type == "whatsapp"


def test_what_cannot_be_understood_says_why() -> None:
    missing = parse_event({"webhook_id": "x", "webhook_type": "inbox_message", "message": {}})
    assert isinstance(missing, Unparsed) and missing.webhook_id == "x"
    assert "message.sender" in missing.problem
    unknown = parse_event({"webhook_id": "y", "webhook_type": "add_contact"})
    assert isinstance(unknown, Unparsed) and "unknown" in unknown.problem
    assert isinstance(parse_event([1, 2]), Unparsed)


def test_codes_are_explained_and_unknown_ones_kept_as_numbers() -> None:
    assert "INSUFFICIENT_FUNDS" in describe_delivery(5, 2000)
    assert "invalid or unknown" in describe_delivery(2, 10)
    assert "9999" in describe_delivery(5, 9999)
    assert "7" in describe_delivery(7, None)
