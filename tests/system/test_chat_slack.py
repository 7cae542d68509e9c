"""SlackAdapter driven through slack-sdk against the fake Slack Web API."""

from __future__ import annotations

import html
from collections.abc import AsyncIterator, Iterator

import pytest

from bridge.chat.base import MessageGone, Part, Post, Quote, Tone
from bridge.chat.slack import SlackAdapter
from bridge.errors import Permanent, Reason, Retryable
from testkit.fakes import FakeSlack
from testkit.fakes.slack import rich_text

CHANNEL = "C0SUPPORT"


@pytest.fixture(scope="module")
def running_slack() -> Iterator[FakeSlack]:
    with FakeSlack() as fake:
        yield fake


@pytest.fixture
def slack(running_slack: FakeSlack) -> FakeSlack:
    running_slack.reset()
    running_slack.clear()
    return running_slack


@pytest.fixture
async def adapter(slack: FakeSlack) -> AsyncIterator[SlackAdapter]:
    adapter = SlackAdapter("support", "xoxb-test", CHANNEL, base_url=slack.api_url, timeout=2)
    await adapter.start()
    yield adapter
    await adapter.close()


def shown_text(blocks: list[dict[str, object]] | None) -> str:
    """What a reader sees in the message's sections (unescaped) and rich_text, in order."""
    shown = []
    for block in blocks or []:
        if block["type"] == "section":
            shown.append(html.unescape(block["text"]["text"]))  # type: ignore[index]
        elif block["type"] == "rich_text":
            shown.append(rich_text([block]))
    return "".join(shown)


async def post(adapter: SlackAdapter, post: Post, thread: str | None = None) -> list[str]:
    return [(await adapter.send(part, thread)).message for part in adapter.render(post)]


async def test_first_post_starts_a_thread_and_replies_go_under_it(
    adapter: SlackAdapter, slack: FakeSlack
) -> None:
    first = await adapter.send(adapter.render(Post(heading="SMS from +4915100000"))[0], None)
    reply = await adapter.send(adapter.render(Post(heading="reply", body="hi"))[0], first.thread)

    assert first.thread == first.message and first.chat == CHANNEL
    assert reply.thread == first.message
    parent, child = slack.posts(CHANNEL)
    assert parent.thread_ts is None and parent.ts == first.message
    assert child.thread_ts == parent.ts and child.ts == reply.message


async def test_posts_never_unfurl_links_nor_link_names(
    adapter: SlackAdapter, slack: FakeSlack
) -> None:
    await post(adapter, Post(heading="h", body="see https://example.com"))

    (message,) = slack.posts()
    assert message.unfurl_links is False and message.unfurl_media is False
    assert "link_names" not in message.params and "parse" not in message.params


async def test_customer_mention_syntax_is_shown_literally_in_slack(
    adapter: SlackAdapter, slack: FakeSlack
) -> None:
    evil = "<!channel> <!here> <@U1> <!subteam^S1> <https://evil|bank.com> <b> & done"
    await post(adapter, Post(heading=f"SMS {evil}", context=[evil], body=evil))

    (message,) = slack.posts()
    assert message.blocks is not None
    # Where Slack parses markup (mrkdwn heading and context, the text fallback): escaped.
    mrkdwn = [b for b in message.blocks if b["type"] != "rich_text"]
    raw = str(mrkdwn) + (message.text or "")
    for control in ("<!", "<@", "<http", "<b>"):
        assert control not in raw
    assert "&lt;!channel&gt;" in raw and "&amp; done" in raw
    # The customer's words: rich_text `text` elements, never parsed, exact characters.
    assert rich_text(message.blocks) == evil
    assert evil in shown_text(message.blocks)


async def test_direction_overrides_and_invisible_characters_are_removed_in_slack(
    adapter: SlackAdapter, slack: FakeSlack
) -> None:
    body = "invoice_\u202egnp.exe \u2066iso\u2069 zero\u200bwidth\ufeff 👨‍👩‍👧"
    quote = Quote(text="\u202equote", when="\u2067when\u2069")
    await post(adapter, Post(heading="h\u202eeh", context=["\u200bctx"], body=body, quote=quote))

    (message,) = slack.posts()
    raw = str(message.blocks) + (message.text or "")
    assert "invoice_gnp.exe iso zerowidth 👨‍👩‍👧" in shown_text(message.blocks)
    assert not set(raw) & {"\u202e", "\u2066", "\u2067", "\u2069", "\u200b", "\ufeff"}


