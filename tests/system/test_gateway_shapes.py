"""The shapes a gateway really sends: each variant of a documented event is understood and
applied as its documented twin would be, and no JSON value in any field loses an event."""

from __future__ import annotations

import asyncio
import copy
import io
import json
import time
from collections.abc import Callable, Iterator
from contextlib import AsyncExitStack
from pathlib import Path
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import func, select

from bridge.chat.base import Post
from bridge.chat.console import ConsoleAdapter
from bridge.config import load
from bridge.delivery import render
from bridge.phones import international
from bridge.smstools.webhooks import (
    DeliveryReport,
    InboxMessage,
    ReadReport,
    Unparsed,
    parse_event,
)
from bridge.store.schema import events, webhook_requests
from testkit.fakes.slack import FakeSlack
from testkit.fakes.telegram import FakeTelegram
from testkit.processes import BridgeProcess
from tests.conftest import sample
from tests.support.harness import TOKEN, running_bridge
from tests.support.traffic import CONFIG as SERVE_CONFIG
from tests.support.traffic import FORUM, env_for
from tests.support.traffic import TOKEN as SERVE_TOKEN

CONFIG = load(None, {})
Event = dict[str, Any]
Change = Callable[[Event], None]


def _set(*path: str, value: Any) -> Change:
    def change(event: Event) -> None:
        *parents, last = path
        for key in parents:
            event = event[key]
        event[last] = value

    return change


def _drop(*path: str) -> Change:
    def change(event: Event) -> None:
        *parents, last = path
        for key in parents:
            event = event[key]
        event.pop(last, None)

    return change


# 2019-01-01 00:05:00 in Brussels (the reply sample's time zone), and 00:00, 00:01 there.
FIVE_PAST = 1_546_297_500
MIDNIGHT, MINUTE_PAST = 1_546_297_200, 1_546_297_260

# (name, sample, the variant's change, the documented twin's change)
VARIANTS: list[tuple[str, str, Change, Change]] = [
    ("isreply false", "inbox_message", _set("isreply", value=False), _drop("isreply")),
    ("isreply []", "inbox_message", _set("isreply", value=[]), _drop("isreply")),
    ("isreply null", "inbox_message", _set("isreply", value=None), _drop("isreply")),
    (
        "content null",
        "inbox_message",
        _set("message", "content", value=None),
        _set("message", "content", value=""),
    ),
    (
        "content missing",
        "inbox_message",
        _drop("message", "content"),
        _set("message", "content", value=""),
    ),
    ("id null", "inbox_message", _set("message", "id", value=None), _drop("message", "id")),
    (
        "orig_reference null",
        "inbox_message_whatsapp_reply",
        _set("isreply", "orig_reference", value=None),
        _drop("isreply", "orig_reference"),
    ),
    (
        "date in Unix seconds",
        "inbox_message_whatsapp_reply",
        _set("message", "date", value=FIVE_PAST),
        lambda event: None,
    ),
    (
        "date in Unix seconds as text",
        "inbox_message_whatsapp_reply",
        _set("message", "date", value=str(FIVE_PAST)),
        lambda event: None,
    ),
    (
        "type SMS",
        "inbox_message",
        _set("message", "type", value="SMS"),
        _set("message", "type", value="sms"),
    ),
    (
        "type WhatsApp",
        "inbox_message_whatsapp_reply",
        _set("message", "type", value="WhatsApp"),
        lambda event: None,
    ),
    (
        "integer webhook_id",
        "inbox_message",
        _set("webhook_id", value=9876),
        _set("webhook_id", value="9876"),
    ),
    (
        "reference null",
        "delivery_report_failed",
        _set("message", "reference", value=None),
        _drop("message", "reference"),
    ),
    (
        "datetime in Unix seconds",
        "delivery_report_failed",
        _set("message", "datetime", value=MIDNIGHT),
        lambda event: None,
    ),
    (
        "delivery_code_detail empty",
        "delivery_report_failed",
        _set("message", "delivery_code_detail", value=""),
        _drop("message", "delivery_code_detail"),
    ),
    (
        "delivery_code empty",
        "delivery_report_failed",
        _set("message", "delivery_code", value=""),
        _drop("message", "delivery_code"),
    ),
    (
        "integer webhook_id of a report",
        "delivery_report_failed",
        _set("webhook_id", value=1234),
        _set("webhook_id", value="1234"),
    ),
    (
        "read_datetime in Unix seconds",
        "read_report",
        _set("message", "read_datetime", value=MINUTE_PAST),
        lambda event: None,
    ),
    (
        "datetime null",
        "read_report",
        _set("message", "datetime", value=None),
        _drop("message", "datetime"),
    ),
]


