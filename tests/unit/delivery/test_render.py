"""Events → platform-neutral posts: what each message says, before any platform formatting."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

import pytest

from bridge.chat.base import Moment, Tone
from bridge.config import Config, build
from bridge.delivery import render
from bridge.smstools.webhooks import (
    ACCOUNT_WIDE_DETAILS,
    DeliveryReport,
    InboxMessage,
    ReadReport,
    parse_event,
)
from bridge.store.alerts import Group

CONFIG: Config = build(
    {
        "destinations": {"support": {"console": {}}},
        "lines": {"32460200000": "Support line"},
    },
    "test config",
    {},
)


def inbox(content: str = "Where is my parcel?", **message: Any) -> InboxMessage:
    event = parse_event(
        {
            "webhook_id": "w1",
            "webhook_type": "inbox_message",
            "timezone": "Europe/Brussels",
            "message": {
                "id": "1",
                "date": "2026-01-01 09:14:00",
                "sender": "32470123456",
                "receiver": "32460200000",
                "content": content,
                **message,
            },
        }
    )
    assert isinstance(event, InboxMessage)
    return event


def test_the_post_opening_a_thread_says_who_on_which_line_how_and_when() -> None:
    post = render.inbox_post(inbox(), CONFIG, opens_thread=True)
    assert post.heading == "+32 470 12 34 56" and post.titled
    assert list(post.context) == ["to Support line (+32 460 20 00 00)", "SMS"]
    assert post.moment == Moment(at=WRITTEN_AT, text="2026-01-01 09:14:00 (Europe/Brussels)")
    assert post.body == "Where is my parcel?" and post.author == "+32 470 12 34 56"
    assert not post.quiet  # the customer's words notify


WRITTEN_AT = datetime(2026, 1, 1, 8, 14, tzinfo=UTC).timestamp()  # 09:14 in Brussels


def test_the_gateway_time_is_shown_only_when_it_differs_from_the_post_by_over_a_minute() -> None:
    for posted_at, shown in (
        (WRITTEN_AT, False),
        (WRITTEN_AT + 60, False),
        (WRITTEN_AT - 60, False),
        (WRITTEN_AT + 61, True),
        (WRITTEN_AT - 61, True),
        (WRITTEN_AT + 3600, True),
    ):
        post = render.inbox_post(inbox(), CONFIG, opens_thread=True, posted_at=posted_at)
        assert (post.moment is not None) is shown, posted_at


def test_later_posts_carry_only_the_text_and_a_short_context() -> None:
    post = render.inbox_post(inbox(type="whatsapp"), CONFIG, opens_thread=False)
    assert post.heading == ""
    assert list(post.context) == ["WhatsApp · 09:14"]
    assert post.body == "Where is my parcel?" and post.author == "+32 470 12 34 56"


def test_topic_names_say_customer_line_and_channel_within_128_characters() -> None:
    title = render.thread_title("32470123456", "32460200000", "sms", CONFIG)
    assert title == "+32 470 12 34 56 · Support line · SMS"
    unnamed = render.thread_title("32470123456", "32460200001", "whatsapp", CONFIG)
    assert unnamed == "+32 470 12 34 56 · +32 460 20 00 01 · WhatsApp"
    long_name = build(
        {
            "destinations": {"support": {"console": {}}},
            "lines": {"32460200000": "L" * 300},
        },
        "test config",
        {},
    )
    title = render.thread_title("32470123456", "32460200000", "sms", long_name)
    assert len(title) == 128
    assert title.startswith("+32 470 12 34 56 · LLL") and title.endswith("L… · SMS")


def failed(**message: Any) -> DeliveryReport:
    event = parse_event(
        {
            "webhook_id": "w2",
            "webhook_type": "delivery_report",
            "message": {
                "messageid": "m1",
                "datetime": "2026-01-01 09:38:00",
                "delivery_status_datetime": "2026-01-01 09:40:12",
                "content": "Your parcel 5531 will be delivered tomorrow",
                "sender": "Acme",
                "receiver": "32470123456",
                "delivery_code": "2",
                "delivery_code_detail": "11",
                **message,
            },
        }
    )
    assert isinstance(event, DeliveryReport)
    return event


def test_a_failure_note_labels_its_sender_and_times() -> None:
    post = render.failure_note_post(failed())
    assert post.heading == "Not delivered to +32 470 12 34 56"
    assert list(post.context) == ["from Acme", "sent 09:38", "failed 09:40"]
    assert "out of network range" in post.body


def test_a_read_report_is_a_short_line_quoting_the_start_of_the_message() -> None:
    event = parse_event(
        {
            "webhook_id": "w3",
            "webhook_type": "read_report",
            "message": {
                "messageid": "m1",
                "datetime": "2026-01-01 09:00:00",
                "read_datetime": "2026-01-01 09:06:30",
                "content": "Your parcel 5531 will be delivered tomorrow",
            },
        }
    )
    assert isinstance(event, ReadReport)
    post = render.read_post(event)
    assert post.heading == "" and post.body == ""
    assert list(post.context) == ['✓ Read by the customer at 09:06: "Your parcel 5531 will be…"']


def group(codes: dict[str, int], receivers: list[str], others: int = 0) -> Group:
    return Group(
        id=1,
        group_key="k",
        route={},
        labels={},
        sender="Clinic",
        timezone="Europe/Brussels",
        count=sum(codes.values()),
        codes=codes,
        receivers=receivers,
        others=others,
        first_at=1767254400.0,  # 2026-01-01 09:00 in Brussels
        last_at=1767301500.0,  # 2026-01-01 22:05 in Brussels
        last_event_id=1,
    )


def test_an_alert_says_what_failed_why_with_labelled_codes_and_what_to_do() -> None:
    receivers = [f"3247012345{n}" for n in range(10)]
    post = render.alert_post(group({"5/2000": 30}, receivers, others=20), "<!here>")
    assert post.tone is Tone.FIRING and post.mention == "<!here>"
    assert post.heading == "Out of credit: 30 messages from Clinic not sent"
    lines = post.body.split("\n")
    assert lines[0] == (
        "Why: the account is out of credit; every message fails until credit is bought "
        "(rejected, code 5, detail 2000 INSUFFICIENT_FUNDS)"
    )
    assert lines[1] == "Do: top up the Smstools credit; every message fails until you do"
    assert lines[2] == "Receivers:"
    assert lines[3:13] == [f"+32 470 12 34 5{n}" for n in range(10)]  # one per line
    assert lines[13] == "and 20 more"
    assert list(post.context) == ["first 2026-01-01 09:00 CET", "last 2026-01-01 22:05 CET"]


def test_every_account_wide_code_has_a_cause_and_a_do_line() -> None:
    for detail in sorted(ACCOUNT_WIDE_DETAILS):
        post = render.alert_post(group({f"5/{detail}": 1}, ["32470123456"]), None)
        assert post.heading.startswith(render.CAUSES[detail] + ": 1 message from Clinic")
        do = [line for line in post.body.split("\n") if line.startswith("Do: ")]
        assert do == [f"Do: {render.NEXT_STEPS[detail]}"]


def test_a_per_recipient_failure_says_check_the_number_and_mixed_codes_are_counted() -> None:
    post = render.alert_post(group({"2/10": 2, "2/11": 1}, ["32470123456"]), None)
    assert post.heading == "Not delivered, several reasons: 3 messages from Clinic not sent"
    why = [line for line in post.body.split("\n") if line.startswith("Why: ")]
    assert why == [
        "Why: 2 × the receiver's number is invalid or unknown (not delivered, code 2, detail 10)",
        "Why: 1 × the receiver is temporarily out of network range "
        "(not delivered, code 2, detail 11)",
    ]
    assert "Do: check the number with the customer" in post.body


def test_a_quiet_incident_stays_red_and_says_since_when_nothing_new_failed() -> None:
    post = render.alert_post(group({"5/2000": 30}, ["32470123456"]), "<!here>", quiet=True)
    assert post.tone is Tone.FIRING
    assert post.heading == "Out of credit: 30 messages from Clinic not sent"
    assert "no new failures since 22:05" in post.context
    assert "Do: top up the Smstools credit" in post.body and "Receivers:" in post.body


def test_a_resolved_incident_keeps_why_and_do_and_lists_what_was_never_sent() -> None:
    incident = replace(
        group({"5/2000": 30}, ["32470123456"]),
        cause=2000,
        senders=["Clinic", "32460300000"],
        unsent={"campaign-reminders": 29, "": 1},
        cleared_at=1767303000.0,  # 22:30
    )
    texts = [
        (
            "campaign-reminders",
            "Reminder: your appointment tomorrow at 9:30 with <b>Dr</b> Peeters",
        ),
        ("", "We moved you to 10:00."),
    ]
    post = render.resolved_post(incident, texts, "<!here>", threshold="100")
    assert post.tone is Tone.RESOLVED and post.mention == "<!here>"
    assert post.heading == (
        "Resolved: Out of credit: 30 messages from Clinic and +32 460 30 00 00 not sent"
    )
    assert "resolved 22:30: credit is back above 100" in post.context
    assert post.body.split("\n") == [
        "Why: the account is out of credit; every message fails until credit is bought "
        "(rejected, code 5, detail 2000 INSUFFICIENT_FUNDS)",
        "Do: top up the Smstools credit; every message fails until you do",
        "Still undone: 30 messages were never sent",
        "• 29 × reference campaign-reminders",
        "    “Reminder: your appointment tomorrow at 9:30 with <b>Dr</b>…”",
        "• 1 × no reference",
        "    “We moved you to 10:00.”",
        "Send these again now that credit is back.",
    ]


@pytest.mark.parametrize(
    ("count", "body"),
    [
        (
            30,
            [
                "Still undone: 30 messages were never sent",
                "Send these again now that credit is back.",
            ],
        ),
        (0, ["No message failed meanwhile."]),
    ],
)
def test_the_resolution_reply_says_what_is_over_what_is_undone_and_the_next_step_only(
    count: int, body: list[str]
) -> None:
    incident = replace(
        group({"5/2000": 30}, ["32470123456"]),
        cause=2000,
        count=count,
        unsent={"campaign-reminders": count} if count else {},
        cleared_at=1767303000.0,  # 22:30
    )
    post = render.resolution_reply(incident, "<!here>", threshold="100")
    assert post.tone is Tone.RESOLVED and post.mention == "<!here>"
    assert post.heading == "Resolved 22:30: credit is back above 100"
    assert post.context == () and post.body.split("\n") == body  # Why and Do are just above