async def test_customer_text_arrives_as_rich_text_with_exact_characters_and_one_link(
    adapter: SlackAdapter, slack: FakeSlack
) -> None:
    body = "Ship it *now* _please_ ~maybe~ see https://example.com/track?id=5531. <!channel> <b>"
    await post(adapter, Post(heading="+32 470 12 34 56", body=body))

    (message,) = slack.posts()
    assert message.blocks is not None
    (rich,) = [b for b in message.blocks if b["type"] == "rich_text"]
    (section,) = rich["elements"]
    assert section["type"] == "rich_text_section"
    assert [e["type"] for e in section["elements"]] == ["text", "link", "text"]
    before, link, after = section["elements"]
    assert before["text"] == "Ship it *now* _please_ ~maybe~ see "
    assert link["url"] == link["text"] == "https://example.com/track?id=5531"
    assert after["text"] == ". <!channel> <b>"
    assert all("style" not in e for e in section["elements"])
    assert rich_text(message.blocks) == body
    # The fallback keeps the content, escaped for mrkdwn.
    assert message.text is not None and "&lt;!channel&gt; &lt;b&gt;" in message.text


async def test_slack_does_not_auto_parse_names_or_mentions_in_customer_text(
    adapter: SlackAdapter, slack: FakeSlack
) -> None:
    text = "@channel @here #general www.example.com"
    await post(adapter, Post(heading=text, context=[text], body=text))

    (message,) = slack.posts()
    assert message.blocks is not None
    mrkdwn = [block for block in message.blocks if block["type"] != "rich_text"]
    objects = [block["text"] for block in mrkdwn if "text" in block]
    objects += [element for block in mrkdwn for element in block.get("elements", [])]
    assert objects and all(o["type"] == "mrkdwn" and o["verbatim"] is True for o in objects)
    assert rich_text(message.blocks) == text  # no link: `www.` alone is not a URL


async def test_operator_mention_is_kept_as_markup_at_the_front(
    adapter: SlackAdapter, slack: FakeSlack
) -> None:
    await post(adapter, Post(heading="urgent", mention="<!subteam^S0ONCALL>"))

    (message,) = slack.posts()
    assert message.text is not None and message.text.startswith("<!subteam^S0ONCALL> ")
    assert message.blocks is not None
    assert message.blocks[0]["text"]["text"].startswith("<!subteam^S0ONCALL> ")


async def test_heading_context_and_quote_with_its_date_are_shown(
    adapter: SlackAdapter, slack: FakeSlack
) -> None:
    quote = Quote(text="Your order ships\ntomorrow", when="2024-05-01 10:00")
    await post(
        adapter, Post(heading="Reply", context=["+49 151", "WhatsApp"], body="ok", quote=quote)
    )

    (message,) = slack.posts()
    assert message.blocks is not None
    heading, context, quoted, body = message.blocks
    assert heading["text"]["text"] == "*Reply*"
    assert [e["text"] for e in context["elements"]] == ["+49 151", "WhatsApp"]
    quote, dated = quoted["elements"]
    assert quote["type"] == "rich_text_quote"
    assert quote["elements"] == [{"type": "text", "text": "Your order ships\ntomorrow"}]
    assert dated["elements"] == [
        {"type": "text", "text": "2024-05-01 10:00", "style": {"italic": True}}
    ]
    assert rich_text([body]) == "ok"
    quoted_lines = ["> Your order ships", "> tomorrow", "> _2024-05-01 10:00_"]
    assert message.text == "\n".join(["Reply", "+49 151 · WhatsApp", *quoted_lines, "ok"])


async def test_a_later_post_shows_only_its_short_context(
    adapter: SlackAdapter, slack: FakeSlack
) -> None:
    await post(adapter, Post(heading="", context=["SMS · 09:14"], body="and one more thing"))

    (message,) = slack.posts()
    assert message.blocks is not None
    context, body = message.blocks
    assert [e["text"] for e in context["elements"]] == ["SMS · 09:14"]
    assert rich_text([body]) == "and one more thing"
    assert message.text == "SMS · 09:14\nand one more thing"


