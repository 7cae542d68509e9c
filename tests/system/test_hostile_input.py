"""Hostile and broken input at the HTTP edge: the bridge never answers 5xx, never loses a
well-formed event, and never posts customer markup unescaped. Payloads come from hypothesis."""

from __future__ import annotations

import html
import io
import json
import re
import uuid
from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import func, select

from bridge.chat.console import ConsoleAdapter
from bridge.chat.telegram import WORD_JOINER
from bridge.chat.text import neutralise
from bridge.config import load
from bridge.http.edge import MAX_BODY
from bridge.store.schema import events, outbox, webhook_requests
from testkit.fakes.slack import FakeSlack
from testkit.fakes.telegram import FakeTelegram
from tests.support.harness import TOKEN, RunningBridge, running_bridge
from tests.support.pipeline_fixtures import FORUM, adapters, inbox, make_config, rows

URL = f"/webhooks/smstools/{TOKEN}"
# Direction overrides and isolates, and the invisible characters that hide word boundaries.
MISLEADING = re.compile("[\u202a-\u202e\u2066-\u2069\u200b\u2060-\u2064\ufeff\u180e]")
EXAMPLES = settings(
    max_examples=50,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)

# Text a customer may send: markup of both platforms, direction and zero-width marks, emoji,
# NUL and other control characters, and anything else unicode allows.
HOSTILE_PIECES = [
    "<!channel>",
    "<!here|here>",
    "<@U0ADMIN>",
    "<#C0SECRET>",
    "<https://evil.example|bank.com>",
    "<mailto:x@evil.example|mail>",
    "<b>",
    "</b>",
    "<a href='https://evil.example'>click</a>",
    "<tg-spoiler>",
    "<blockquote>",
    "&amp;",
    "&lt;",
    "&",
    "<",
    ">",
    "*bold* _it_ ~s~ `code`",
    "\u202eRTL override\u202c",
    "\u2066isolate\u2069",
    "\u200b\u200c\u200d\ufeff\u2060",
    "@someadmin",
    "/start@some_bot",
    "(@all)",
    "שלום مرحبا",
    "😀👍🏽👨‍👩‍👧",
    "\x00",
    "\x1b[31m",
    "\r\n",
]
customer_text = st.lists(
    st.one_of(st.sampled_from(HOSTILE_PIECES), st.text(max_size=20)), max_size=12
).map("".join)

json_scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.integers(min_value=10**30, max_value=10**300),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=30),
    customer_text,
)
json_values = st.recursive(
    json_scalars,
    lambda children: st.one_of(
        st.lists(children, max_size=5),
        st.dictionaries(st.text(max_size=10), children, max_size=5),
    ),
    max_leaves=30,
)


@st.composite
def inbox_events(draw: st.DrawFn) -> dict[str, Any]:
    """A well-formed inbox_message with hostile content and arbitrary extra fields."""
    message: dict[str, Any] = {
        "id": draw(st.one_of(st.text(max_size=20), st.integers(0, 10**12))),
        "date": draw(st.sampled_from(["2026-11-26 10:00:00", "", "yesterday", "2026-13-45"])),
        "sender": draw(
            st.one_of(
                st.from_regex(r"\A32470[0-9]{6}\Z"),
                st.integers(32470000000, 32479999999),
                st.from_regex(r"\A[A-Za-z][A-Za-z0-9 ]{0,10}\Z"),
            )
        ),
        "receiver": draw(st.sampled_from(["32460200000", 32460300000, "32460300001"])),
        "content": draw(customer_text),
        "type": draw(st.sampled_from(["sms", "whatsapp"])),
    }
    message.update(draw(st.dictionaries(st.sampled_from(["extra", "price", "x"]), json_values)))
    event = {
        "webhook_id": f"wh_{uuid.uuid4()}",
        "webhook_type": "inbox_message",
        "username": draw(st.text(max_size=20)),
        "timezone": draw(st.sampled_from(["Europe/Brussels", "", "Mars/Olympus", "\x00"])),
        "message": message,
    }
    if draw(st.booleans()):
        event["isreply"] = {"reply": True, "orig_message_content": draw(customer_text)}
    return event


