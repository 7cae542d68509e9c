"""What a newcomer writes wrong in a config, and what the bridge says back: every problem at
once, each saying what to write instead; a config from the environment when there is no file."""

from __future__ import annotations

from pathlib import Path

import pytest

from bridge.cli import check_config
from bridge.config import (
    ENVIRONMENT_SOURCE,
    ConfigError,
    from_environment,
    from_settings,
    load,
    missing_tokens,
    parse,
)
from bridge.settings import Settings, SettingsError

ROOT = Path(__file__).parents[2]
ENV = {"SLACK_BOT_TOKEN": "xoxb-test", "TELEGRAM_BOT_TOKEN": "123456:test"}


def problems(text: str, env: dict[str, str] | None = None) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        parse(text, "bridge.yaml", ENV if env is None else env)
    return caught.value.problems


def slack(channel: str) -> str:
    return f"destinations: {{support: {{slack: {{channel: '{channel}'}}}}}}\ndefault: [support]\n"


@pytest.mark.parametrize(
    "channel", ["#support", "support", "SUPPORT", "https://example.com/support"]
)
def test_a_slack_channel_that_is_not_an_id_says_what_an_id_looks_like(channel: str) -> None:
    (problem,) = problems(slack(channel))
    assert problem.startswith("bridge.yaml: destinations.support.slack.channel: ")
    assert "is not a channel id" in problem and "like C0123ABCDEF" in problem
    assert "Channel ID" in problem  # where to find it


@pytest.mark.parametrize(
    "link",
    [
        "https://acme.slack.com/archives/C0123ABCDEF",
        "https://acme.slack.com/archives/C0123ABCDEF/p1700000000000000",
        "https://app.slack.com/client/T0123ABCD/C0123ABCDEF",
    ],
)
def test_a_channel_s_link_is_read_as_its_id(link: str) -> None:
    config = parse(slack(link), "bridge.yaml", ENV)
    assert config.destinations["support"].describe() == "slack channel C0123ABCDEF"
    assert parse(slack("G0PRIVATE"), "bridge.yaml", ENV).destinations["support"].kind == "slack"


def test_an_unquoted_number_with_a_leading_zero_is_to_be_quoted() -> None:
    text = slack("C0SUPPORT") + "lines:\n  0032460200000: Support line\n"
    text += "routes:\n  - match: {receiver: 0032460200000}\n    to: [support]\n"
    found = problems(text)
    assert len(found) == 2
    for problem in found:
        assert "put the number in quotes" in problem and '"0032460200000"' in problem
    assert found[0].startswith("bridge.yaml: routes[0].match.receiver: ")
    assert found[1].startswith("bridge.yaml: lines.0032460200000: ")
    quoted = text.replace("0032460200000", '"0032460200000"')
    assert parse(quoted, "bridge.yaml", ENV).lines == {"32460200000": "Support line"}


def test_an_unquoted_number_that_is_no_phone_number_is_to_be_quoted_too() -> None:
    (problem,) = problems(slack("C0SUPPORT") + "lines:\n  12: Short\n")
    assert "is not a phone number" in problem and "put the number in quotes" in problem


def test_a_top_level_country_makes_national_numbers_work() -> None:
    text = slack("C0SUPPORT") + 'lines:\n  "0470 12 34 56": Mobile\n'
    text += 'routes:\n  - match: {receiver: "0470 12 34 56"}\n    to: [support]\n'
    (problem, _) = problems(text)
    assert "add `country: BE`" in problem
    config = parse("country: BE\n" + text, "bridge.yaml", ENV)
    assert config.lines == {"32470123456": "Mobile"}
    assert config.routes[0].receiver == "32470123456"
    (problem,) = problems("country: Belgium\n" + slack("C0SUPPORT"))
    assert problem.startswith("bridge.yaml: country: 'Belgium' is not a country code")


@pytest.mark.parametrize(
    ("platform", "token"),
    [
        ("slack: {channel: C0SUPPORT", "xoxb-1234567890-abcdefghijkl"),
        ("slack: {channel: C0SUPPORT", "xapp-1-A0123-4567-abcdef"),
        ("telegram: {chat_id: -100123", "123456789:AAHdqTcvCH1vGWJxfSeofSAs0K5PALDsaw"),
    ],
)
def test_a_token_pasted_into_token_env_is_recognised_and_not_printed(
    platform: str, token: str
) -> None:
    text = f"destinations: {{support: {{{platform}, token_env: '{token}'}}}}}}\n"
    (problem,) = problems(text)
    assert "this looks like the token itself: put it in an environment variable and name" in (
        problem
    )
    assert token not in problem and token[:12] not in problem


def test_every_problem_is_reported_in_one_round_with_did_you_mean() -> None:
    text = """
destinations:
  support: {slack: {chanel: C0SUPPORT}}
route:
  - to: [support]
default: [suport]
"""
    found = problems(text)
    assert len(found) == 4, found
    assert "destinations.support.slack.chanel: unknown key (did you mean 'channel'?" in found[1]
    assert "bridge.yaml: route: unknown key (did you mean 'routes'?" in found[2]
    assert "default[0]: unknown destination 'suport' (did you mean 'support'?" in found[3]
    assert found[0] == "bridge.yaml: destinations.support.slack.channel: this key is needed here"


def test_pydantic_s_wording_becomes_what_to_write_instead() -> None:
    found = problems(slack("C0SUPPORT").replace("[support]", "support") + "threads: 7d\n")
    assert found == [
        "bridge.yaml: default: write a list, like [a, b] (or one item per line, each starting "
        "with - )",
        "bridge.yaml: threads: write a mapping: keys with a value each, indented under this one",
    ]
    assert not any("Input should be" in problem for problem in found)


