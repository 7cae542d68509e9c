from __future__ import annotations

from bridge.settings import Settings, normalise_database_url, sqlite_on_ephemeral_disk
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
