"""TelegramAdapter driven through python-telegram-bot against the fake Bot API."""

from __future__ import annotations

import asyncio
import os
import re
import warnings
from collections.abc import AsyncIterator, Iterator

import pytest

from bridge.chat.base import (
    ChatMoved,
    MessageGone,
    Part,
    Post,
    Quote,
    Sent,
    ThreadClosed,
    ThreadGone,
)
from bridge.chat.telegram import WORD_JOINER, TelegramAdapter, utf16_length
from bridge.errors import Permanent, Reason, Retryable
from testkit.fakes import FakeTelegram
from testkit.fakes.telegram import HtmlEntityError, auto_entities, parse_html

FORUM = -1001234567890  # a forum supergroup: conversations are topics
GROUP = -4000000001  # a basic group: conversations are reply chains


@pytest.fixture(scope="module")
def running_telegram() -> Iterator[FakeTelegram]:
    with FakeTelegram() as fake:
        yield fake


@pytest.fixture
def telegram(running_telegram: FakeTelegram) -> FakeTelegram:
    running_telegram.reset()
    running_telegram.clear()
    return running_telegram


def make_adapter(
    telegram: FakeTelegram,
    chat_id: int = FORUM,
    *,
    topics: bool = True,
    token: str = FakeTelegram.TOKEN,
    timeout: float = 2.0,
) -> TelegramAdapter:
    return TelegramAdapter(
        "ops", token, chat_id, topics=topics, api_url=telegram.url, timeout=timeout
    )


@pytest.fixture
async def forum(telegram: FakeTelegram) -> AsyncIterator[TelegramAdapter]:
    adapter = make_adapter(telegram)
    await adapter.start()
    yield adapter
    await adapter.close()


@pytest.fixture
async def group(telegram: FakeTelegram) -> AsyncIterator[TelegramAdapter]:
    adapter = make_adapter(telegram, GROUP, topics=False)
    await adapter.start()
    yield adapter
    await adapter.close()


async def test_each_conversation_gets_its_own_forum_topic(
    forum: TelegramAdapter, telegram: FakeTelegram
) -> None:
    thread = await forum.open_thread("+49 151 0000000 · " + "x" * 200)
    assert thread is not None

    sent = await forum.send(forum.render(Post(heading="SMS"))[0], thread)
    again = await forum.send(forum.render(Post(heading="SMS 2"))[0], sent.thread)

    (topic,) = telegram.topics(FORUM)
    assert len(topic.name) == 128 and str(topic.message_thread_id) == thread
    assert [m.message_thread_id for m in telegram.messages(FORUM)] == [int(thread)] * 2
    assert sent.thread == again.thread == thread and sent.chat == str(FORUM)


async def test_plain_group_threads_are_reply_chains(
    group: TelegramAdapter, telegram: FakeTelegram
) -> None:
    assert await group.open_thread("whatever") is None

    first = await group.send(Part(text="first"), None)
    reply = await group.send(Part(text="second"), first.thread)

    assert first.thread == first.message and reply.thread == first.message
    parent, child = telegram.messages(GROUP)
    assert parent.reply_to_message_id is None and parent.message_thread_id is None
    assert child.reply_to_message_id == int(first.message)


async def test_messages_are_html_without_link_previews(
    group: TelegramAdapter, telegram: FakeTelegram
) -> None:
    await group.send(group.render(Post(heading="h", body="https://example.com"))[0], None)

    (message,) = telegram.messages()
    assert message.parse_mode == "HTML" and message.link_preview_disabled


async def test_customer_html_and_mentions_are_shown_literally_in_telegram(
    group: TelegramAdapter, telegram: FakeTelegram
) -> None:
    evil = '<b>bold</b> <a href="https://evil">bank.com</a> & &amp; <!channel> @all'
    quote = Quote(text=evil, when="<today>")
    await group.send(
        group.render(Post(heading=evil, context=[evil], body=evil, quote=quote))[0], None
    )

    (message,) = telegram.messages()
    shown = message.plain_text.replace(WORD_JOINER, "")
    assert shown.count(evil) == 4 and "<today>" in shown
    assert "<b>bold" not in message.text and "<a href" not in message.text


async def test_customer_mentions_and_commands_become_no_entities_yet_read_the_same(
    group: TelegramAdapter, telegram: FakeTelegram
) -> None:
    text = (
        "@someadmin please /start@helper_bot or /ban (@all) @@x //cmd :@colon :/colon, "
        "see https://x.example/a"
    )
    quote = Quote(text="@quoted /quoted", when="@when")
    await group.send(
        group.render(Post(heading="@heading", context=["/context"], body=text, quote=quote))[0],
        None,
    )

    (message,) = telegram.messages()
    assert [kind for kind, _ in message.entities] == ["url"]  # the link stays a link
    assert message.link_preview_disabled
    shown = message.plain_text.replace(WORD_JOINER, "")
    for words in (text, "@quoted /quoted", "@when", "@heading", "/context"):
        assert words in shown