def test_a_yaml_syntax_error_names_the_file_line_and_column(tmp_path: Path) -> None:
    path = tmp_path / "bridge.yaml"
    path.write_text("destinations:\n  support: {slack: {channel: C0SUPPORT}\n")
    with pytest.raises(ConfigError) as caught:
        load(path, ENV)
    (problem,) = caught.value.problems
    assert problem.startswith(f"{path}: line 3, column 1: not valid YAML: ")
    assert "<unicode string>" not in problem
    assert caught.value.fixes[0] is not None and "indentation" in caught.value.fixes[0]


def test_the_slack_only_example_needs_only_the_slack_token() -> None:
    path = ROOT / "config" / "bridge.slack.example.yaml"
    config = load(path, {"SLACK_BOT_TOKEN": "xoxb-test"})
    assert missing_tokens(config, {"SLACK_BOT_TOKEN": "xoxb-test"}) == {}
    assert config.default == ("support",)


def test_the_whole_config_fits_in_one_variable_as_one_line() -> None:
    flow = "{destinations: {support: {slack: {channel: C0SUPPORT}}}, default: [support]}"
    config = from_settings(Settings.from_env({"BRIDGE_CONFIG_YAML": flow, **ENV}))
    assert config.source == "BRIDGE_CONFIG_YAML" and config.default == ("support",)
    with pytest.raises(ConfigError) as caught:
        from_settings(Settings.from_env({"BRIDGE_CONFIG_YAML": "{destinations: {x: {}}", **ENV}))
    (problem,) = caught.value.problems
    assert problem.startswith("BRIDGE_CONFIG_YAML: line 1, column ")


def test_bridge_config_and_bridge_config_yaml_together_are_refused_naming_both() -> None:
    with pytest.raises(SettingsError) as caught:
        Settings.from_env({"BRIDGE_CONFIG": "bridge.yaml", "BRIDGE_CONFIG_YAML": "{}"})
    (problem,) = caught.value.problems
    assert problem.startswith("BRIDGE_CONFIG and BRIDGE_CONFIG_YAML are both set")


def test_simple_variables_build_the_config_when_there_is_none() -> None:
    variables = {
        "SLACK_CHANNEL": "C0SUPPORT",
        "TELEGRAM_CHAT_ID": "-1001234567890",
        "ALERTS_SLACK_CHANNEL": "https://acme.slack.com/archives/C0ONCALL",
    }
    config = from_settings(Settings.from_env({**variables, **ENV}))
    assert config.source == ENVIRONMENT_SOURCE
    assert config.default == ("slack", "telegram")
    assert config.destinations["alerts-slack"].describe() == "slack channel C0ONCALL"
    assert config.alerts is not None and config.alerts.top.to == ("alerts-slack",)
    alerts_only = from_environment({"ALERTS_TELEGRAM_CHAT_ID": "-100999"})
    assert alerts_only is not None and alerts_only["default"] == ["console"]
    assert from_environment({}) is None
    assert from_settings(Settings.from_env({})).source == "built-in config"


def test_a_simple_variable_that_cannot_be_used_is_named() -> None:
    with pytest.raises(ConfigError) as caught:
        from_environment({"SLACK_CHANNEL": "#support", "TELEGRAM_CHAT_ID": "@support"})
    slack_problem, telegram_problem = caught.value.problems
    assert slack_problem.startswith("SLACK_CHANNEL: '#support' is not a channel id")
    assert telegram_problem.startswith("TELEGRAM_CHAT_ID: '@support' is not a Telegram chat id")


def test_check_config_prints_the_config_it_built_and_names_a_missing_token(
    capsys: pytest.CaptureFixture[str],
) -> None:
    env = {"SLACK_CHANNEL": "C0SUPPORT", "TELEGRAM_CHAT_ID": "-100123", "SLACK_BOT_TOKEN": "x"}
    assert check_config(None, Settings.from_env(env)) == 1
    captured = capsys.readouterr()
    assert "built from the environment as:" in captured.out
    assert "    slack:\n      slack:\n        channel: C0SUPPORT" in captured.out
    assert "  default:\n  - slack\n  - telegram" in captured.out
    assert "destinations.telegram: TELEGRAM_BOT_TOKEN is not set" in captured.err
    assert "@BotFather" in captured.err
    env["TELEGRAM_BOT_TOKEN"] = "123:abc"
    assert check_config(None, Settings.from_env(env)) == 0


@pytest.mark.parametrize("url", ["bridge.example.com", "ftp://bridge.example.com", "https://"])
def test_a_public_url_without_its_scheme_is_one_line_saying_what_is_accepted(url: str) -> None:
    with pytest.raises(SettingsError) as caught:
        Settings.from_env({"BRIDGE_PUBLIC_URL": url})
    (problem,) = caught.value.problems
    assert problem.startswith(f"BRIDGE_PUBLIC_URL: {url!r} is not an address")
    assert "https://bridge.example.com" in problem
    assert Settings.from_env({"BRIDGE_PUBLIC_URL": "https://b.example/"}).public_url == (
        "https://b.example"
    )


def test_migrations_read_only_the_database_variables() -> None:
    settings = Settings.for_migrations(
        {"DATABASE_URL": "postgres://u@h/db", "BRIDGE_JOB_LEASE": "soon", "PORT": "x"}
    )
    assert settings.database_url == "postgresql+asyncpg://u@h/db"
    with pytest.raises(SettingsError):
        Settings.for_migrations({"DATABASE_URL": "mysql://u@h/db"})
