from __future__ import annotations

import pytest

from bridge.cli import main
from bridge.settings import (
    Settings,
    SettingsError,
    normalise_database_url,
    sqlite_on_ephemeral_disk,
)
from bridge.store.db import Database


def test_paas_postgres_urls_map_to_asyncpg() -> None:
    assert (
        normalise_database_url("postgres://u:p@h:5432/db") == "postgresql+asyncpg://u:p@h:5432/db"
    )
    assert normalise_database_url("postgresql://h/db") == "postgresql+asyncpg://h/db"
    assert normalise_database_url("sqlite:///smsbridge.db") == "sqlite+aiosqlite:///smsbridge.db"


async def test_sslmode_from_an_add_on_url_becomes_asyncpgs_ssl_argument() -> None:
    database = Database(normalise_database_url("postgres://u:p@h/db?sslmode=require&x=1"))
    try:
        assert database.connect_args == {"ssl": "require"}
        assert "sslmode" not in str(database.engine.url)
    finally:
        await database.close()


def test_the_defaults_need_no_environment() -> None:
    settings = Settings.from_env({})
    assert settings.database_url == "sqlite+aiosqlite:///smsbridge.db"
    assert settings.port == 8000
    assert settings.slack_api_url == "https://slack.com/api/"
    assert settings.telegram_api_url == "https://api.telegram.org"
    assert settings.run_worker


def test_sqlite_on_a_dyno_gets_a_loud_warning() -> None:
    warning = sqlite_on_ephemeral_disk(Settings.from_env({"DYNO": "web.1"}))
    assert warning is not None and "DYNO" in warning and "PostgreSQL" in warning
    on_postgres = Settings.from_env({"DYNO": "web.1", "DATABASE_URL": "postgres://h/db"})
    assert sqlite_on_ephemeral_disk(on_postgres) is None
    assert sqlite_on_ephemeral_disk(Settings.from_env({})) is None


def test_edge_limits_have_defaults_and_come_from_the_environment() -> None:
    defaults = Settings.from_env({})
    assert (defaults.body_timeout, defaults.keep_alive, defaults.max_connections) == (10.0, 5, 100)
    assert defaults.header_timeout == 10.0
    tuned = Settings.from_env(
        {
            "BRIDGE_BODY_TIMEOUT": "2.5",
            "BRIDGE_KEEP_ALIVE": "30",
            "BRIDGE_MAX_CONNECTIONS": "20",
            "BRIDGE_HEADER_TIMEOUT": "1.5",
        }
    )
    assert (tuned.body_timeout, tuned.keep_alive, tuned.max_connections) == (2.5, 30, 20)
    assert tuned.header_timeout == 1.5


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("BRIDGE_BODY_TIMEOUT", "0"),
        ("BRIDGE_BODY_TIMEOUT", "soon"),
        ("BRIDGE_BODY_TIMEOUT", "nan"),
        ("BRIDGE_HEADER_TIMEOUT", "0"),
        ("BRIDGE_HEADER_TIMEOUT", "later"),
        ("BRIDGE_KEEP_ALIVE", "1.5"),
        ("BRIDGE_MAX_CONNECTIONS", "-3"),
    ],
)
def test_a_bad_limit_is_one_problem_naming_the_variable(name: str, value: str) -> None:
    with pytest.raises(SettingsError) as caught:
        Settings.from_env({name: value})
    (problem,) = caught.value.problems
    assert problem.startswith(f"{name}: '{value}' is not ")
    assert "above 0" in problem


def test_a_webhook_token_of_32_characters_is_enough_and_31_is_not() -> None:
    assert Settings.from_env({"SMSTOOLS_WEBHOOK_TOKEN": "x" * 32}).webhook_token is not None
    with pytest.raises(SettingsError) as caught:
        Settings.from_env({"SMSTOOLS_WEBHOOK_TOKEN": "x" * 31})
    (problem,) = caught.value.problems
    assert problem.startswith("SMSTOOLS_WEBHOOK_TOKEN: 31 characters;")
    assert "secrets.token_urlsafe(32)" in problem


def test_a_bad_port_or_job_lease_is_one_line_naming_the_variable() -> None:
    with pytest.raises(SettingsError) as caught:
        Settings.from_env({"PORT": "eighty", "BRIDGE_JOB_LEASE": "0"})
    assert caught.value.problems == [
        "PORT: 'eighty' is not a number (a port number from 1 to 65535)",
        "BRIDGE_JOB_LEASE: a job lease is a number of seconds above 0",
    ]
    with pytest.raises(SettingsError, match="PORT: '70000' is not a port number"):
        Settings.from_env({"PORT": "70000"})
    assert Settings.from_env({"PORT": "8080", "BRIDGE_JOB_LEASE": "5"}).job_lease == 5.0


NEON_URL = "postgresql://u:s3cret-pw@ep-1-pooler.eu.aws.neon.tech/db?sslmode=require"


