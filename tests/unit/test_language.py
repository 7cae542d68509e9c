"""Words: messages, plurals and dates in a destination's language; English as written."""

from __future__ import annotations

from datetime import datetime
from zoneinfo import ZoneInfo

import pytest

from bridge.language import ENGLISH, Phrase, words

BRUSSELS = ZoneInfo("Europe/Brussels")


@pytest.mark.parametrize(
    ("code", "stamp", "zoned"),
    [
        ("en", "2026-01-01 09:14:00", "2026-01-01 09:14 CET"),
        ("nl", "1 jan 2026, 09:14:00", "1 jan 2026 09:14 CET"),
        ("fr", "1 janv. 2026, 09:14:00", "1 janv. 2026 09:14 CET"),
    ],
)
def test_dates_are_written_in_the_language_s_form(code: str, stamp: str, zoned: str) -> None:
    said = words(code)  # type: ignore[arg-type]
    assert said.stamp(datetime(2026, 1, 1, 9, 14)) == stamp  # naive: the account's clock
    assert said.stamp(datetime(2026, 1, 1, 9, 14, tzinfo=BRUSSELS)) == stamp
    assert said.zoned(datetime(2026, 1, 1, 9, 14, tzinfo=BRUSSELS)) == zoned


def test_english_is_the_message_itself() -> None:
    assert ENGLISH.gettext("to {line}", line="Support line") == "to Support line"
    assert ENGLISH.gettext("a message nobody translated") == "a message nobody translated"


@pytest.mark.parametrize(
    ("code", "one", "thirty"),
    [
        ("en", "1 message from Clinic not sent", "30 messages from Clinic not sent"),
        ("nl", "1 bericht van Clinic niet verstuurd", "30 berichten van Clinic niet verstuurd"),
        ("fr", "1 message de Clinic non envoyé", "30 messages de Clinic non envoyés"),
    ],
)
def test_counts_take_the_language_s_plural(code: str, one: str, thirty: str) -> None:
    said = words(code)  # type: ignore[arg-type]
    singular, plural = (
        "{count} message from {senders} not sent",
        "{count} messages from {senders} not sent",
    )
    assert said.ngettext(singular, plural, 1, senders="Clinic") == one
    assert said.ngettext(singular, plural, 30, senders="Clinic") == thirty


def test_a_phrase_is_said_with_its_phrases_and_leaves_values_as_given() -> None:
    phrase = Phrase(
        "was not sent: {why}",
        {"why": Phrase("the answer is too long for the gateway (459 characters at most)")},
    )
    assert words("nl").say(phrase) == (
        "werd niet verstuurd: het antwoord is te lang voor de gateway (hoogstens 459 tekens)"
    )
    # The gateway's own words (no msgid of ours) and braces in values stay as they are.
    assert words("fr").say(Phrase("was not sent: {why}", {"why": Phrase("Bad {x} request")})) == (
        "n'a pas été envoyée : Bad {x} request"
    )


def test_each_language_s_translator_is_built_once() -> None:
    assert words("nl") is words("nl")
