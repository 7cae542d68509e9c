"""A short support day played through a real `smsbridge serve` process against the fakes.

`play(workdir)` starts fake Slack and Smstools, runs the bridge on a SQLite file in
`workdir`, sends the gateway's webhooks and an agent's Slack answer through the real edges,
waits until every post, edit and reaction has landed, and returns what the fake Slack
received (with the agent's own message, which Slack, not the bridge, would show).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import httpx

from testkit.fakes.slack import FakeSlack, SlackEdit, SlackMessage, SlackReaction
from testkit.fakes.smstools import FakeSmstools
from testkit.processes import BridgeProcess

SUPPORT, ONCALL = "C0SUPPORT", "C0ONCALL"
TOKEN = "screenshots-webhook-token-0123456789abcdef"
SIGNING_SECRET = "screenshots-slack-signing-secret"
AGENT, AGENT_NAME = "U0ANNA", "Anna Peeters"
ONCALL_GROUP = "S0ONCALL"
SUPPORT_LINE, SALES_LINE = "32460200000", "32460300000"
ANNE, BART, CHLOE = "32470123456", "32471123456", "32472555111"
ZONE = "Europe/Brussels"
SAMPLES = Path(__file__).resolve().parents[2] / "tests" / "samples"

CONFIG = f"""
destinations:
  support: {{slack: {{channel: {SUPPORT}}}, replies: true, max_rate: unlimited}}
  oncall: {{slack: {{channel: {ONCALL}}}, max_rate: unlimited}}
default: [support]
lines:
  "+32 460 20 00 00": Support line
  "+32 460 30 00 00": Sales line
balance_check_interval: 1s
alerts:
  to: [oncall]
  group_wait: 0s
  group_interval: 1s
  low_balance: 100
  mention: {{slack: "<!subteam^{ONCALL_GROUP}>"}}