junk_items = st.one_of(
    json_values,
    st.fixed_dictionaries(
        {"webhook_id": st.text(max_size=250), "webhook_type": json_values, "message": json_values}
    ),
)


def idle_edge(database_url: str) -> AbstractAsyncContextManager[RunningBridge]:
    """A bridge posting to the console, its worker idle: only the edge is tested."""
    console = {"console": ConsoleAdapter("console", io.StringIO())}
    return running_bridge(database_url, load(None, {}), console, run_worker=False)


@pytest.fixture
async def edge(sqlite_url: str) -> AsyncIterator[RunningBridge]:
    """One bridge for all of a test's examples."""
    async with idle_edge(sqlite_url) as bridge:
        yield bridge


@pytest.fixture
async def edge_on_each_database(database_url: str) -> AsyncIterator[RunningBridge]:
    async with idle_edge(database_url) as bridge:
        yield bridge


async def count(database_url: str, table: Any, *where: Any) -> int:
    query = select(func.count()).select_from(table).where(*where)
    return int((await rows(database_url, query))[0][0])


@pytest.fixture
async def chat_edge(
    sqlite_url: str, slack: FakeSlack, telegram: FakeTelegram
) -> AsyncIterator[RunningBridge]:
    """One bridge posting to the fake Slack and Telegram, drained by hand."""
    async with running_bridge(
        sqlite_url, make_config(), adapters(slack, telegram), run_worker=False
    ) as bridge:
        yield bridge


# -- never 5xx ------------------------------------------------------------------------------


@EXAMPLES
@given(
    body=st.one_of(
        st.binary(max_size=3000),
        json_values.map(lambda value: json.dumps(value).encode()),
        st.lists(st.one_of(inbox_events(), junk_items), max_size=8).map(
            lambda items: json.dumps(items).encode()
        ),
        st.sampled_from(
            [
                b'[{"webhook_id": "\\ud800", "webhook_type": "\\udfff\\u0000", "message": {}}]',
                b'[{"webhook_id": "a\\u0000b", "webhook_type": "inbox_message"}]',
                b'{"webhook_id": 1e999999, "webhook_type": NaN, "message": -Infinity}',
                b'[{"webhook_id": "' + b"9" * 5000 + b'"}, ' + b"9" * 5000 + b"]",
                b"[" + b"1" * 100_000 + b"]",
                b"\xef\xbb\xbf[]",
                b"\xff\xfe[\x00]\x00",
                b'[{"a": "\xed\xa0\x80"}]',
                b"[" * 50_000,
                b'{"a": ' * 20_000,
            ]
        ),
    )
)
async def test_the_edge_never_answers_5xx_and_the_intake_plans_whatever_the_body(
    edge: RunningBridge, body: bytes
) -> None:
    response = await edge.client.post(URL, content=body)
    assert response.status_code in (200, 400), (response.status_code, response.text)
    assert "error" in response.json() or "received" in response.json()
    await edge.plan()  # and whatever was stored, the intake plans without an error


# -- never loses a well-formed event --------------------------------------------------------


