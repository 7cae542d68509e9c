"""The screenshots' renderer shows Slack's formats as Slack does, and escapes every text."""

from __future__ import annotations

import pytest

from docs.screenshots.mrkdwn import block, mrkdwn

NAMES = {"S0ONCALL": "oncall", "U0ANNA": "Anna Peeters"}


@pytest.mark.parametrize(
    ("text", "shown"),
    [
        ("*Not delivered*", "<b>Not delivered</b>"),
        ("_italic_ and ~gone~", "<i>italic</i> and <s>gone</s>"),
        ("2*3*4 stays", "2*3*4 stays"),
        ("`code`", "<code>code</code>"),
        ("&lt;b&gt;not bold&lt;/b&gt; &amp; co", "&lt;b&gt;not bold&lt;/b&gt; &amp; co"),
        (
            "<https://x.test/?a=1&amp;b=2|the site>",
            '<a href="https://x.test/?a=1&amp;b=2">the site</a>',
        ),
        ("<https://x.test/>", '<a href="https://x.test/">https://x.test/</a>'),
        ("<!date^1800000000^{date_short_pretty} {time}|2027-01-15 09:00>", "2027-01-15 09:00"),
        ("<!subteam^S0ONCALL> :red_circle:", '<span class="mention">@oncall</span> 🔴'),
        ("<@U0ANNA>", '<span class="mention">@Anna Peeters</span>'),
        (":no_such_emoji: at 12:36:55", ":no_such_emoji: at 12:36:55"),
        ("> quoted *line*\nafter", "<blockquote>quoted <b>line</b></blockquote>after"),
    ],
)
def test_mrkdwn_shows_what_slack_shows_and_escapes_the_rest(text: str, shown: str) -> None:
    assert mrkdwn(text, NAMES) == shown


def test_a_link_cannot_break_out_of_its_attribute() -> None:
    assert mrkdwn('<https://x.test/"onmouseover="x|go>', {}) == (
        '<a href="https://x.test/&quot;onmouseover=&quot;x">go</a>'
    )


def test_rich_text_shows_customer_words_as_written_escaped() -> None:
    words = {
        "type": "rich_text",
        "elements": [
            {"type": "rich_text_quote", "elements": [{"type": "text", "text": "our <b>offer</b>"}]},
            {
                "type": "rich_text_section",
                "elements": [
                    {"type": "text", "text": "Is it *really* <script>x</script> "},
                    {"type": "link", "url": "https://x.test/t?a=1&b=2", "text": "https://x.test/t"},
                    {"type": "text", "text": "09:00", "style": {"italic": True}},
                ],
            },
        ],
    }
    assert block(words, NAMES) == (
        '<div class="block rich-text">'
        '<blockquote class="rich">our &lt;b&gt;offer&lt;/b&gt;</blockquote>'
        '<div class="rich">Is it *really* &lt;script&gt;x&lt;/script&gt; '
        '<a href="https://x.test/t?a=1&amp;b=2">https://x.test/t</a><i>09:00</i></div></div>'
    )


def test_context_elements_stand_side_by_side() -> None:
    context = {
        "type": "context",
        "elements": [
            {"type": "mrkdwn", "text": "to Support line"},
            {"type": "mrkdwn", "text": "SMS"},
        ],
    }
    assert block(context, NAMES) == (
        '<div class="block context"><span>to Support line</span><span>SMS</span></div>'
    )