@pytest.mark.parametrize(
    ("command", "name", "value", "said"),
    [
        (
            "check-config",
            "BRIDGE_JOB_LEASE",
            "soon",
            "BRIDGE_JOB_LEASE: 'soon' is not a number (seconds, like 60)",
        ),
        (
            "doctor",
            "DATABASE_URL",
            f"{NEON_URL}&channel_binding=require",
            "DATABASE_URL: channel_binding=require cannot be honoured",
        ),
    ],
    ids=["a job lease that is no number", "a channel binding asyncpg cannot do"],
)
def test_the_cli_refuses_a_bad_environment_in_one_line_and_no_traceback(
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    command: str,
    name: str,
    value: str,
    said: str,
) -> None:
    monkeypatch.setenv(name, value)
    assert main([command]) == 1
    error = capsys.readouterr().err
    assert error.startswith(f"smsbridge: environment: {said}") and error.count("\n") == 1
    assert "s3cret-pw" not in error


@pytest.mark.parametrize("name", ["DATABASE_URL", "DATABASE_DIRECT_URL"])
def test_a_required_channel_binding_is_refused_naming_the_variable_and_what_to_do(
    name: str,
) -> None:
    with pytest.raises(SettingsError) as raised:
        Settings.from_env({name: f"{NEON_URL}&channel_binding=require"})
    (problem,) = raised.value.problems
    assert problem.startswith(f"{name}: channel_binding=require cannot be honoured")
    assert "channel_binding=prefer" in problem and "postgres-poolers.md" in problem
    assert "s3cret-pw" not in problem


@pytest.mark.parametrize("binding", ["prefer", "disable"])
def test_a_channel_binding_that_allows_none_is_accepted(binding: str) -> None:
    settings = Settings.from_env({"DATABASE_URL": f"{NEON_URL}&channel_binding={binding}"})
    assert settings.database_url.startswith("postgresql+asyncpg://")


def test_a_channel_binding_libpq_does_not_know_is_refused() -> None:
    with pytest.raises(SettingsError) as raised:
        Settings.from_env({"DATABASE_URL": f"{NEON_URL}&channel_binding=always"})
    assert raised.value.problems == [
        "DATABASE_URL: channel_binding=always is not one of disable, prefer, require"
    ]


def test_the_environment_is_read_once_and_kept_out_of_reprs() -> None:
    settings = Settings.from_env({"SLACK_BOT_TOKEN": "xoxb-secret-value", "LOG_LEVEL": "debug"})
    assert settings.environ["SLACK_BOT_TOKEN"] == "xoxb-secret-value"
    assert settings.log_level == "DEBUG"
    assert "xoxb-secret-value" not in repr(settings)


def test_logs_are_json_on_a_paas_and_text_elsewhere_unless_log_format_says() -> None:
    assert Settings.from_env({}).log_format == "text"
    assert Settings.from_env({"DYNO": "web.1"}).log_format == "json"
    assert Settings.from_env({"RENDER_SERVICE_ID": "srv-1", "LOG_FORMAT": "text"}).log_format == (
        "text"
    )
    assert Settings.from_env({"LOG_FORMAT": "JSON"}).log_format == "json"
    with pytest.raises(SettingsError, match="LOG_FORMAT: 'xml' is not json or text"):
        Settings.from_env({"LOG_FORMAT": "xml"})


def test_metrics_token_is_a_secret() -> None:
    settings = Settings.from_env({"METRICS_TOKEN": "metrics-secret-42"})
    assert settings.metrics_token is not None
    assert "metrics-secret-42" not in repr(settings)


@pytest.mark.parametrize(
    ("environ", "mode"),
    [
        ({}, "polling"),  # no public URL: polling is what reaches the bridge
        ({"BRIDGE_PUBLIC_URL": "https://bridge.example"}, "webhook"),
        ({"TELEGRAM_WEBHOOK_SECRET": "s" * 32}, "webhook"),
        ({"BRIDGE_PUBLIC_URL": "https://bridge.example", "TELEGRAM_UPDATES": "polling"}, "polling"),
        ({"TELEGRAM_UPDATES": " Webhook "}, "webhook"),
    ],
)
def test_telegram_updates_default_to_polling_without_a_public_url(
    environ: dict[str, str], mode: str
) -> None:
    assert Settings.from_env(environ).telegram_updates == mode


def test_an_unknown_telegram_updates_mode_is_one_line_naming_the_variable() -> None:
    with pytest.raises(SettingsError) as refused:
        Settings.from_env({"TELEGRAM_UPDATES": "push"})
    assert refused.value.problems == ["TELEGRAM_UPDATES: 'push' is not polling or webhook"]


def test_slack_app_token_must_be_an_app_level_token_and_is_never_repeated() -> None:
    token = Settings.from_env({"SLACK_APP_TOKEN": " xapp-1-A0-123-abc "}).slack_app_token
    assert token is not None and token.get_secret_value() == "xapp-1-A0-123-abc"
    assert Settings.from_env({}).slack_app_token is None
    with pytest.raises(SettingsError) as caught:
        Settings.from_env({"SLACK_APP_TOKEN": "xoxb-1-bot-token"})
    (problem,) = caught.value.problems
    assert problem.startswith("SLACK_APP_TOKEN: an app-level token starts with xapp-")
    assert "a bot token (xoxb-…)" in problem and "connections:write" in problem
    assert "xoxb-1-bot-token" not in problem