def pair(name: str) -> tuple[Event, Event]:
    """The variant and its documented twin."""
    _, sample_name, change, twin_change = next(v for v in VARIANTS if v[0] == name)
    (variant,) = copy.deepcopy(sample(sample_name))
    twin = copy.deepcopy(variant)
    change(variant)
    twin_change(twin)
    return variant, twin


def shown(event: Event) -> tuple[str, Post]:
    parsed = parse_event(event)
    assert not isinstance(parsed, Unparsed), parsed.problem
    if isinstance(parsed, InboxMessage):
        return parsed.webhook_id, render.inbox_post(parsed, CONFIG)
    if isinstance(parsed, DeliveryReport):
        return parsed.webhook_id, render.failure_note_post(parsed)
    assert isinstance(parsed, ReadReport)
    return parsed.webhook_id, render.read_post(parsed)


@pytest.mark.parametrize("name", [variant[0] for variant in VARIANTS])
def test_each_variant_is_understood_and_shown_as_its_documented_twin(name: str) -> None:
    variant, twin = pair(name)
    assert shown(variant) == shown(twin)


def test_an_empty_message_says_so() -> None:
    variant, _ = pair("content null")
    _, post = shown(variant)
    assert post.body == "(empty message)"


def test_a_date_with_an_offset_is_shown_at_its_own_time() -> None:
    (event,) = sample("delivery_report_failed")
    event["message"]["datetime"] = "2026-12-05T10:00:00+01:00"
    parsed = parse_event(event)
    assert isinstance(parsed, DeliveryReport)
    assert "sent 10:00" in render.failure_note_post(parsed).context


def test_a_short_code_is_shown_as_it_came() -> None:
    (event,) = sample("inbox_message")
    event["message"]["receiver"] = "12345678"
    parsed = parse_event(event)
    assert isinstance(parsed, InboxMessage)
    assert "to 12345678" in render.inbox_post(parsed, CONFIG).context
    assert international("12345678") == "12345678"
    assert international("32470123456") == "+32 470 12 34 56"


@pytest.mark.parametrize(
    ("event", "problem"),
    [
        ({"webhook_type": "inbox_message", "message": {"receiver": "1"}}, "message.sender missing"),
        (
            {"webhook_type": "inbox_message", "message": {"sender": "1", "receiver": None}},
            "message.receiver missing",
        ),
        (
            {"webhook_type": "delivery_report", "message": {"messageid": " "}},
            "message.messageid missing",
        ),
        ({"webhook_type": "read_report", "message": []}, "message: Input should be"),
        ({"webhook_type": None, "message": {}}, "webhook_type missing"),
        ({"webhook_type": "Add_Contact"}, "webhook_type 'add_contact' unknown"),
    ],
)
def test_only_what_makes_an_event_meaningless_leaves_it_not_understood(
    event: Event, problem: str
) -> None:
    parsed = parse_event({"webhook_id": "wh_1", **event})
    assert isinstance(parsed, Unparsed) and parsed.problem.startswith(problem)
    assert parsed.webhook_id == "wh_1"


# Through a real `serve`: each variant is posted (or noted in its thread) as its twin is.

