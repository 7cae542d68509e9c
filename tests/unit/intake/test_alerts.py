"""Alert grouping as pure functions, tested as Alertmanager tests its aggregation groups:
no database, no HTTP, an explicit clock."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace

import pytest

from bridge.config import AlertRoute, Config, build
from bridge.intake import alerts
from bridge.intake.alerts import Action, Failure
from bridge.store.alerts import Group, Notice

ROUTE = AlertRoute(
    matchers={},
    to=("oncall",),
    group_by=("delivery_code_detail", "sender"),
    group_wait=30.0,
    group_interval=300.0,
    repeat_interval=4 * 3600.0,
    mention={},
)
EMPTY = Group(
    id=1,
    group_key="k",
    route={},
    labels={},
    sender="",
    timezone="",
    count=0,
    codes={},
    receivers=[],
    others=0,
    first_at=0.0,
    last_at=0.0,
    last_event_id=0,
)
NOTICE = Notice(1, "oncall", None, None, 0, None, None, None)


def failure(
    receiver: str = "32470000001",
    code: str = "5",
    detail: str = "2000",
    *,
    sender: str = "Clinic",
    reference: str = "",
    text: str = "Your appointment is confirmed.",
    event_id: int = 7,
) -> Failure:
    labels = {
        "delivery_code": code,
        "delivery_code_detail": detail,
        "sender": sender,
        "receiver": receiver,
    }
    return Failure(
        labels, sender, "Europe/Brussels", receiver, event_id, reference=reference, text=text
    )


def test_failures_add_up_by_code_with_ten_receivers_named_and_the_rest_counted() -> None:
    group = EMPTY
    for n in range(12):
        group = alerts.add_failure(group, failure(f"3247000000{n:02d}"), 100.0 + n, ROUTE)
    group = alerts.add_failure(group, failure("32470000000000", detail="10"), 200.0, ROUTE)
    assert group.count == 13
    assert group.codes == {"5/2000": 12, "5/10": 1}
    assert len(group.receivers) == 10 and group.others == 3
    assert (group.first_at, group.last_at) == (100.0, 200.0)
    assert (group.sender, group.last_event_id) == ("Clinic", 7)


def test_a_receiver_failing_twice_is_named_once() -> None:
    group = alerts.add_failure(EMPTY, failure(), 1.0, ROUTE)
    group = alerts.add_failure(group, failure(), 2.0, ROUTE)
    assert group.count == 2 and group.receivers == ["32470000001"] and group.others == 0


def test_a_group_quiet_for_repeat_interval_starts_from_zero() -> None:
    group = alerts.add_failure(EMPTY, failure(), 1.0, ROUTE)
    group = alerts.add_failure(group, failure("32470000002"), 2.0, ROUTE)
    still = alerts.add_failure(group, failure(), 2.0 + ROUTE.repeat_interval, ROUTE)
    assert still.count == 3  # exactly repeat_interval later still belongs to the group
    again = alerts.add_failure(group, failure(), 3.0 + ROUTE.repeat_interval, ROUTE)
    assert again.count == 1 and again.first_at == 3.0 + ROUTE.repeat_interval
    assert again.receivers == ["32470000001"]


def test_the_first_notification_waits_group_wait_and_later_ones_group_interval() -> None:
    assert alerts.schedule(NOTICE, 100.0, ROUTE) == 130.0
    told = replace(NOTICE, notified_at=100.0)
    assert alerts.schedule(told, 150.0, ROUTE) == 400.0
    assert alerts.schedule(told, 1000.0, ROUTE) == 1000.0  # the interval has passed: now
    assert alerts.schedule(replace(told, pending_at=400.0), 150.0, ROUTE) is None


def test_the_next_action_is_post_edit_repost_or_nothing() -> None:
    group = alerts.add_failure(EMPTY, failure(), 1.0, ROUTE)
    assert alerts.next_action(NOTICE, group, 31.0, ROUTE) is Action.POST
    posted = replace(NOTICE, chat="C", message="1.0", posted_at=31.0, notified_count=1)
    assert alerts.next_action(posted, group, 40.0, ROUTE) is Action.NOTHING
    grown = alerts.add_failure(group, failure("32470000002"), 50.0, ROUTE)
    assert alerts.next_action(posted, grown, 331.0, ROUTE) is Action.EDIT
    later = 31.0 + ROUTE.repeat_interval
    assert alerts.next_action(posted, grown, later - 1, ROUTE) is Action.EDIT
    assert alerts.next_action(posted, grown, later, ROUTE) is Action.REPOST


def _config(routes: list[dict[str, object]]) -> Config:
    document = {
        "destinations": {"oncall": {"console": {}}, "billing": {"console": {}}},
        "alerts": {"to": ["oncall"], "routes": routes},
    }
    return build(document, "test config", {})


FUNDS = {"match": {"delivery_code_detail": [2000]}, "to": ["billing"], "group_wait": "0s"}
CLINIC = {"match": {"sender": ["Clinic"]}, "to": ["oncall"], "group_wait": "1m"}


def test_a_group_key_names_the_routes_matchers_not_its_position() -> None:
    before, after = _config([FUNDS, CLINIC]), _config([CLINIC, FUNDS])
    assert before.alerts is not None and after.alerts is not None
    labels = failure().labels
    funds_before = before.alerts.routes[0]
    funds_after = after.alerts.routes[1]
    assert alerts.group_key(funds_before, labels) == alerts.group_key(funds_after, labels)
    assert alerts.group_key(funds_before, labels) != alerts.group_key(after.alerts.top, labels)
    group = replace(EMPTY, route=alerts.route_identity(funds_before))
    assert alerts.route_of(after.alerts, group) is funds_after
    gone = replace(EMPTY, route={"sender": ["Nobody"]})
    assert alerts.route_of(after.alerts, gone) is after.alerts.top


@pytest.mark.parametrize(
    "decision",
    [alerts.pages, alerts.tells_on_call],
    ids=["pages someone", "tells on-call where lone failures are only noted"],
)
def test_only_account_wide_codes_or_a_group_above_page_above_page_or_tell_on_call(
    decision: Callable[[Group, AlertRoute], bool],
) -> None:
    assert ROUTE.lone_failures == "note"
    lone = alerts.add_failure(EMPTY, failure(code="2", detail="11"), 1.0, ROUTE)
    assert decision(lone, ROUTE) is False
    funds = alerts.add_failure(EMPTY, failure(code="5", detail="2000"), 1.0, ROUTE)
    assert decision(funds, ROUTE) is True
    for detail in ("2000", "2004", "2005", "4003", "4004", "4005"):
        group = alerts.add_failure(EMPTY, failure(detail=detail), 1.0, ROUTE)
        assert decision(group, ROUTE) is True, detail
    many = lone
    for n in range(ROUTE.page_above - 1):
        many = alerts.add_failure(many, failure(f"324700001{n:02d}", "2", "11"), 2.0, ROUTE)
    assert many.count == ROUTE.page_above == 20
    assert decision(many, ROUTE) is False  # at page_above: not yet
    more = alerts.add_failure(many, failure("32470009999", "2", "11"), 3.0, ROUTE)
    assert decision(more, ROUTE) is True  # above it: posted, with the mention
    assert decision(more, replace(ROUTE, page_above=30)) is False


def test_lone_failures_post_tells_on_call_of_every_group() -> None:
    posted = replace(ROUTE, lone_failures="post")
    lone = alerts.add_failure(EMPTY, failure(code="2", detail="11"), 1.0, posted)
    assert alerts.tells_on_call(lone, posted) is True
    assert alerts.pages(lone, posted) is False  # told, without the mention


def test_a_lone_per_recipient_failure_is_only_noted_by_default() -> None:
    assert ROUTE.lone_failures == "note"
    lone = alerts.add_failure(EMPTY, failure(code="2", detail="11"), 1.0, ROUTE)
    assert alerts.tells_on_call(lone, ROUTE) is False


def test_a_told_group_that_pages_is_said_quiet_after_resolve_after_once() -> None:
    group = alerts.add_failure(EMPTY, failure(), 100.0, ROUTE)
    posted = replace(NOTICE, chat="C", message="1.0", posted_at=130.0, notified_count=1)
    assert alerts.resolve_after(ROUTE) == ROUTE.group_interval == 300.0  # the default
    assert alerts.resolve_after_ends(group, ROUTE, 130.0) == 400.0
    assert alerts.check_action(posted, group, 399.0, ROUTE) is Action.NOTHING
    assert alerts.check_action(posted, group, 400.0, ROUTE) is Action.QUIET
    resolved = replace(posted, resolved_at=400.0)
    assert alerts.check_action(resolved, group, 500.0, ROUTE) is Action.NOTHING
    # a failure not told yet: its own notification comes first, then its own check
    grown = alerts.add_failure(group, failure("32470000002"), 200.0, ROUTE)
    assert alerts.check_action(posted, grown, 600.0, ROUTE) is Action.NOTHING
    assert alerts.check_action(NOTICE, group, 600.0, ROUTE) is Action.NOTHING  # never posted
    slow = replace(ROUTE, resolve_after=3600.0)
    assert alerts.resolve_after_ends(group, slow, 130.0) == 3700.0
    assert alerts.check_action(posted, group, 3699.0, slow) is Action.NOTHING
    assert alerts.check_action(posted, group, 3700.0, slow) is Action.QUIET


def test_a_group_that_does_not_page_gets_no_quiet_edit() -> None:
    posted_route = replace(ROUTE, lone_failures="post")
    lone = alerts.add_failure(EMPTY, failure(code="2", detail="11"), 100.0, posted_route)
    posted = replace(NOTICE, chat="C", message="1.0", posted_at=130.0, notified_count=1)
    assert alerts.check_action(posted, lone, 10_000.0, posted_route) is Action.NOTHING


def test_an_incident_resolves_only_once_its_cause_is_gone() -> None:
    group = alerts.add_failure(EMPTY, failure(), 100.0, ROUTE)
    posted = replace(NOTICE, chat="C", message="1.0", posted_at=130.0, notified_count=1)
    assert alerts.check_action(posted, group, 10_000.0, ROUTE) is Action.QUIET  # still open
    cleared = replace(group, cleared_at=9_000.0)
    assert alerts.check_action(posted, cleared, 9_000.0, ROUTE) is Action.RESOLVE
    done = replace(posted, resolved_at=9_000.0)
    assert alerts.check_action(done, cleared, 9_001.0, ROUTE) is Action.NOTHING
    assert alerts.check_action(NOTICE, cleared, 9_001.0, ROUTE) is Action.NOTHING


def test_a_failure_after_the_alert_said_quiet_posts_a_new_one() -> None:
    group = alerts.add_failure(EMPTY, failure(), 1.0, ROUTE)
    resolved = replace(
        NOTICE, chat="C", message="1.0", posted_at=31.0, notified_count=1, resolved_at=400.0
    )
    grown = alerts.add_failure(group, failure("32470000002"), 500.0, ROUTE)
    assert alerts.next_action(resolved, grown, 530.0, ROUTE) is Action.REPOST


def test_page_above_and_resolve_after_are_set_on_top_and_per_route() -> None:
    document = {
        "destinations": {"oncall": {"console": {}}},
        "alerts": {
            "to": ["oncall"],
            "page_above": 5,
            "routes": [
                {"match": {"sender": ["Clinic"]}, "page_above": 0, "resolve_after": "1h"},
                {"match": {"sender": ["Shop"]}},
            ],
        },
    }
    config = build(document, "test config", {})
    assert config.alerts is not None
    clinic, shop, top = config.alerts.routes
    assert (clinic.page_above, alerts.resolve_after(clinic)) == (0, 3600.0)
    assert (shop.page_above, alerts.resolve_after(shop)) == (5, 300.0)
    assert (top.page_above, alerts.resolve_after(top)) == (5, 300.0)
    default = _config([])
    assert default.alerts is not None and default.alerts.top.page_above == 20


def test_lone_failures_is_set_on_top_and_inherited_or_overridden_per_route() -> None:
    document = {
        "destinations": {"oncall": {"console": {}}},
        "alerts": {
            "to": ["oncall"],
            "lone_failures": "note",
            "routes": [
                {"match": {"sender": ["Clinic"]}, "lone_failures": "post"},
                {"match": {"sender": ["Shop"]}},
            ],
        },
    }
    config = build(document, "test config", {})
    assert config.alerts is not None
    clinic, shop, top = config.alerts.routes
    assert (clinic.lone_failures, shop.lone_failures, top.lone_failures) == ("post", "note", "note")
    assert "lone failures only noted in the customer's thread" in shop.describe()
    assert "lone failures posted without a mention" in clinic.describe()
    default = _config([])
    assert default.alerts is not None and default.alerts.top.lone_failures == "note"


def test_an_account_wide_cause_is_one_group_whoever_sent_while_others_keep_group_by() -> None:
    clinic = failure(sender="Clinic").labels
    agent = failure(sender="32460300000").labels
    assert alerts.group_key(ROUTE, clinic) == alerts.group_key(ROUTE, agent)
    assert alerts.grouped_by(ROUTE, agent) == {"delivery_code_detail": "2000"}
    for detail in ("2004", "2005", "4003", "4004", "4005"):
        one = failure(detail=detail, sender="Clinic").labels
        other = failure(detail=detail, sender="Shop").labels
        assert alerts.group_key(ROUTE, one) == alerts.group_key(ROUTE, other), detail
    phone_off = failure(code="2", detail="11", sender="Clinic").labels
    other_sender = failure(code="2", detail="11", sender="Shop").labels
    assert alerts.group_key(ROUTE, phone_off) != alerts.group_key(ROUTE, other_sender)
    assert alerts.grouped_by(ROUTE, phone_off) == {
        "delivery_code_detail": "11",
        "sender": "Clinic",
    }


def test_an_incident_counts_its_senders_references_and_distinct_texts() -> None:
    group = EMPTY
    for n in range(3):
        reminder = failure(f"3247000000{n}", reference="campaign-reminders", event_id=10 + n)
        group = alerts.add_failure(group, reminder, 1.0 + n, ROUTE)
    answer = failure(sender="32460300000", text="We moved you to 10:00.", event_id=20)
    group = alerts.add_failure(group, answer, 5.0, ROUTE)
    assert group.cause == 2000
    assert group.senders == ["Clinic", "32460300000"]
    assert group.unsent == {"campaign-reminders": 3, "": 1}
    assert sorted(group.samples.values()) == [10, 20]  # one event per distinct text


def test_the_cause_going_away_clears_an_incident_and_nothing_else() -> None:
    funds = alerts.add_failure(EMPTY, failure(), 100.0, ROUTE)
    assert alerts.clears(funds, 200.0, credit_back=True, delivered_from=None)
    assert not alerts.clears(funds, 200.0, credit_back=False, delivered_from=None)
    # a message from one of its senders delivered after the last failure
    assert alerts.clears(funds, 200.0, credit_back=False, delivered_from="Clinic")
    assert not alerts.clears(funds, 100.0, credit_back=False, delivered_from="Clinic")
    assert not alerts.clears(funds, 200.0, credit_back=False, delivered_from="Shop")
    sender = alerts.add_failure(EMPTY, failure(detail="2005"), 100.0, ROUTE)
    assert not alerts.clears(sender, 200.0, credit_back=True, delivered_from=None)
    assert alerts.clears(sender, 200.0, credit_back=False, delivered_from="Clinic")
    lone = alerts.add_failure(EMPTY, failure(code="2", detail="11"), 100.0, ROUTE)
    assert not alerts.clears(lone, 200.0, credit_back=True, delivered_from="Clinic")
    done = replace(funds, cleared_at=150.0)
    assert not alerts.clears(done, 200.0, credit_back=True, delivered_from="Clinic")


def test_a_low_credit_joins_the_open_incident_and_a_resolved_one_starts_afresh() -> None:
    notice = alerts.low_credit(EMPTY, "42.5 EUR", 10.0, ROUTE)
    assert (notice.count, notice.cause, notice.balance) == (0, 2000, "42.5 EUR")
    assert alerts.pages(notice, ROUTE) and alerts.tells_on_call(notice, ROUTE)
    grown = alerts.add_failure(notice, failure(), 20.0, ROUTE)
    assert (grown.count, grown.balance) == (1, "42.5 EUR")  # the same incident
    lower = alerts.low_credit(grown, "12 EUR", 30.0, ROUTE)
    assert (lower.count, lower.balance) == (1, "12 EUR")
    again = alerts.low_credit(replace(lower, cleared_at=40.0), "8 EUR", 50.0, ROUTE)
    assert (again.count, again.balance, again.cleared_at) == (0, "8 EUR", None)
    after = alerts.add_failure(replace(grown, cleared_at=40.0), failure(), 50.0, ROUTE)
    assert (after.count, after.balance, after.cleared_at) == (1, None, None)