def test_the_fake_finds_the_entities_telegram_would() -> None:
    found = auto_entities("@someadmin /start@bot #tag https://x.example/a/b me@mail.example")
    assert found == (
        ("mention", "@someadmin"),
        ("bot_command", "/start@bot"),
        ("hashtag", "#tag"),
        ("url", "https://x.example/a/b"),
    )
    assert auto_entities(f"@{WORD_JOINER}someadmin /{WORD_JOINER}start@bot") == ()


async def test_direction_overrides_and_invisible_characters_are_removed(
    group: TelegramAdapter, forum: TelegramAdapter, telegram: FakeTelegram
) -> None:
    body = "invoice_\u202egnp.exe \u2066iso\u2069 zero\u200bwidth\ufeff 👨‍👩‍👧"
    await group.send(group.render(Post(heading="h\u202eeh", body=body))[0], None)

    assert await forum.open_thread("\u202eCustomer\u200b") is not None
    assert telegram.topics(FORUM)[-1].name == "Customer"
    (message,) = telegram.messages(GROUP)
    assert "invoice_gnp.exe iso zerowidth 👨‍👩‍👧" in message.plain_text
    assert "heh" in message.plain_text
    assert not set(message.plain_text) & {"\u202e", "\u2066", "\u2069", "\u200b", "\ufeff"}


async def test_layout_bold_heading_italic_context_and_dated_quote(
    group: TelegramAdapter,
) -> None:
    quote = Quote(text="Your order ships", when="2024-05-01 10:00")
    post = Post(
        heading="Reply", context=["+49 151", "SMS"], body="ok", quote=quote, mention="@oncall"
    )

    (part,) = group.render(post)

    assert part.text == (
        "@oncall <b>Reply</b>\n<i>+49 151</i> · <i>SMS</i>\n"
        "<blockquote>Your order ships\n<i>2024-05-01 10:00</i></blockquote>\nok"
    )


async def test_long_body_is_split_into_accepted_parts_without_losing_text(
    forum: TelegramAdapter, telegram: FakeTelegram
) -> None:
    body = "".join(f"w{i:04d}<&>😀 " + ("\n" if i % 13 == 0 else "") for i in range(1100))
    assert len(body) > 10_000
    thread = await forum.open_thread("long")

    parts = forum.render(Post(heading="long", body=body, quote=Quote("q " * 300, "today")))
    for part in parts:
        await forum.send(part, thread)  # the fake refuses bad HTML and texts over 4096

    messages = telegram.messages(FORUM)
    assert len(messages) == len(parts) >= 3
    assert all(utf16_length(m.plain_text) <= 4096 for m in messages)
    assert messages[0].plain_text.endswith(f"\n(1/{len(parts)})")  # it says it continues
    assert messages[1].plain_text.startswith(f"(2/{len(parts)})\n")
    shown = " ".join(m.plain_text for m in messages)
    assert re.findall(r"w\d{4}<&>😀", shown) == re.findall(r"w\d{4}<&>😀", body)
    assert shown.count("q ") == 300


async def test_edit_replaces_the_text_and_an_unchanged_edit_is_fine(
    group: TelegramAdapter, telegram: FakeTelegram
) -> None:
    sent = await group.send(Part(text="1 failing"), None)

    await group.edit(sent, Part(text="<b>2</b> failing"))
    await group.edit(sent, Part(text="<b>2</b> failing"))

    (edit,) = telegram.edits(GROUP)
    assert (edit.message_id, edit.plain_text) == (int(sent.message), "2 failing")


async def test_react_sets_a_reaction(group: TelegramAdapter, telegram: FakeTelegram) -> None:
    sent = await group.send(Part(text="delivered"), None)

    await group.react(sent, "👍")

    (reaction,) = telegram.reactions(GROUP)
    assert (reaction.message_id, reaction.emoji) == (int(sent.message), ("👍",))


async def test_flood_control_is_retryable_with_telegrams_retry_after(
    group: TelegramAdapter, telegram: FakeTelegram
) -> None:
    telegram.set_rate_limited(GROUP, retry_after=13, times=1)

    with pytest.raises(Retryable) as caught:
        await group.send(Part(text="x"), None)
    await group.send(Part(text="x"), None)

    assert caught.value.reason is Reason.RATE_LIMITED and caught.value.retry_after == 13
    assert len(telegram.messages()) == 1