SERVE_VARIANTS = [name for name, sample_name, _, _ in VARIANTS if sample_name != "read_report"]


@pytest.fixture
def fakes() -> Iterator[tuple[FakeSlack, FakeTelegram]]:
    with FakeSlack() as slack, FakeTelegram() as telegram:
        yield slack, telegram


def _customer(kind: str, index: int) -> str:
    return f"32470{1 if kind == 'twin' else 2}{index:05d}"


def _for_customer(event: Event, number: str, index: int, kind: str) -> Event:
    """`event` from (or, for a report, about) customer `number`, with ids of its own."""
    event = copy.deepcopy(event)
    ident = event["webhook_id"]
    suffix = f"{kind}-{index}"
    event["webhook_id"] = (
        10_000_000 + 10 * index + len(kind) if isinstance(ident, int) else f"{ident}-{suffix}"
    )
    message = event["message"]
    if event["webhook_type"] == "inbox_message":
        message["sender"] = number
    else:
        message["receiver"] = number
        message["messageid"] = f"{message['messageid']}-{suffix}"
    return event


def _texts(slack: FakeSlack, telegram: FakeTelegram, number: str) -> list[str]:
    """What the customer's posts and notes say: those whose text, author (Slack) or topic
    (Telegram) names the customer."""
    shown_as = international(number)
    topics = {topic.message_thread_id: topic.name for topic in telegram.topics(FORUM)}
    texts = [
        post.text or ""
        for post in slack.posts("C0SUPPORT")
        if post.params.get("username") == shown_as or number in (post.text or "")
    ]
    texts += [
        message.plain_text or ""
        for message in telegram.messages(FORUM)
        if shown_as in topics.get(message.message_thread_id or 0, "")
    ]
    return [text for text in texts if text]


def _wait(what: Callable[[], bool], timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while not what():
        assert time.monotonic() < deadline, "not shown in time"
        time.sleep(0.1)


@pytest.mark.slow
def test_every_variant_is_posted_as_its_documented_twin_through_serve(
    tmp_path: Path, fakes: tuple[FakeSlack, FakeTelegram], sqlite_url: str
) -> None:
    slack, telegram = fakes
    config = tmp_path / "bridge.yaml"
    config.write_text(SERVE_CONFIG)
    bridge = BridgeProcess(
        ["serve"], env_for(str(config), slack, telegram, sqlite_url), tmp_path / "serve.log"
    ).start()
    url = f"{bridge.url}/webhooks/smstools/{SERVE_TOKEN}"
    try:
        with httpx.Client(timeout=30) as client:

            def post(body: list[Event]) -> dict[str, Any]:
                response = client.post(url, json=body)
                assert response.status_code == 200, response.text
                answer: dict[str, Any] = response.json()
                assert answer == {"received": len(body)}, answer
                return answer

            openers: list[Event] = []
            reports: list[Event] = []
            inbox: list[Event] = []
            (opener,) = sample("inbox_message")
            for index, name in enumerate(SERVE_VARIANTS):
                variant, twin = pair(name)
                for kind, event in (("twin", twin), ("variant", variant)):
                    number = _customer(kind, index)
                    placed = _for_customer(event, number, index, kind)
                    if placed["webhook_type"] == "inbox_message":
                        inbox.append(placed)
                    else:  # a thread for the failure note to land in
                        openers.append(_for_customer(opener, number, index, f"open-{kind}"))
                        reports.append(placed)
            post(openers + inbox)
            _wait(lambda: len(slack.posts()) + len(telegram.messages()) >= len(openers + inbox))
            post(reports)
            notes = sum(
                1
                for name in SERVE_VARIANTS
                if pair(name)[1]["webhook_type"] == "delivery_report"
                and "delivery_code" in pair(name)[1]["message"]
            )
            total = len(openers + inbox) + 2 * notes
            _wait(lambda: len(slack.posts()) + len(telegram.messages()) >= total)
            time.sleep(1)  # nothing more comes
    finally:
        bridge.stop()
    for index, name in enumerate(SERVE_VARIANTS):
        twin_number, variant_number = _customer("twin", index), _customer("variant", index)
        twin_texts = _texts(slack, telegram, twin_number)
        variant_texts = _texts(slack, telegram, variant_number)
        assert twin_texts, name
        renamed = [
            text.replace(international(twin_number), international(variant_number)).replace(
                twin_number, variant_number
            )
            for text in twin_texts
        ]
        assert variant_texts == renamed, name


# For any JSON value in any field of a valid event: never a 5xx, the body kept, the event
# understood or kept as not understood with a reason.

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=80),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4)
    ),
    max_leaves=8,
)