async def test_customer_posts_show_the_customers_number_only_with_the_customize_scope(
    slack: FakeSlack, caplog: pytest.LogCaptureFixture
) -> None:
    customer = Post(heading="", context=["SMS · 09:14"], body="hi", author="+32 470 12 34 56")
    for scopes, shown_as in (((), None), (("chat:write.customize",), "+32 470 12 34 56")):
        slack.clear()
        slack.set_scopes(["chat:write", "reactions:write", *scopes])
        adapter = SlackAdapter("support", "xoxb-test", CHANNEL, base_url=slack.api_url)
        with caplog.at_level("INFO", logger="bridge.chat.slack"):
            caplog.clear()
            await adapter.start()
            await adapter.start()  # detected once: one log line at most
            await post(adapter, customer)
            await post(adapter, Post(heading="Not delivered", body="bot note"))
        await adapter.close()
        mine, bots = slack.posts()
        assert mine.params.get("username") == shown_as
        assert (mine.params.get("icon_emoji") is not None) is (shown_as is not None)
        assert "username" not in bots.params and "icon_emoji" not in bots.params
        lacking = [r for r in caplog.records if "chat:write.customize" in r.getMessage()]
        assert len(lacking) == (1 if shown_as is None else 0)


async def test_alert_tones_show_red_when_firing_and_green_when_over(
    adapter: SlackAdapter,
) -> None:
    firing = adapter.render(Post(heading="Out of credit", tone=Tone.FIRING))[0]
    over = adapter.render(Post(heading="Quiet since 23:05", tone=Tone.RESOLVED))[0]
    assert firing.text.startswith(":red_circle: Out of credit")
    assert over.text.startswith(":large_green_circle: Quiet since 23:05")


async def test_long_body_is_split_into_sections_without_losing_text(
    adapter: SlackAdapter, slack: FakeSlack
) -> None:
    body = "".join(f"word{i:04d} & <x> " + ("\n" if i % 9 == 0 else "") for i in range(700))
    assert len(body) > 7000

    await post(adapter, Post(heading="long", body=body))

    (message,) = slack.posts()
    assert message.blocks is not None
    pieces = [b for b in message.blocks if b["type"] == "rich_text"]
    assert len(pieces) >= 3
    assert all(len(rich_text([piece])) <= 3000 for piece in pieces)
    assert rich_text(message.blocks) == body
    assert "(1/" not in (message.text or "")  # one message: no part marker


async def test_huge_body_is_spread_over_several_messages_in_order(
    adapter: SlackAdapter, slack: FakeSlack
) -> None:
    body = " ".join(f"w{i:06d}" for i in range(20_000))  # 160,000 characters

    parts = adapter.render(Post(heading="huge", body=body))
    first = await adapter.send(parts[0], None)
    for part in parts[1:]:
        await adapter.send(part, first.thread)

    messages = slack.posts()
    assert len(messages) == len(parts) >= 4
    assert all(m.blocks is not None and len(m.blocks) <= 50 for m in messages)
    assert all(m.thread_ts == first.message for m in messages[1:])
    assert f"(1/{len(parts)})" in (messages[0].text or "")
    assert f"(2/{len(parts)})" in (messages[1].text or "")
    contexts = [b for b in messages[0].blocks or [] if b["type"] == "context"]
    assert f"(1/{len(parts)})" in [e["text"] for b in contexts for e in b["elements"]]
    assert "".join(rich_text(m.blocks) for m in messages) == body


async def test_edit_replaces_the_message_in_place(adapter: SlackAdapter, slack: FakeSlack) -> None:
    sent = await adapter.send(adapter.render(Post(heading="alert", body="1 failing"))[0], None)

    await adapter.edit(sent, adapter.render(Post(heading="alert", body="2 failing"))[0])

    (edit,) = slack.edits(CHANNEL)
    assert edit.ts == sent.message and "2 failing" in shown_text(edit.blocks)


async def test_react_adds_a_reaction_and_repeating_it_is_fine(
    adapter: SlackAdapter, slack: FakeSlack
) -> None:
    sent = await adapter.send(Part(text="delivered"), None)

    await adapter.react(sent, "✅")
    await adapter.react(sent, "✅")

    (reaction,) = slack.reactions(CHANNEL)
    assert (reaction.ts, reaction.name) == (sent.message, "white_check_mark")


async def test_rate_limit_is_retryable_with_slacks_retry_after(
    adapter: SlackAdapter, slack: FakeSlack
) -> None:
    slack.set_rate_limited(CHANNEL, retry_after=7)

    with pytest.raises(Retryable) as caught:
        await adapter.send(Part(text="x"), None)

    assert caught.value.reason is Reason.RATE_LIMITED and caught.value.retry_after == 7
    assert len(slack.calls("chat.postMessage")) == 1  # no hidden SDK retry


async def test_rate_limited_once_then_accepted(adapter: SlackAdapter, slack: FakeSlack) -> None:
    slack.set_rate_limited(CHANNEL, retry_after=1, times=1)

    with pytest.raises(Retryable):
        await adapter.send(Part(text="x"), None)
    await adapter.send(Part(text="x"), None)

    assert len(slack.posts()) == 1