async def test_enforced_per_chat_limit_answers_429(
    group: TelegramAdapter, telegram: FakeTelegram
) -> None:
    telegram.set_rate_limit(per_chat_per_second=1)

    await group.send(Part(text="first"), None)
    with pytest.raises(Retryable) as caught:
        await group.send(Part(text="second"), None)

    assert caught.value.reason is Reason.RATE_LIMITED and caught.value.retry_after == 1


async def test_enforced_per_group_minute_limit_answers_429(
    group: TelegramAdapter, telegram: FakeTelegram
) -> None:
    telegram.set_rate_limit(per_group_per_minute=2)

    await group.send(Part(text="1"), None)
    await group.send(Part(text="2"), None)
    with pytest.raises(Retryable) as caught:
        await group.send(Part(text="3"), None)

    assert caught.value.retry_after is not None and 1 <= caught.value.retry_after <= 61


@pytest.mark.parametrize("status", [500, 502])
async def test_bot_api_outage_is_retryable_server_error(
    group: TelegramAdapter, telegram: FakeTelegram, status: int
) -> None:
    telegram.set_down(times=1, status=status)

    with pytest.raises(Retryable) as caught:
        await group.send(Part(text="x"), None)
    await group.send(Part(text="x"), None)

    assert caught.value.reason is Reason.SERVER and str(status) in caught.value.detail


async def test_chat_not_found_is_permanent_and_names_the_destination(
    group: TelegramAdapter, telegram: FakeTelegram
) -> None:
    telegram.set_chat_not_found(GROUP)

    with pytest.raises(Permanent) as caught:
        await group.send(Part(text="secret customer text"), None)

    assert caught.value.reason is Reason.NOT_FOUND
    assert "'ops'" in caught.value.detail and str(GROUP) in caught.value.detail
    assert "secret" not in caught.value.detail


async def test_kicked_bot_is_permanent_forbidden(
    group: TelegramAdapter, telegram: FakeTelegram
) -> None:
    telegram.set_forbidden(GROUP)

    with pytest.raises(Permanent) as caught:
        await group.send(Part(text="x"), None)

    assert caught.value.reason is Reason.FORBIDDEN and "kicked" in caught.value.detail


async def test_a_migrated_group_is_followed_to_its_supergroup(
    group: TelegramAdapter, telegram: FakeTelegram
) -> None:
    first = await group.send(Part(text="before"), None)
    telegram.set_migrated(GROUP, -1009876543210)

    with pytest.raises(ChatMoved) as caught:
        await group.send(Part(text="secret customer text"), None)
    after = await group.send(Part(text="after"), None)
    await group.react(first, "👀")  # the old message stayed behind: nothing to mark
    with pytest.raises(MessageGone, match="message to edit not found"):  # posted anew
        await group.edit(first, Part(text="edited"))

    moved = caught.value
    assert (moved.old_chat, moved.new_chat) == (str(GROUP), "-1009876543210")
    assert moved.reason is Reason.MOVED and moved.retry_after == 0
    assert "set chat_id to -1009876543210 in the config" in moved.detail.lower()
    assert "secret" not in moved.detail
    assert group.chat_id == -1009876543210 and after.chat == "-1009876543210"
    assert [m.plain_text for m in telegram.messages(-1009876543210)] == ["after"]
    assert telegram.reactions() == []


async def test_sends_in_flight_when_the_group_moved_all_name_the_old_and_new_chat(
    group: TelegramAdapter, telegram: FakeTelegram
) -> None:
    telegram.set_migrated(GROUP, -1009876543210)

    outcomes = await asyncio.gather(
        *(group.send(Part(text=f"x{n}"), None) for n in range(3)), return_exceptions=True
    )

    assert all(isinstance(moved, ChatMoved) for moved in outcomes)
    assert {(m.old_chat, m.new_chat) for m in outcomes if isinstance(m, ChatMoved)} == {
        (str(GROUP), "-1009876543210")
    }
    assert group.chat_id == -1009876543210


async def test_a_closed_topic_is_reopened_and_the_message_sent(
    forum: TelegramAdapter, telegram: FakeTelegram
) -> None:
    thread = await forum.open_thread("customer")
    assert thread is not None
    telegram.close_topic(FORUM, int(thread))

    sent = await forum.send(Part(text="still here"), thread)

    (reopened,) = telegram.calls("reopenForumTopic")
    assert reopened.status == 200 and sent.thread == thread
    (message,) = telegram.messages(FORUM)
    assert message.message_thread_id == int(thread) and message.plain_text == "still here"


