"""`language: nl` and `language: fr`: a real `smsbridge serve` writes no English word of its own
into Slack or Telegram, through a realistic run (inbox SMS and WhatsApp, a customer quoting
our message, an out-of-credit campaign, a low credit, events not understood, agents' answers
with their read line, failure note and ⚠️ note); and a destination's own `language` wins
over the top level's. Every text the fakes received is read back; the English strings looked
for are the catalog's own msgids, so a new message is checked as soon as it is translated.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from babel.messages.pofile import read_po

from bridge import language
from testkit.fakes.slack import FakeSlack
from testkit.fakes.smstools import FakeSmstools
from testkit.fakes.telegram import FakeTelegram
from testkit.processes import BridgeProcess
from tests.support.alert_fixtures import report
from tests.support.reply_fixtures import SIGNING_SECRET, sign, slack_event
from tests.support.traffic import LINE_A, TOKEN, env_for

pytestmark = pytest.mark.slow

FORUM = -1001234567890
CUSTOMER, WA_CUSTOMER = "32470123456", "32470999999"

CONFIG = f"""
language: {{top}}
destinations:
  support: {{{{slack: {{{{channel: C0SUPPORT}}}}, max_rate: unlimited, replies: true}}}}
  nl-team: {{{{telegram: {{{{chat_id: {FORUM}, topics: true}}}}, max_rate: unlimited}}}}
  on-call: {{{{slack: {{{{channel: C0ONCALL}}}}, max_rate: unlimited{{on_call}}}}}}
routes:
  - match: {{{{type: whatsapp}}}}
    to: [nl-team]
default: [support]
balance_check_interval: 1s
alerts:
  to: [on-call]
  group_wait: 0s
  resolve_after: 1d
  low_balance: 100
