"""ConsoleAdapter: readable blocks on a stream, customer text unable to drive the terminal."""

from __future__ import annotations

import io

import pytest

from bridge.chat.base import Part, Post, Quote, Sent
from bridge.chat.console import ConsoleAdapter, sanitize


async def test_new_and_continued_threads_are_labelled_with_counters() -> None:
    out = io.StringIO()
    console = ConsoleAdapter("log", out)
    assert await console.open_thread("ignored") is None

    first = await console.send(Part(text="one"), None)
    second = await console.send(Part(text="two"), first.thread)

    assert (first.message, first.thread) == ("1", "1")
    assert (second.message, second.thread) == ("2", "1")
    assert out.getvalue() == "── log · new thread #1 ──\none\n\n── log · thread #1 ──\ntwo\n\n"


async def test_post_is_rendered_heading_context_quote_body() -> None:
    console = ConsoleAdapter("log", io.StringIO())
    post = Post(
        heading="SMS from +49 151",
        context=["inbound", "SMS"],
        body="hello\nthere",
        quote=Quote("we shipped", "2024-05-01"),
        mention="@oncall",
    )

    (part,) = console.render(post)

    assert part.text == (
        "@oncall SMS from +49 151\n  inbound · SMS\n  > we shipped\n  > — 2024-05-01\nhello\nthere"
    )


async def test_customer_text_cannot_drive_the_operators_terminal() -> None:
    evil = "a\x1b[2J\x1b]0;pwned\x07b\x1b[31mc\rd\x00e\x9bf\u202eg\x08h\ttab\nline"
    console = ConsoleAdapter("log", io.StringIO())

    (part,) = console.render(Post(heading=evil, context=[evil], body=evil, quote=Quote(evil, evil)))

    assert not any(ord(c) < 32 and c not in "\n\t" or 0x7F <= ord(c) <= 0x9F for c in part.text)
    assert "\u202e" not in part.text
    assert sanitize(evil) == "abcdefgh\ttab\nline"
    assert sanitize("zero\u200bwidth\ufeff \u2066iso\u2069 👨‍👩‍👧") == "zerowidth iso 👨‍👩‍👧"


async def test_edit_and_react_are_printed_to_stdout_by_default(
    capsys: pytest.CaptureFixture[str],
) -> None:
    console = ConsoleAdapter("log")
    sent = Sent(chat="log", message="3", thread="1")

    await console.edit(sent, Part(text="updated"))
    await console.react(sent, "👍")

    assert capsys.readouterr().out == (
        "── log · edit of #3 (thread #1) ──\nupdated\n\n── log · #3 reacted 👍 ──\n\n"
    )
