"""`smsbridge doctor` through the real CLI entry point, against the fake Slack, Telegram and
Smstools servers: a healthy set-up passes, and each set-up mistake is one problem line that
says how to fix it."""

from __future__ import annotations

import os
import socket
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from bridge import settings as settings_module
from bridge.app import create_app
from bridge.cli import main
from bridge.config import load
from bridge.settings import Settings
from testkit.fakes import FakeServer, FakeSlack, FakeSmstools, FakeSocketMode, FakeTelegram

FORUM = -1001234567890
GROUP = -4242
CHANNEL = "C0SUPPORT"
SMSTOOLS_SECRET = "smstools-secret-value"
CONFIG = f"""
destinations:
  support: {{slack: {{channel: {CHANNEL}}}, replies: true}}
  topics: {{telegram: {{chat_id: {FORUM}, topics: true}}}}
  replies: {{telegram: {{chat_id: {GROUP}}}}}
default: [support, topics, replies]
"""


@pytest.fixture(scope="module")
def public_bridge() -> Iterator[str]:
    """The bridge's own web app serving /healthz, as BRIDGE_PUBLIC_URL would reach it."""
    settings = Settings.from_env({})
    app = create_app(settings, load(None, {}))
    with FakeServer(app) as server:
        yield server.url


@pytest.fixture
def set_up(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    slack: FakeSlack,
    telegram: FakeTelegram,
    smstools: FakeSmstools,
    public_bridge: str,
) -> pytest.MonkeyPatch:
    """A correct set-up, database migrated: tests break one thing in it."""
    for name in (*settings_module.VARIABLES, "LOG_LEVEL", "DYNO", "RENDER_SERVICE_ID"):
        monkeypatch.delenv(name, raising=False)
    config = tmp_path / "bridge.yaml"
    config.write_text(CONFIG)
    environment = {
        "DATABASE_URL": f"sqlite:///{tmp_path / 'bridge.db'}",
        "BRIDGE_CONFIG": str(config),
        "SLACK_BOT_TOKEN": "xoxb-test",
        "SLACK_API_URL": slack.api_url,
        "TELEGRAM_BOT_TOKEN": FakeTelegram.TOKEN,
        "TELEGRAM_API_URL": telegram.url,
        "SMSTOOLS_API_URL": smstools.api_url,
        "SMSTOOLS_CLIENT_ID": smstools.client_id,
        "SMSTOOLS_CLIENT_SECRET": smstools.client_secret,
        "SLACK_SIGNING_SECRET": "slack-signing-secret-for-the-doctor",
        "BRIDGE_PUBLIC_URL": public_bridge,
    }
    for name, value in environment.items():
        monkeypatch.setenv(name, value)
    assert main(["migrate"]) == 0
    return monkeypatch


def doctor(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, list[str]]:
    capsys.readouterr()
    code = main(["doctor", *args])
    captured = capsys.readouterr()
    return code, captured.out.splitlines() + captured.err.splitlines()


def problems(lines: list[str]) -> list[str]:
    return [line for line in lines if line.startswith("problem")]


def test_a_healthy_set_up_passes_every_check(
    set_up: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], public_bridge: str
) -> None:
    code, lines = doctor(capsys)
    assert code == 0, "\n".join(lines)
    assert lines[-1] == "no problems found"
    checks = lines[:-1]
    assert all(line.startswith("ok ") for line in checks), "\n".join(lines)
    expected = [
        "ok      database: sqlite+aiosqlite:///",
        "ok      config: ",
        f"ok      slack support: channel #support ({CHANNEL}) exists and @bridge is a member",
        "ok      slack support: the token has the scopes the config needs "
        "(chat:write, channels:history, reactions:write, users:read)",
        'ok      telegram topics: Topics are on in "Support"',
        '@fake_bridge_bot is an admin of "Support" that can manage topics',
        'ok      telegram replies: @fake_bridge_bot is a member of "Support"',
        "ok      smstools api: credentials accepted; balance 123.45 EUR",
        f"ok      public url: {public_bridge}/healthz answers",
    ]
    for start in expected:
        assert any(start in line for line in checks), (start, lines)