"""


@dataclass(frozen=True)
class Run:
    """What the fakes received: every text, per Slack channel and for Telegram."""

    support: list[str]
    on_call: list[str]
    telegram: list[str]

    @property
    def everything(self) -> list[str]:
        return [*self.support, *self.on_call, *self.telegram]


def inbox(content: str, sender: str, kind: str, n: int, **extra: Any) -> dict[str, Any]:
    return {
        "webhook_id": f"wh_lang_in_{n}",
        "webhook_type": "inbox_message",
        "timezone": "Europe/Brussels",
        "message": {
            "id": f"in{n}",
            "date": "2026-11-26 10:00:00",  # long ago: the first post states it
            "sender": sender,
            "receiver": LINE_A,
            "content": content,
            "type": kind,
        },
        **extra,
    }


def read_report(messageid: str) -> dict[str, Any]:
    """The customer read our message `messageid`."""
    return {
        "webhook_id": f"wh_lang_read_{messageid}",
        "webhook_type": "read_report",
        "timezone": "Europe/Brussels",
        "message": {
            "messageid": messageid,
            "datetime": "2026-11-26 10:01:00",
            "read_status": "message_read",
            "read_datetime": "2026-11-26 10:05:00",
            "sender": LINE_A,
            "receiver": CUSTOMER,
        },
    }


def strings(value: object) -> Iterator[str]:
    """Every text field of a Block Kit payload."""
    if isinstance(value, dict):
        for key, item in value.items():
            if key == "text" and isinstance(item, str):
                yield item
            else:
                yield from strings(item)
    elif isinstance(value, list):
        for item in value:
            yield from strings(item)


def slack_texts(slack: FakeSlack, channel: str) -> list[str]:
    texts: list[str] = []
    for post in [*slack.posts(channel), *slack.edits(channel)]:
        texts.append(post.text or "")
        texts.extend(strings(post.blocks or []))
    return texts


def wait_for(condition: Callable[[], bool], what: str, output: Callable[[], str]) -> None:
    deadline = time.monotonic() + 45
    while not condition():
        assert time.monotonic() < deadline, f"no {what}:\n{output()}"
        time.sleep(0.1)


def webhook(client: httpx.Client, url: str, events: list[dict[str, Any]]) -> None:
    response = client.post(f"{url}/webhooks/smstools/{TOKEN}", json=events)
    assert response.status_code == 200, response.text


def answer(client: httpx.Client, url: str, slack: FakeSlack, text: str, root: str) -> None:
    ts = slack.post_as_member("C0SUPPORT")
    body = json.dumps(slack_event(text, root, ts)).encode()
    response = client.post(
        f"{url}/slack/events", content=body, headers=sign(body, int(time.time()))
    )
    assert response.status_code == 200, response.text


def run(tmp_path: Path, database_url: str, top: str, on_call: str | None = None) -> Run:
    """One realistic run of `smsbridge serve` in `top` (the on-call destination in
    `on_call`, if given), every text the fakes received read back."""
    with FakeSlack() as slack, FakeTelegram() as telegram, FakeSmstools() as smstools:
        smstools.set_balance(20)  # under alerts.low_balance: on-call hears of it
        config = tmp_path / "bridge.yaml"
        own = f", language: {on_call}" if on_call else ""
        config.write_text(CONFIG.format(top=top, on_call=own))
        env = {
            **env_for(str(config), slack, telegram, database_url),
            "SLACK_SIGNING_SECRET": SIGNING_SECRET,
            "SMSTOOLS_API_URL": smstools.api_url,
            "SMSTOOLS_CLIENT_ID": smstools.client_id,
            "SMSTOOLS_CLIENT_SECRET": smstools.client_secret,
        }
        bridge = BridgeProcess(["serve"], env, tmp_path / f"serve-{top}.log").start()
        try:
            _drive(bridge, slack, telegram, smstools)
        finally:
            bridge.stop()
        return Run(
            support=slack_texts(slack, "C0SUPPORT"),
            on_call=slack_texts(slack, "C0ONCALL"),
            telegram=[
                *(message.plain_text for message in telegram.messages()),
                *(topic.name for topic in telegram.topics()),
            ],
        )


def _drive(
    bridge: BridgeProcess, slack: FakeSlack, telegram: FakeTelegram, smstools: FakeSmstools
) -> None:
    quoting = {
        "isreply": {
            "reply": True,
            "orig_message_content": "Your parcel 5531 will be delivered tomorrow",
            "orig_messageid": "out-5531",
            "orig_messagedate": "2026-11-25 08:00:00",
        }
    }
    campaign = [report(5, 2000, receiver=f"3247055500{n}", sender="Clinic") for n in range(3)]
    with httpx.Client(timeout=10) as client:
        webhook(
            client,
            bridge.url,
            [
                inbox("Hallo, mijn pakket?", CUSTOMER, "sms", 1, **quoting),
                inbox("Bonjour, mon colis ?", WA_CUSTOMER, "whatsapp", 2),
                {"webhook_id": "wh_lang_odd", "webhook_type": "email2sms_received"},
                *campaign,
            ],
        )
        wait_for(lambda: len(slack.posts("C0SUPPORT")) == 1, "first post", bridge.output)
        webhook(client, bridge.url, [inbox("Nog iets", CUSTOMER, "sms", 3)])
        root = slack.posts("C0SUPPORT")[0].ts
        answer(client, bridge.url, slack, "Morgen komt het, tot dan!", root)
        wait_for(lambda: len(smstools.sent()) == 1, "first answer sent", bridge.output)
        answer(client, bridge.url, slack, "Of overmorgen.", root)
        wait_for(lambda: len(smstools.sent()) == 2, "second answer sent", bridge.output)
        undelivered = [
            # The first answer fails: a ⚠️ note; our quoted message is read: a read line; a
            # message sent from the dashboard fails: a failure note.
            report(
                2, 11, receiver=CUSTOMER, sender=LINE_A, messageid=smstools.sent()[0].messageids[0]
            ),
            read_report("out-5531"),
            report(2, 11, receiver=CUSTOMER, sender=LINE_A, messageid="out-5532"),
        ]
        webhook(client, bridge.url, undelivered)
    # First post, later post, ⚠️ note, read line, failure note; on-call: the low credit alert
    # (edited once the campaign fails for want of it) and the events not understood.
    wait_for(lambda: len(slack.posts("C0SUPPORT")) >= 5, "thread lines", bridge.output)
    wait_for(lambda: len(slack.posts("C0ONCALL")) >= 2, "on-call posts", bridge.output)
    wait_for(lambda: len(telegram.messages(FORUM)) >= 1, "Telegram post", bridge.output)
    slack.wait_idle()
    telegram.wait_idle()


def english(code: language.Language) -> dict[str, re.Pattern[str]]:
    """Each English piece of the catalog's msgids (the text between placeholders) that its
    translation into `code` does not share, as a whole-word pattern."""
    with language.catalog_path(code).open("rb") as source:
        catalog = read_po(source)
    pieces: dict[str, re.Pattern[str]] = {}
    for message in catalog:
        if not message.id:
            continue
        msgids = message.id if isinstance(message.id, tuple) else (message.id,)
        forms = message.string if isinstance(message.string, tuple) else (message.string,)
        for msgid in msgids:
            for piece in re.split(r"\{\w*\}", msgid):
                piece = piece.strip(' :;,.()“”"\n')
                pattern = re.compile(rf"(?<!\w){re.escape(piece)}(?!\w)")
                if len(piece) < 2 or any(pattern.search(form) for form in forms):
                    continue  # "code", "SMS", "min": the same in the language
                pieces[piece] = pattern
    return pieces


def english_in(texts: list[str], code: language.Language) -> list[str]:
    return sorted(
        {
            piece
            for piece, pattern in english(code).items()
            for text in texts
            if pattern.search(text)
        }
    )


# A few of each language's words the run must show, so an empty or broken run cannot pass.
SEEN: dict[str, tuple[str, ...]] = {
    "nl": (
        "Tegoed op",
        "tegoed 20 EUR, onder alerts.low_balance",
        "Smstools-gebeurtenissen niet begrepen",
        "✓ Gelezen door de klant om",
        "Niet afgeleverd aan",
        "Ontvanger bevindt zich tijdelijk buiten het bereik van de netwerkoperator",
        "⚠️ Je antwoord",
        "Waarom:",
        "Actie:",
        "naar +32",
    ),
    "fr": (
        "Crédit épuisé",
        "crédit 20 EUR, sous alerts.low_balance",
        "Événements Smstools non compris",
        "✓ Lu par le client à",
        "Non remis à",
        "le destinataire est temporairement hors de portée du réseau",
        "⚠️ Votre réponse",
        "Pourquoi :",
        "À faire :",
        "vers +32",
    ),
}


@pytest.mark.parametrize("code", ["nl", "fr"])
def test_a_run_in_the_team_s_language_shows_no_english_word_of_the_bridge(
    tmp_path: Path, sqlite_url: str, code: language.Language
) -> None:
    found = english_in(["Not delivered to +32 470", "Do: check"], code)
    assert {"Not delivered to", "Do"} <= set(found)  # the check finds English
    seen = run(tmp_path, sqlite_url, code)
    shown = "\n".join(seen.everything)
    assert [word for word in SEEN[code] if word not in shown] == []
    assert english_in(seen.everything, code) == []
    # Customer text and the gateway's own status names are as they came.
    assert "Hallo, mijn pakket?" in shown and "Bonjour, mon colis ?" in shown
    assert "Your parcel 5531 will be delivered tomorrow" in shown
    assert "NOT DELIVERED" in shown


def test_a_destination_s_own_language_wins_over_the_top_level_one(
    tmp_path: Path, sqlite_url: str
) -> None:
    seen = run(tmp_path, sqlite_url, "nl", on_call="fr")
    on_call, support = "\n".join(seen.on_call), "\n".join(seen.support)
    assert "Crédit épuisé" in on_call and "Pourquoi :" in on_call
    assert "Tegoed op" not in on_call and "Waarom:" not in on_call
    assert "⚠️ Je antwoord" in support and "✓ Gelezen door de klant om" in support
    assert english_in(seen.on_call, "fr") == [] and english_in(seen.support, "nl") == []