@EXAMPLES
@given(
    wanted=st.lists(inbox_events(), min_size=1, max_size=6),
    junk=st.lists(junk_items, max_size=4),
    order=st.randoms(use_true_random=False),
    resent=st.booleans(),
)
async def test_every_well_formed_event_is_stored_exactly_once(
    edge_on_each_database: RunningBridge,
    database_url: str,
    wanted: list[dict[str, Any]],
    junk: list[Any],
    order: Any,
    resent: bool,
) -> None:
    body = [*wanted, *junk, *(wanted if resent else [])]
    order.shuffle(body)
    response = await edge_on_each_database.post(body)
    if resent:
        again = await edge_on_each_database.post(wanted)
        assert again.status_code == 200 and again.json() == {"received": len(wanted)}
    assert response.status_code == 200, response.text
    await edge_on_each_database.plan()
    ids = [event["webhook_id"] for event in wanted]
    stored = await rows(
        database_url,
        select(events.c.webhook_id, events.c.status, events.c.problem, events.c.payload).where(
            events.c.webhook_id.in_(ids)
        ),
    )
    assert sorted(row.webhook_id for row in stored) == sorted(ids)
    for row in stored:
        assert row.status == "ok", row.problem
        original = next(event for event in wanted if event["webhook_id"] == row.webhook_id)
        # Kept whole; only NUL, which PostgreSQL TEXT cannot hold, shows as U+FFFD.
        assert json.loads(row.payload) == json.loads(
            json.dumps(original).replace("\\u0000", "\\ufffd")
        )
    planned = select(events.c.id).where(events.c.webhook_id.in_(ids))
    assert await count(database_url, outbox, outbox.c.event_id.in_(planned)) == len(wanted)


# -- never posts unescaped customer markup --------------------------------------------------

SLACK_ENTITY = re.compile(r"&(?!amp;|lt;|gt;)")
TELEGRAM_TAG = re.compile(r"</?([a-zA-Z-]+)[^>]*>")


def slack_texts(text: str | None, blocks: list[dict[str, Any]] | None) -> list[str]:
    """The texts Slack parses as mrkdwn: the fallback, sections and context elements."""
    texts = [text or ""]
    for block in blocks or []:
        if block["type"] == "rich_text":
            continue  # never parsed: checked by `rich_children`
        if "text" in block:
            texts.append(block["text"]["text"])
        texts.extend(element["text"] for element in block.get("elements", []))
    return texts


def rich_children(blocks: list[dict[str, Any]] | None) -> list[dict[str, Any]]:
    return [
        child
        for block in blocks or []
        if block["type"] == "rich_text"
        for element in block["elements"]
        for child in element["elements"]
    ]