def test_no_secret_is_ever_printed(
    set_up: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    wrong = {"SLACK_BOT_TOKEN": "xoxb-wrong-1234567", "TELEGRAM_BOT_TOKEN": "999:WRONG-token-xyz"}
    for name, value in wrong.items():
        set_up.setenv(name, value)
    set_up.setenv("SMSTOOLS_CLIENT_SECRET", SMSTOOLS_SECRET)
    code, lines = doctor(capsys)
    output = "\n".join(lines)
    assert code == 1 and len(problems(lines)) == 4, output
    for secret in (*wrong.values(), SMSTOOLS_SECRET, "TEST-token"):
        assert secret not in output


def test_an_unreachable_database_is_a_problem_without_its_password(
    set_up: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    set_up.setenv("DATABASE_URL", "postgres://bridge:s3cret-pw@127.0.0.1:1/bridge")
    code, lines = doctor(capsys)
    (line,) = problems(lines)
    assert code == 1
    assert line.startswith("problem database: cannot use postgresql+asyncpg://bridge:***@")
    assert "→ check DATABASE_URL" in line and "s3cret-pw" not in "\n".join(lines)


def test_a_schema_behind_the_code_says_to_migrate(
    set_up: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    set_up.setenv("DATABASE_URL", f"sqlite:///{tmp_path / 'fresh.db'}")
    code, lines = doctor(capsys)
    (line,) = problems(lines)
    assert code == 1 and "step(s) behind → run `smsbridge migrate`" in line


@dataclass(frozen=True)
class Broken:
    """What a test may break in the set-up: its environment and the fake servers."""

    env: pytest.MonkeyPatch
    slack: FakeSlack
    telegram: FakeTelegram
    smstools: FakeSmstools


def breaks(what: Callable[[Broken], object], *said: str, guarantee: str) -> Any:
    """One broken thing, what its one problem line says, and the guarantee as the test id."""
    return pytest.param(what, said, id=guarantee)


@pytest.mark.parametrize(
    ("break_it", "said"),
    [
        breaks(
            lambda it: it.env.setenv("DYNO", "web.1"),
            "DYNO is set",
            "attach PostgreSQL",
            guarantee="sqlite on a wiped disk is a problem",
        ),
        breaks(
            lambda it: it.env.setenv("SLACK_BOT_TOKEN", "xoxb-revoked"),
            "problem slack support: Slack refused the token in SLACK_BOT_TOKEN (invalid_auth)",
            "Bot User OAuth Token",
            guarantee="a refused slack token says where to copy it from",
        ),
        breaks(
            lambda it: it.slack.set_not_member(CHANNEL),
            f"problem slack support: @bridge is not a member of channel #support ({CHANNEL}) "
            "→ type /invite @bridge in #support",
            guarantee="a bot not in the channel is told to invite it",
        ),
        breaks(
            lambda it: it.slack.set_error(CHANNEL, "channel_not_found"),
            f"channel {CHANNEL} not found",
            "destinations.support.slack.channel",
            guarantee="a wrong channel id says where to find the right one",
        ),
        breaks(
            lambda it: it.slack.set_scopes(
                ["chat:write", "channels:read", "channels:history", "users:read"]
            ),
            "the token lacks reactions:write (to show each answer's status on the agent's message)",
            "→ add reactions:write under OAuth & Permissions → Bot Token Scopes",
            guarantee="a missing scope is named with what needs it",
        ),
        breaks(
            lambda it: it.telegram.set_chat_not_found(GROUP),
            f"problem telegram replies: chat {GROUP} not found → ",
            guarantee="an unknown telegram chat is a problem",
        ),
        breaks(
            lambda it: it.telegram.set_migrated(GROUP, -1009999),
            "became a supergroup with id -1009999",
            "set destinations.replies.telegram.chat_id to that id",
            guarantee="a migrated group says which chat id to use",
        ),
        breaks(
            lambda it: it.telegram.set_topics_off(FORUM),
            'problem telegram topics: topics: true, but Topics are off in "Support"',
            "turn on Topics",
            guarantee="topics turned off is a problem where topics are configured",
        ),
        breaks(
            lambda it: it.telegram.set_bot_status(FORUM, "member"),
            '@fake_bridge_bot is not an admin of "Support" with the Manage topics right',
            "make @fake_bridge_bot an admin with Manage topics",
            guarantee="a bot that is not an admin cannot open topics",
        ),
        breaks(
            lambda it: it.telegram.set_bot_status(FORUM, "administrator", can_manage_topics=False),
            'is an admin of "Support" without the Manage topics right',
            guarantee="an admin without the manage topics right is a problem",
        ),
        breaks(
            lambda it: it.telegram.set_bot_status(GROUP, "left"),
            "problem telegram replies: @fake_bridge_bot is not in",
            guarantee="a bot that left the group is a problem",
        ),
        breaks(
            lambda it: it.smstools.set_bad_credentials(),
            "problem smstools api: Smstools refused the credentials (error 104)",
            "SMSTOOLS_CLIENT_ID and SMSTOOLS_CLIENT_SECRET",
            guarantee="refused smstools credentials say where to find them",
        ),
        breaks(  # some other server: 404 on /healthz
            lambda it: it.env.setenv("BRIDGE_PUBLIC_URL", it.smstools.url),
            "answered HTTP 404, not the bridge",
            guarantee="a public url that is not the bridge is a problem",
        ),
    ],
)
def test_one_thing_broken_is_one_problem_line_that_says_how_to_fix_it(
    set_up: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    slack: FakeSlack,
    telegram: FakeTelegram,
    smstools: FakeSmstools,
    break_it: Callable[[Broken], object],
    said: tuple[str, ...],
) -> None:
    break_it(Broken(set_up, slack, telegram, smstools))
    code, lines = doctor(capsys)
    (line,) = problems(lines)
    assert code == 1
    for words in said:
        assert words in line


def test_an_invalid_config_names_the_key_and_skips_the_destinations(
    set_up: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    broken = tmp_path / "broken.yaml"
    broken.write_text(CONFIG + "colour: blue\n")
    code, lines = doctor(capsys, "--config", str(broken))
    (line,) = problems(lines)
    assert code == 1 and line.startswith(f"problem config: {broken}: colour: ")
    assert "skipped destinations: not checked: the config is invalid" in lines


def test_without_channels_read_the_channel_check_is_skipped_not_failed(
    set_up: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], slack: FakeSlack
) -> None:
    slack.set_scopes(["chat:write", "reactions:write", "channels:history", "users:read"])
    code, lines = doctor(capsys)
    assert code == 0
    assert any(
        line.startswith("skipped slack support: cannot look at channel C0SUPPORT") for line in lines
    )


def test_a_refused_telegram_token_says_to_ask_botfather(
    set_up: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    set_up.setenv("TELEGRAM_BOT_TOKEN", "999:WRONG-token")
    code, lines = doctor(capsys)
    assert code == 1 and len(problems(lines)) == 2  # both Telegram destinations
    assert all("Telegram refused the token in TELEGRAM_BOT_TOKEN" in p for p in problems(lines))
    assert all("@BotFather" in p for p in problems(lines))


def test_smstools_credentials_half_set_are_a_problem_and_unset_are_skipped(
    set_up: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    # Without replies the Smstools API is optional (answering needs it: a config problem).
    Path(os.environ["BRIDGE_CONFIG"]).write_text(CONFIG.replace(", replies: true", ""))
    set_up.delenv("SMSTOOLS_CLIENT_SECRET")
    code, lines = doctor(capsys)
    (line,) = problems(lines)
    assert code == 1 and "SMSTOOLS_CLIENT_SECRET is not set, but the other one is" in line
    set_up.delenv("SMSTOOLS_CLIENT_ID")
    code, lines = doctor(capsys)
    assert code == 0
    assert any(line.startswith("skipped smstools api: SMSTOOLS_CLIENT_ID") for line in lines)


def test_a_public_url_that_does_not_answer_is_a_problem(
    set_up: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    with socket.socket() as unused:
        unused.bind(("127.0.0.1", 0))
        port = unused.getsockname()[1]
    set_up.setenv("BRIDGE_PUBLIC_URL", f"http://127.0.0.1:{port}")
    code, lines = doctor(capsys)
    (line,) = problems(lines)
    assert code == 1 and f"http://127.0.0.1:{port}/healthz did not answer (ConnectError)" in line
    assert "→ set BRIDGE_PUBLIC_URL to the address the web process is served at" in line


def test_polling_mode_is_said_and_a_webhook_still_set_is_a_problem(
    set_up: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], telegram: FakeTelegram
) -> None:
    config = Path(os.environ["BRIDGE_CONFIG"])
    config.write_text(CONFIG.replace(f"chat_id: {GROUP}}}", f"chat_id: {GROUP}}}, replies: true"))
    set_up.setenv("TELEGRAM_UPDATES", "webhook")
    code, lines = doctor(capsys)
    assert code == 0 and any(
        "ok      telegram updates (replies): webhook mode" in line for line in lines
    )

    set_up.setenv("TELEGRAM_UPDATES", "polling")
    code, lines = doctor(capsys)
    assert code == 0, "\n".join(lines)
    assert any("ok      telegram updates (replies): polling mode" in line for line in lines)

    telegram.webhooks[FakeTelegram.TOKEN] = {"url": "https://old.example/telegram/webhook"}
    code, lines = doctor(capsys)
    assert code == 1 and len(problems(lines)) == 1, "\n".join(lines)
    assert "a webhook is still set (https://old.example/telegram/webhook)" in problems(lines)[0]
    assert "smsbridge telegram delete-webhook" in problems(lines)[0]


def test_the_slack_app_token_is_checked_when_set_with_the_fix_for_each_refusal(
    set_up: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], slack: FakeSlack
) -> None:
    code, lines = doctor(capsys)
    assert not any("slack socket mode" in line for line in lines)  # not set: nothing to check

    with FakeSocketMode() as socket_mode:
        slack.socket_mode = socket_mode
        set_up.setenv("SLACK_APP_TOKEN", FakeSlack.APP_TOKEN)
        code, lines = doctor(capsys)
        assert code == 0, "\n".join(lines)
        assert "ok      slack socket mode: the token in SLACK_APP_TOKEN opens Socket Mode " in (
            "\n".join(lines)
        )
        assert socket_mode.connections_opened() == 0  # the URL it was given is left unused

        set_up.setenv("SLACK_APP_TOKEN", "xapp-revoked")
        code, lines = doctor(capsys)
        (line,) = problems(lines)
        assert code == 1 and "Slack refused the token in SLACK_APP_TOKEN (invalid_auth)" in line
        assert "App-Level Tokens" in line and "connections:write" in line
        assert "xapp-revoked" not in "\n".join(lines)

    slack.socket_mode = None  # Socket Mode turned off in the app's settings
    set_up.setenv("SLACK_APP_TOKEN", FakeSlack.APP_TOKEN)
    code, lines = doctor(capsys)
    (line,) = problems(lines)
    assert "Slack cannot open a Socket Mode connection (invalid_request)" in line
    assert "turn Socket Mode on" in line


def test_a_missing_token_is_a_problem_naming_the_variable_and_the_others_are_checked(
    set_up: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    set_up.delenv("TELEGRAM_BOT_TOKEN")
    code, lines = doctor(capsys)
    found = [line for line in problems(lines) if "telegram" in line]
    assert code == 1 and len(found) == 2  # the two Telegram destinations, each named
    assert found[0].startswith(
        "problem telegram topics: TELEGRAM_BOT_TOKEN is not set, so nothing is posted to "
        "topics: its messages wait in the outbox → set TELEGRAM_BOT_TOKEN to the bot token "
        "from @BotFather"
    )
    assert any(line.startswith("ok      slack support: token in SLACK_BOT_TOKEN") for line in lines)


def test_a_config_file_that_is_not_there_gets_advice_of_its_own(
    set_up: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    set_up.setenv("BRIDGE_CONFIG", str(tmp_path / "missing.yaml"))
    code, lines = doctor(capsys)
    (line,) = [line for line in problems(lines) if "config:" in line]
    assert code == 1 and "cannot read the config" in line
    assert "copy config/bridge.slack.example.yaml" in line and "SLACK_CHANNEL" in line
    assert "correct that key" not in line