async def test_enforced_rate_limit_answers_429_beyond_it(
    adapter: SlackAdapter, slack: FakeSlack
) -> None:
    slack.set_rate_limit(per_second=1)

    await adapter.send(Part(text="first"), None)
    with pytest.raises(Retryable) as caught:
        await adapter.send(Part(text="second"), None)

    assert caught.value.reason is Reason.RATE_LIMITED and caught.value.retry_after == 1


@pytest.mark.parametrize("status", [500, 503])
async def test_slack_outage_is_retryable_server_error(
    adapter: SlackAdapter, slack: FakeSlack, status: int
) -> None:
    slack.set_down(times=1, status=status)

    with pytest.raises(Retryable) as caught:
        await adapter.send(Part(text="x"), None)
    await adapter.send(Part(text="x"), None)

    assert caught.value.reason is Reason.SERVER and str(status) in caught.value.detail


@pytest.mark.parametrize(
    ("error", "reason"),
    [
        ("channel_not_found", Reason.NOT_FOUND),
        ("is_archived", Reason.NOT_FOUND),
        ("not_in_channel", Reason.FORBIDDEN),
        ("token_revoked", Reason.AUTH),
        ("msg_too_long", Reason.BAD_REQUEST),
    ],
)
async def test_channel_problems_are_permanent_and_name_the_destination(
    adapter: SlackAdapter, slack: FakeSlack, error: str, reason: Reason
) -> None:
    slack.set_error(CHANNEL, error)

    with pytest.raises(Permanent) as caught:
        await adapter.send(Part(text="secret customer text"), None)

    assert caught.value.reason is reason
    assert "'support'" in caught.value.detail and CHANNEL in caught.value.detail
    assert error in caught.value.detail and "secret" not in caught.value.detail


async def test_service_unavailable_error_string_is_retryable(
    adapter: SlackAdapter, slack: FakeSlack
) -> None:
    slack.set_error(CHANNEL, "service_unavailable")

    with pytest.raises(Retryable) as caught:
        await adapter.send(Part(text="x"), None)

    assert caught.value.reason is Reason.SERVER


async def test_invalid_token_fails_start_as_auth_without_leaking_it(slack: FakeSlack) -> None:
    adapter = SlackAdapter("support", "xoxb-wrong-secret", CHANNEL, base_url=slack.api_url)
    try:
        with pytest.raises(Permanent) as caught:
            await adapter.start()
    finally:
        await adapter.close()

    assert caught.value.reason is Reason.AUTH and "invalid_auth" in caught.value.detail
    assert "xoxb-wrong-secret" not in str(caught.value)


async def test_slow_slack_is_a_retryable_timeout(slack: FakeSlack) -> None:
    slack.set_slow(2.0, CHANNEL)
    adapter = SlackAdapter("support", "xoxb-test", CHANNEL, base_url=slack.api_url, timeout=0.3)
    try:
        with pytest.raises(Retryable) as caught:
            await adapter.send(Part(text="x"), None)
    finally:
        await adapter.close()

    assert caught.value.reason is Reason.TIMEOUT


async def test_unreachable_slack_is_a_retryable_connection_error() -> None:
    adapter = SlackAdapter("support", "xoxb-test", CHANNEL, base_url="http://127.0.0.1:9/api/")
    try:
        with pytest.raises(Retryable) as caught:
            await adapter.send(Part(text="x"), None)
    finally:
        await adapter.close()

    assert caught.value.reason is Reason.CONNECTION


async def test_refuse_all_makes_start_retryable(slack: FakeSlack) -> None:
    slack.refuse_all()
    adapter = SlackAdapter("support", "xoxb-test", CHANNEL, base_url=slack.api_url)
    try:
        with pytest.raises(Retryable) as caught:
            await adapter.start()
    finally:
        await adapter.close()

    assert caught.value.reason is Reason.SERVER


async def test_editing_a_deleted_message_says_the_message_is_gone(
    adapter: SlackAdapter, slack: FakeSlack
) -> None:
    sent = await adapter.send(adapter.render(Post(heading="alert", body="1 failing"))[0], None)
    slack.clear()  # the fake forgets the message, as Slack does once it is deleted

    with pytest.raises(MessageGone) as caught:
        await adapter.edit(sent, adapter.render(Post(heading="alert", body="2 failing"))[0])
    assert caught.value.reason is Reason.NOT_FOUND