async def test_a_closed_topic_the_bot_may_not_reopen_is_thread_closed(
    forum: TelegramAdapter, telegram: FakeTelegram
) -> None:
    thread = await forum.open_thread("customer")
    assert thread is not None
    telegram.close_topic(FORUM, int(thread))
    telegram.fail_method("reopenForumTopic", 400, "Bad Request: not enough rights to manage topics")

    with pytest.raises(ThreadClosed) as caught:
        await forum.send(Part(text="x"), thread)

    assert f"topic {thread} is closed and the bot may not reopen it" in caught.value.detail
    assert "not enough rights" in caught.value.detail.lower()
    assert telegram.messages(FORUM) == []


async def test_deleted_topic_raises_thread_gone(
    forum: TelegramAdapter, telegram: FakeTelegram
) -> None:
    thread = await forum.open_thread("soon gone")
    assert thread is not None
    telegram.delete_topic(FORUM, int(thread))

    with pytest.raises(ThreadGone):
        await forum.send(Part(text="x"), thread)


async def test_html_the_fake_would_refuse_is_a_permanent_bad_request(
    group: TelegramAdapter,
) -> None:
    with pytest.raises(Permanent) as caught:
        await group.send(Part(text="<script>x</script>"), None)

    assert caught.value.reason is Reason.BAD_REQUEST
    assert "can't parse entities" in caught.value.detail.lower()


async def test_rejected_token_fails_start_as_auth_without_leaking_it(
    telegram: FakeTelegram,
) -> None:
    adapter = make_adapter(telegram, token="999:wrong-secret")
    try:
        with pytest.raises(Permanent) as caught:
            await adapter.start()
    finally:
        await adapter.close()

    assert caught.value.reason is Reason.AUTH and "wrong-secret" not in str(caught.value)


async def test_slow_bot_api_is_a_retryable_timeout(telegram: FakeTelegram) -> None:
    # Timeouts well apart: getMe at start must not be the call that times out on a busy machine.
    adapter = make_adapter(telegram, GROUP, topics=False, timeout=1.5)
    await adapter.start()
    telegram.set_slow(6.0, GROUP)
    try:
        with pytest.raises(Retryable) as caught:
            await adapter.send(Part(text="x"), None)
    finally:
        await adapter.close()

    assert caught.value.reason is Reason.TIMEOUT


async def test_unreachable_bot_api_is_a_retryable_connection_error() -> None:
    unreachable = "http://127.0.0.1:9"
    adapter = TelegramAdapter("ops", FakeTelegram.TOKEN, GROUP, topics=False, api_url=unreachable)
    try:
        with pytest.raises(Retryable) as caught:
            await adapter.start()
    finally:
        await adapter.close()

    assert caught.value.reason is Reason.CONNECTION


@pytest.mark.parametrize(
    "text",
    ["<b>a</i>", "<b>open", "a < b", "a > b", "fish & chips", "&nbsp;", '<span class="x">s</span>'],
)
def test_fake_refuses_html_telegram_refuses(text: str) -> None:
    with pytest.raises(HtmlEntityError):
        parse_html(text)


def test_fake_parses_html_telegram_accepts() -> None:
    text = (
        '<b>b</b><i>i</i><u>u</u><s>s</s><a href="https://x">a</a><code>c</code>'
        '<pre><code class="language-py">p</code></pre><blockquote>q</blockquote>'
        '<span class="tg-spoiler">sp</span><tg-spoiler>t</tg-spoiler> &lt;&gt;&amp;&quot;&#65;'
    )
    assert parse_html(text) == 'biusacpqspt <>&"A'


async def test_editing_a_deleted_message_says_the_message_is_gone(group: TelegramAdapter) -> None:
    with pytest.raises(MessageGone) as caught:
        await group.edit(Sent(str(GROUP), "999999", "999999"), Part(text="2 failing"))
    assert caught.value.reason is Reason.NOT_FOUND


async def test_flood_control_is_read_without_a_warning_or_a_process_wide_switch(
    group: TelegramAdapter, telegram: FakeTelegram
) -> None:
    telegram.set_rate_limited(GROUP, retry_after=3, times=1)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with pytest.raises(Retryable) as caught:
            await group.send(Part(text="x"), None)
    assert caught.value.retry_after == 3
    assert "PTB_TIMEDELTA" not in os.environ


async def test_a_short_post_has_no_part_marker_and_a_later_post_no_heading(
    forum: TelegramAdapter,
) -> None:
    (single,) = forum.render(Post(heading="+32 470 12 34 56", context=["SMS"], body="hi"))
    assert "(1/" not in single.text
    (later,) = forum.render(Post(heading="", context=["SMS · 09:14"], body="more"))
    assert later.text == "<i>SMS · 09:14</i>\nmore"
