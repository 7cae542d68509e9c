"""Job kinds, their typed payloads as stored, and the lane each job joins."""

from __future__ import annotations

from bridge.jobs import (
    PAYLOADS,
    AlertJob,
    AnswerShownJob,
    ConversationKey,
    CreditJob,
    FailureNoteJob,
    InboxJob,
    Job,
    Kind,
    NoticeJob,
    ReadJob,
    ReplyJob,
    ReplyStatusJob,
    Unreadable,
    conversation_lane,
    lane,
    read_payload,
)

ANNA = ConversationKey(receiver="32460200000", sender="32470123456")


def test_every_kind_has_exactly_one_payload_type() -> None:
    assert sorted(PAYLOADS) == sorted(Kind)
    assert all(model.kind == kind for kind, model in PAYLOADS.items())


def test_a_stored_payload_reads_back_as_its_type() -> None:
    stored = InboxJob(conversation=ANNA).model_dump(mode="json")
    assert read_payload("inbox", stored) == InboxJob(conversation=ANNA)
    assert read_payload("alert", {"group_id": 3}) == AlertJob(group_id=3, resolve=False)


def test_an_unknown_kind_or_a_bad_shape_is_unreadable_not_an_exception() -> None:
    assert read_payload("fax", {}) == Unreadable("unknown job kind 'fax'")
    missing = read_payload("read", None)
    assert isinstance(missing, Unreadable) and missing.problem.startswith("read job payload: ")
    wrong = read_payload("alert", {"group_id": "three"})
    assert isinstance(wrong, Unreadable) and "alert job payload" in wrong.problem


def test_everything_about_one_conversation_shares_its_lane_at_a_destination() -> None:
    lanes = {
        lane("support", payload)
        for payload in (
            InboxJob(conversation=ANNA),
            FailureNoteJob(conversation=ANNA, conversation_id=1),
            ReplyJob(conversation=ANNA, reply_id=2),
            ReplyStatusJob(conversation=ANNA, reply_id=2),
            AnswerShownJob(conversation=ANNA, reply_id=2, author="Anna", text="See you"),
        )
    }
    assert lanes == {conversation_lane("support", ANNA)}
    assert conversation_lane("support", ANNA) == "support|32460200000|32470123456"
    other = ConversationKey(receiver="32460200000", sender="32470999999")
    assert lane("support", InboxJob(conversation=other)) not in lanes
    assert lane("sales", InboxJob(conversation=ANNA)) not in lanes


def test_other_jobs_get_a_lane_of_their_own_kind() -> None:
    assert lane("support", ReadJob(messageid="m1")) == "support|read|m1"
    assert lane("oncall", AlertJob(group_id=7)) == "alert|7|oncall"
    # the quiet check has its own lane, so it never holds back the alert's edits
    assert lane("oncall", AlertJob(group_id=7, resolve=True)) == "alert-quiet|7|oncall"
    notice = NoticeJob(failing="sales", reason="not_found", detail="channel_not_found")
    assert lane("oncall", notice) == "notice|sales|not_found|oncall"
    assert lane("oncall", CreditJob(low=True, balance="1", threshold="5")) == "credit|oncall"


def test_only_an_unsure_job_has_a_time_its_earlier_posts_may_date_from() -> None:
    job = Job(1, None, "support", "lane", "inbox", InboxJob(conversation=ANNA), 2, 1000.0)
    assert job.unsure_since is None
    unsure = Job(1, None, "support", "lane", "inbox", job.payload, 2, 1000.0, unsure=True)
    assert unsure.unsure_since == 940.0  # a minute before it was queued
