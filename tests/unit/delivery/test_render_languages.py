"""Posts in the destination's language: the bridge's words translated, dates in the
language's form, customer text and the gateway's own words as they came."""

from __future__ import annotations

import io

from bridge.chat.console import ConsoleAdapter
from bridge.chat.telegram import TelegramAdapter
from bridge.delivery import render
from bridge.errors import Reason
from bridge.jobs import NoticeJob
from bridge.language import ENGLISH, words
from tests.unit.delivery.test_render import CONFIG, failed, group, inbox

NL, FR = words("nl"), words("fr")


def test_dutch_gives_a_failure_the_gateway_s_own_dutch_wording() -> None:
    post = render.failure_note_post(failed(), NL)
    assert post.heading == "Niet afgeleverd aan +32 470 12 34 56"
    assert list(post.context) == ["van Acme", "verstuurd 09:38", "mislukt 09:40"]
    assert post.body == (
        "NOT DELIVERED: Ontvanger bevindt zich tijdelijk buiten het bereik van de netwerkoperator"
    )
    assert post.quote is not None and post.quote.when == "1 jan 2026, 09:38:00"
    assert post.quote.text == "Your parcel 5531 will be delivered tomorrow"  # ours, as sent


def test_french_alerts_count_in_french_and_keep_the_gateway_s_names() -> None:
    post = render.alert_post(group({"5/2000": 30}, ["32470123450"]), None, words=FR)
    assert post.heading == "Crédit épuisé : 30 messages de Clinic non envoyés"
    assert post.body.splitlines()[:2] == [
        "Pourquoi : le compte n'a plus de crédit ; chaque message échoue jusqu'à l'achat de "
        "crédit (rejected, code 5, détail 2000 INSUFFICIENT_FUNDS)",
        "À faire : rechargez le crédit Smstools ; d'ici là, chaque message échoue",
    ]
    assert list(post.context) == [
        "premier 1 janv. 2026 09:00 CET",
        "dernier 1 janv. 2026 22:05 CET",
    ]
    one = render.alert_post(group({"2/11": 1}, ["32470123450"]), None, words=FR)
    assert one.heading == "Non remis : 1 message de Clinic non envoyé"


def test_a_first_post_in_dutch_says_to_which_line_and_dates_the_dutch_way() -> None:
    post = render.inbox_post(inbox(), CONFIG, posted_at=0.0, words=NL)
    assert list(post.context) == ["naar Support line (+32 460 20 00 00)", "SMS"]
    assert post.moment is not None and post.moment.text == "1 jan 2026, 09:14:00 (Europe/Brussels)"
    assert post.body == "Where is my parcel?"  # the customer's words, untouched
    empty = render.inbox_post(inbox(""), CONFIG, words=FR)
    assert empty.body == "(message vide)"


def test_a_moved_chat_is_told_in_the_language_and_in_english_as_the_adapter_says_it() -> None:
    adapter = TelegramAdapter("nl-team", "123:abc", -555, topics=False)
    moved = adapter._moved(-555, -1004000000001)  # what the adapter logs and raises
    notice = NoticeJob(
        failing="nl-team",
        reason=Reason.MOVED,
        detail=moved.detail,
        old_chat="-555",
        new_chat="-1004000000001",
    )
    assert render.chat_moved_post(notice, None).body == f"{moved.detail}."
    dutch = render.chat_moved_post(notice, None, NL)
    assert dutch.heading == "nl-team: de Telegram-groep werd een supergroep"
    assert "Zet chat_id op -1004000000001 in de config." in dutch.body


def test_the_console_s_own_words_follow_the_language() -> None:
    firing = render.credit_post(True, "3", "5", None, NL)
    (part,) = ConsoleAdapter("oncall", io.StringIO(), NL).render(firing)
    assert part.text.startswith("[ALARM] Het Smstools-tegoed is laag: 3")
    (english,) = ConsoleAdapter("oncall", io.StringIO(), ENGLISH).render(
        render.credit_post(True, "3", "5", None)
    )
    assert english.text.startswith("[FIRING] Smstools credit is low: 3")