FIELDS: list[tuple[str, tuple[str, ...]]] = [
    (name, path)
    for name in (
        "inbox_message",
        "inbox_message_whatsapp_reply",
        "delivery_report_failed",
        "read_report",
    )
    for (event,) in [sample(name)]
    for path in [
        *((key,) for key in event),
        *(("message", key) for key in event["message"]),
        *(("isreply", key) for key in event.get("isreply", {})),
        ("message", "not_documented"),
    ]
]


def test_any_json_value_in_any_field_is_kept_and_never_a_5xx(database_url: str) -> None:
    loop = asyncio.new_event_loop()
    stack = AsyncExitStack()
    adapters = {"console": ConsoleAdapter("console", io.StringIO())}
    bridge = loop.run_until_complete(
        stack.enter_async_context(running_bridge(database_url, CONFIG, adapters, run_worker=False))
    )
    database = bridge.worker.database
    counter = iter(range(10**9))
    outcomes: set[str] = set()

    async def check(event: Event, replaced_id: bool) -> None:
        raw = json.dumps([event]).encode()
        async with database.transaction() as connection:
            before = await connection.scalar(select(func.coalesce(func.max(events.c.id), 0)))
        response = await bridge.client.post(f"/webhooks/smstools/{TOKEN}", content=raw)
        assert response.status_code < 500, response.text
        if response.status_code != 200:  # refused whole (a 4xx saying why), never half-stored
            return
        assert response.json() == {"received": 1}
        await bridge.plan()
        async with database.transaction() as connection:
            body = (
                await connection.execute(
                    select(webhook_requests.c.body).order_by(webhook_requests.c.id.desc())
                )
            ).first()
            stored = (
                await connection.execute(
                    select(events.c.status, events.c.problem)
                    .where(events.c.id > before)
                    .order_by(events.c.id.desc())
                )
            ).first()
        if stored is None:  # a duplicate: nothing new stored, its body deleted
            assert replaced_id  # only a webhook_id from an earlier example repeats
            return
        assert body is not None and bytes(body[0]) == raw
        status, problem = stored
        if status == "ok":
            assert problem is None
            outcomes.add("accepted")
        else:
            assert status == "unparsed" and problem
            outcomes.add("not_understood")

    @settings(
        max_examples=60,
        derandomize=True,
        deadline=None,
        suppress_health_check=[HealthCheck.too_slow],
        database=None,
    )
    @given(field=st.sampled_from(FIELDS), value=json_values, drop=st.booleans())
    def any_value(field: tuple[str, tuple[str, ...]], value: Any, drop: bool) -> None:
        name, path = field
        (event,) = copy.deepcopy(sample(name))
        event["webhook_id"] = f"wh_fuzz_{next(counter)}"
        target = event
        for key in path[:-1]:
            target = target[key]
        if drop and path[-1] in target:
            del target[path[-1]]
        else:
            target[path[-1]] = value
        loop.run_until_complete(check(event, replaced_id=path == ("webhook_id",)))

    try:
        any_value()
        assert outcomes == {"accepted", "not_understood"}  # the examples reach both
    finally:
        loop.run_until_complete(stack.aclose())
        loop.close()
