from __future__ import annotations

import pytest

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
    tuned = Settings.from_env(
        {"BRIDGE_BODY_TIMEOUT": "2.5", "BRIDGE_KEEP_ALIVE": "30", "BRIDGE_MAX_CONNECTIONS": "20"}
    )
    assert (tuned.body_timeout, tuned.keep_alive, tuned.max_connections) == (2.5, 30, 20)


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("BRIDGE_BODY_TIMEOUT", "0"),
        ("BRIDGE_BODY_TIMEOUT", "soon"),
        ("BRIDGE_BODY_TIMEOUT", "nan"),
        ("BRIDGE_KEEP_ALIVE", "1.5"),
        ("BRIDGE_MAX_CONNECTIONS", "-3"),
    ],
)
def test_a_bad_limit_is_one_error_naming_the_variable(name: str, value: str) -> None:
    with pytest.raises(SettingsError, match=f"^{name}='{value}': expected a"):
        Settings.from_env({name: value})


def test_a_webhook_token_of_32_characters_is_enough_and_31_is_not() -> None:
    assert Settings.from_env({"SMSTOOLS_WEBHOOK_TOKEN": "x" * 32}).webhook_token is not None
    with pytest.raises(SettingsError, match="has 31 characters"):
        Settings.from_env({"SMSTOOLS_WEBHOOK_TOKEN": "x" * 31})