@settings(
    max_examples=30,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(content=customer_text, quoted=customer_text, sender=st.sampled_from(["<!here>", "a&b"]))
async def test_customer_markup_never_reaches_slack_or_telegram_unescaped(
    chat_edge: RunningBridge,
    sqlite_url: str,
    slack: FakeSlack,
    telegram: FakeTelegram,
    content: str,
    quoted: str,
    sender: str,
) -> None:
    slack.clear()
    telegram.clear()

    def event(kind: str, reply: bool) -> dict[str, Any]:
        found = {
            "webhook_id": f"wh_{uuid.uuid4()}",
            "webhook_type": "inbox_message",
            "message": {
                "sender": "32470111222" if reply else sender,
                "receiver": "32460200000",
                "content": content,
                "type": kind,
            },
        }
        if reply:
            found["isreply"] = {"orig_message_content": quoted, "orig_messagedate": "<b>"}
        return found

    body = [event(kind, reply) for kind in ("sms", "whatsapp") for reply in (False, True)]
    assert (await chat_edge.post(body)).json() == {"received": 4}
    await chat_edge.worker.drain()
    assert await count(sqlite_url, outbox, outbox.c.status != "done") == 0
    content = content.replace("\x00", "\ufffd")  # as stored (PostgreSQL TEXT has no NUL)

    posts = slack.posts("C0SUPPORT")
    assert len(posts) >= 2
    for post in posts:
        for text in slack_texts(post.text, post.blocks):
            assert "<" not in text, text  # no mention, channel, link or special command
            assert not SLACK_ENTITY.search(text), text
        for child in rich_children(post.blocks):  # shown as written: text, or a plain link
            assert child["type"] == "text" or (
                child["type"] == "link" and child["url"].startswith(("http://", "https://"))
            ), child
    shown = "\n".join(html.unescape(post.text or "") for post in posts)
    assert not MISLEADING.search(shown)  # no direction override or invisible character
    visible = neutralise(content)
    assert visible.strip() in shown or not visible.strip()
    exact = ["".join(c.get("text") or c["url"] for c in rich_children(p.blocks)) for p in posts]
    assert not any(MISLEADING.search(words) for words in exact)
    assert any(visible in words for words in exact) or not visible.strip()

    messages = telegram.messages(FORUM)
    assert len(messages) >= 2
    for message in messages:
        assert {tag.lower() for tag in TELEGRAM_TAG.findall(message.text)} <= {
            "b",
            "i",
            "blockquote",
        }
        kinds = {kind for kind, _ in message.entities}
        assert not kinds & {"mention", "bot_command"}, message.entities
        assert not MISLEADING.search(message.plain_text.replace(WORD_JOINER, ""))
    plain = "\n".join(message.plain_text.replace(WORD_JOINER, "") for message in messages)
    pieces = neutralise(content).split("\n")
    assert all(piece in plain for piece in pieces if piece.strip())


async def test_misleading_characters_are_dropped_in_chat_but_stored_as_received(
    chat_edge: RunningBridge, sqlite_url: str, slack: FakeSlack, telegram: FakeTelegram
) -> None:
    content = "pay \u202eGBP 100\u202c to \u200bbank\u2066x\u2069, @someadmin /start 👨‍👩‍👧"
    shown = "pay GBP 100 to bankx, @someadmin /start 👨‍👩‍👧"  # the family emoji keeps its ZWJs
    body = [inbox("32470111333", content), inbox("32470111333", content, kind="whatsapp")]
    assert (await chat_edge.post(body)).json() == {"received": 2}
    await chat_edge.worker.drain()
    (post,) = slack.posts("C0SUPPORT")
    (message,) = telegram.messages(FORUM)
    stored = [payload for (payload,) in await rows(sqlite_url, select(events.c.payload))]
    assert post.text is not None and shown in html.unescape(post.text)
    assert shown in message.plain_text.replace(WORD_JOINER, "")
    assert "@\u2060someadmin /\u2060start" in message.plain_text
    assert [kind for kind, _ in message.entities] == []  # no mention, no command
    assert all(json.loads(payload)["message"]["content"] == content for payload in stored)


# -- the limits -----------------------------------------------------------------------------


async def test_a_10_mb_body_gets_413_without_being_read(
    edge: RunningBridge, sqlite_url: str
) -> None:
    chunk = b" " * 65536
    read = {"streamed": 0, "declared": 0}

    def body(key: str) -> Any:
        async def chunks() -> AsyncIterator[bytes]:
            for _ in range(10 * 1024 * 1024 // len(chunk)):
                read[key] += len(chunk)
                yield chunk

        return chunks()

    streamed = await edge.client.post(URL, content=body("streamed"))
    declared = await edge.client.post(
        URL, content=body("declared"), headers={"Content-Length": str(10 * 1024 * 1024)}
    )
    assert streamed.status_code == declared.status_code == 413
    assert read["streamed"] <= MAX_BODY + len(chunk)  # stopped at the limit
    assert read["declared"] <= len(chunk)  # refused on the header alone
    assert await count(sqlite_url, webhook_requests) == 0


async def test_thousands_of_events_up_to_the_body_limit_are_all_stored(
    database_url: str,
) -> None:
    body = [
        {
            "webhook_id": f"wh_{n:08d}",
            "webhook_type": "inbox_message",
            "message": {"sender": f"3247{n:07d}", "receiver": "32460200000", "content": "hi"},
        }
        for n in range(7700)
    ]
    encoded = json.dumps(body, separators=(",", ":")).encode()
    assert MAX_BODY - 100_000 < len(encoded) <= MAX_BODY
    async with running_bridge(
        database_url,
        load(None, {}),
        {"console": ConsoleAdapter("console", io.StringIO())},
        run_worker=False,
    ) as bridge:
        response = await bridge.client.post(URL, content=encoded)
        too_big = await bridge.client.post(
            URL, content=encoded[:-1] + b" " * (MAX_BODY - len(encoded) + 1) + b"]"
        )
        await bridge.plan()
    assert response.status_code == 200 and response.json() == {"received": 7700}
    assert too_big.status_code == 413
    assert await count(database_url, events) == 7700


async def test_nul_and_lone_surrogates_anywhere_are_stored_not_refused(database_url: str) -> None:
    """PostgreSQL TEXT refuses NUL and SQLite refuses lone surrogates: neither may cost an event."""
    nasty = ["a\x00b", "\ud800", "x\udfffy"]
    body = [
        {
            "webhook_id": f"wh_nul_{n}",
            "webhook_type": "inbox_message",
            "message": {
                "sender": "32470123456",
                "receiver": "32460200000",
                "content": text,
                "id": text,
                "date": text,
            },
            "timezone": text,
            "username": text,
        }
        for n, text in enumerate(nasty)
    ]
    body += [{"webhook_id": text, "webhook_type": "inbox_message", "message": {}} for text in nasty]
    body += [{"webhook_id": f"wh_type_{n}", "webhook_type": text} for n, text in enumerate(nasty)]
    body += [
        {
            "webhook_id": f"wh_sender_{n}",
            "webhook_type": "inbox_message",
            "message": {"sender": f"3247{text}", "receiver": f"3246{text}", "content": "x"},
        }
        for n, text in enumerate(nasty)
    ]
    encoded = json.dumps(body).encode()  # \u0000 and \ud800 escapes, as JSON allows
    async with running_bridge(
        database_url,
        load(None, {}),
        {"console": ConsoleAdapter("console", io.StringIO())},
        run_worker=False,
    ) as bridge:
        response = await bridge.client.post(URL, content=encoded)
        await bridge.plan()
    assert response.status_code == 200, response.text
    assert await count(database_url, events) == len(body)
    # Understood: the three with nasty content and the three with nasty numbers (an
    # alphanumeric sender is allowed); the rest are kept as not understood.
    assert await count(database_url, events, events.c.status == "ok") == 6


async def test_huge_numbers_are_stored_not_refused(edge: RunningBridge, sqlite_url: str) -> None:
    huge = b"9" * 5000  # past Python's 4300-digit int limit
    body = (
        b'[{"webhook_id": "wh_big", "webhook_type": "inbox_message", "message": '
        b'{"sender": "32470123456", "receiver": "32460200000", "content": "x", "price": '
        + huge
        + b', "tiny": 1e-999999, "vast": -1e999999}}]'
    )
    response = await edge.client.post(URL, content=body)
    await edge.plan()
    assert response.status_code == 200 and response.json() == {"received": 1}
    assert await count(sqlite_url, events, events.c.webhook_id == "wh_big") == 1


async def test_bodies_that_are_not_events_get_400_and_nothing_stored(
    edge: RunningBridge, sqlite_url: str
) -> None:
    answers = [
        await edge.client.post(URL, content=body)
        for body in (
            b"\xff\xfe\xfd",
            b'[{"webhook_id": "a\x00b"}]',  # a raw NUL byte is not allowed inside JSON text
            b"[" * 100_000,
            b"true",
            b"   ",
        )
    ]
    assert [answer.status_code for answer in answers] == [400] * 5
    assert await count(sqlite_url, webhook_requests) == 0


async def test_a_wrong_or_missing_token_gets_404(edge: RunningBridge, sqlite_url: str) -> None:
    body = b"[]"
    answers = [
        await edge.client.post("/webhooks/smstools/", content=body),
        await edge.client.post("/webhooks/smstools", content=body),
        await edge.client.post(f"/webhooks/smstools/{TOKEN[:-1]}", content=body),
        await edge.client.post(f"/webhooks/smstools/{TOKEN}x", content=body),
        await edge.client.post(f"/webhooks/smstools/{TOKEN.upper()}", content=body),
        await edge.client.post("/webhooks/smstools/%00", content=body),
        await edge.client.post("/webhooks/smstools/é", content=body),
    ]
    assert [answer.status_code for answer in answers] == [404] * len(answers)
    assert await count(sqlite_url, webhook_requests) == 0