"""

ANSWER = "Hi Anne, it is on the van today and arrives before 17:00. Sorry for the wait!"
CAMPAIGN = "Reminder: your appointment at the Clinic is tomorrow at 9:30, reply STOP to cancel"


@dataclass(frozen=True)
class MemberMessage:
    """A message a person wrote in Slack (sent to the bridge as an event)."""

    channel: str
    ts: str
    thread_ts: str | None
    user: str
    text: str


@dataclass(frozen=True)
class Recorded:
    """Everything the Slack workspace shows after the day, as the fake received it."""

    posts: list[SlackMessage]
    edits: list[SlackEdit]
    reactions: list[SlackReaction]
    members: list[MemberMessage]
    names: dict[str, str]  # user and user-group ids → the names Slack shows


def play(workdir: Path) -> Recorded:
    """Play the day in `workdir` (database, config, the bridge's log) and return the record."""
    smstools = FakeSmstools(balance=42.5)
    with FakeSlack() as slack, smstools, _bridge(workdir, slack, smstools) as bridge:
        slack.add_member(AGENT, AGENT_NAME)
        anne = _customers(bridge, slack)
        members = [_answer_delivered(bridge, slack, smstools, anne)]
        _out_of_credit(bridge, slack, smstools)
        slack.wait_idle()
        return Recorded(
            posts=slack.posts(),
            edits=slack.edits(),
            reactions=slack.reactions(),
            members=members,
            names={AGENT: AGENT_NAME, ONCALL_GROUP: "oncall"},
        )


@contextmanager
def _bridge(workdir: Path, slack: FakeSlack, smstools: FakeSmstools) -> Iterator[BridgeProcess]:
    config = workdir / "bridge.yaml"
    config.write_text(CONFIG)
    env = {
        "BRIDGE_CONFIG": str(config),
        "DATABASE_URL": f"sqlite:///{workdir / 'bridge.db'}",
        "SMSTOOLS_WEBHOOK_TOKEN": TOKEN,
        "SLACK_BOT_TOKEN": "xoxb-test",
        "SLACK_API_URL": slack.api_url,
        "SLACK_SIGNING_SECRET": SIGNING_SECRET,
        "SMSTOOLS_CLIENT_ID": smstools.client_id,
        "SMSTOOLS_CLIENT_SECRET": smstools.client_secret,
        "SMSTOOLS_API_URL": smstools.api_url,
    }
    bridge = BridgeProcess(["serve"], env, workdir / "serve.log").start()
    try:
        yield bridge
    except Exception:
        sys.stderr.write(f"the bridge's log ({bridge.log_path}) ends:\n{bridge.output()[-3000:]}")
        raise
    finally:
        bridge.stop()


def _customers(bridge: BridgeProcess, slack: FakeSlack) -> str:
    """Three customers on two lines, a phone-off note, a read report; returns the ts of the
    first customer's thread."""
    first = _sample("inbox_message.json")
    first["message"]["content"] += " Tracking: https://example.com/t/5531"
    _webhook(bridge, first)
    anne = _thread_of(slack, 1)
    _webhook(bridge, _sample("inbox_message_whatsapp_reply.json"))
    _thread_of(slack, 2)  # one at a time: the channel shows them in this order
    chloe = _sample("inbox_message.json")
    chloe["webhook_id"] = "wh_chloe_1"
    chloe["message"] |= {
        "id": "12345690",
        "sender": CHLOE,
        "receiver": SALES_LINE,
        "content": "Do you also deliver on Saturdays? I'm at work all week.",
    }
    _webhook(bridge, chloe)
    _thread_of(slack, 3)
    phone_off = _sample("delivery_report_failed.json")
    phone_off["message"] |= {
        "content": "Your parcel 5531 will be delivered tomorrow",
        "sender": "Acme",
        "delivery_code_detail": "11",
        "delivery_code_detail_description": "Absent Subscriber",
        "datetime": _clock(minutes_ago=45),
    }
    _webhook(bridge, phone_off)
    read = _sample("read_report.json")
    read["message"] |= {
        "messageid": "985zvqipp73csuuha2079fbshx",
        "content": "Can we deliver tomorrow between 10 and 12?",
        "sender": SUPPORT_LINE,
        "receiver": BART,
    }
    _webhook(bridge, read)
    again = _sample("inbox_message.json")
    again["webhook_id"] = "wh_anne_2"
    again["message"] |= {"id": "12345691", "content": "Is it *really* coming today?"}
    _webhook(bridge, again)
    _until(lambda: len(slack.posts(SUPPORT)) >= 6, "the customers' posts and notes")
    return anne


def _answer_delivered(
    bridge: BridgeProcess, slack: FakeSlack, smstools: FakeSmstools, thread_ts: str
) -> MemberMessage:
    """An agent answers in the thread; Smstools accepts it and reports it delivered."""
    answer = _answer(bridge, slack, thread_ts, ANSWER)
    _until(lambda: len(smstools.sent()) == 1, "the answer sent to Smstools")
    delivered = _sample("delivery_report_delivered.json")
    delivered["message"] |= {
        "messageid": smstools.sent()[0].messageids[0],
        "content": ANSWER,
        "sender": SUPPORT_LINE,
        "reference": "",
    }
    _webhook(bridge, delivered)
    _until(lambda: _named(slack, "+1") and _named(slack, "white_check_mark"), "the receipts")
    return answer


def _out_of_credit(bridge: BridgeProcess, slack: FakeSlack, smstools: FakeSmstools) -> None:
    """The low-credit notice, a campaign refused for want of credit, then credit back."""
    _until(lambda: bool(slack.posts(ONCALL)), "the low-credit notice")
    burst = []
    for n in range(12):
        report = _sample("delivery_report_insufficient_funds.json")
        report["webhook_id"] = f"wh_campaign_{n}"
        report["message"] |= {
            "messageid": f"campaign{n:04d}",
            "receiver": f"3247100{n:04d}",
            "reference": "campaign-reminders",
            "content": CAMPAIGN,
        }
        burst.append(report)
    _webhook(bridge, *burst)
    _until(lambda: any("12 messages" in (e.text or "") for e in slack.edits(ONCALL)), "the alert")
    smstools.set_balance(250)
    _until(lambda: _resolved(slack), "the resolution, edited in and posted in the thread")


def _resolved(slack: FakeSlack) -> bool:
    edited = any("Resolved" in (edit.text or "") for edit in slack.edits(ONCALL))
    return edited and any(post.thread_ts for post in slack.posts(ONCALL))


def _sample(name: str) -> dict[str, Any]:
    """One webhook event of a sample body, dated now on the account's clock (the gateway's
    time shows in Slack only when it is off the post's)."""
    (event,) = json.loads((SAMPLES / name).read_text())
    event["timezone"] = ZONE
    for key in ("date", "datetime", "read_datetime", "delivery_status_datetime"):
        if key in event["message"]:
            event["message"][key] = _clock()
    if "isreply" in event:
        event["isreply"]["orig_messagedate"] = _clock(minutes_ago=20)
    return dict(event)


def _clock(minutes_ago: int = 0) -> str:
    """A time on the account's clock, as the gateway writes it."""
    when = datetime.now(ZoneInfo(ZONE)) - timedelta(minutes=minutes_ago)
    return when.strftime("%Y-%m-%d %H:%M:%S")


def _webhook(bridge: BridgeProcess, *events: dict[str, Any]) -> None:
    url = f"{bridge.url}/webhooks/smstools/{TOKEN}"
    answer = httpx.post(url, json=list(events), timeout=10)
    answer.raise_for_status()
    if answer.json() != {"received": len(events)}:
        raise RuntimeError(f"the bridge did not receive every event: {answer.text}")


def _answer(bridge: BridgeProcess, slack: FakeSlack, thread_ts: str, text: str) -> MemberMessage:
    """An agent's message in the thread, sent as Slack's Events API would, signed."""
    ts = slack.post_as_member(SUPPORT)
    envelope = {
        "type": "event_callback",
        "team_id": FakeSlack.TEAM_ID,
        "event_id": "Ev0SCREENSHOT1",
        "event_time": int(time.time()),
        "event": {
            "type": "message",
            "channel": SUPPORT,
            "user": AGENT,
            "text": text,
            "ts": ts,
            "thread_ts": thread_ts,
        },
    }
    body = json.dumps(envelope).encode()
    stamp = str(int(time.time()))
    signature = hmac.new(SIGNING_SECRET.encode(), f"v0:{stamp}:".encode() + body, hashlib.sha256)
    headers = {
        "X-Slack-Request-Timestamp": stamp,
        "X-Slack-Signature": "v0=" + signature.hexdigest(),
        "Content-Type": "application/json",
    }
    httpx.post(f"{bridge.url}/slack/events", content=body, headers=headers).raise_for_status()
    return MemberMessage(SUPPORT, ts, thread_ts, AGENT, text)


def _thread_of(slack: FakeSlack, count: int) -> str:
    """The ts of the `count`th top-level support post, once it is there."""
    _until(lambda: len(_top_level(slack)) >= count, f"top-level post {count}")
    return _top_level(slack)[count - 1].ts


def _top_level(slack: FakeSlack) -> list[SlackMessage]:
    return [post for post in slack.posts(SUPPORT) if post.thread_ts is None]


def _named(slack: FakeSlack, name: str) -> bool:
    return any(reaction.name == name for reaction in slack.reactions(SUPPORT))


def _until(done: Callable[[], bool], what: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not done():
        if time.monotonic() > deadline:
            raise TimeoutError(f"waited {timeout:g}s for {what}")
        time.sleep(0.05)
