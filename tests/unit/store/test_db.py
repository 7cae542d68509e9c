"""What a PostgreSQL URL's libpq-style options become for asyncpg, decided without a database."""

from __future__ import annotations

import pytest

from bridge.store.db import _driver_options

NEON = "postgresql+asyncpg://u:p@ep-1-pooler.eu.aws.neon.tech/db"


def test_sslmode_becomes_asyncpgs_ssl_argument_and_other_options_stay() -> None:
    url, connect_args = _driver_options(f"{NEON}?sslmode=require&application_name=bridge")
    assert (url, connect_args) == (f"{NEON}?application_name=bridge", {"ssl": "require"})
    assert _driver_options(f"{NEON}?sslmode=disable") == (NEON, {})


@pytest.mark.parametrize("binding", ["prefer", "disable"])
def test_a_channel_binding_that_allows_none_is_dropped_as_asyncpg_binds_none(binding: str) -> None:
    url, connect_args = _driver_options(f"{NEON}?sslmode=require&channel_binding={binding}")
    assert (url, connect_args) == (NEON, {"ssl": "require"})


def test_a_required_channel_binding_is_never_dropped_silently() -> None:
    with pytest.raises(ValueError, match="channel_binding=require"):
        _driver_options(f"{NEON}?sslmode=require&channel_binding=require")


def test_sqlite_urls_are_left_as_they_are() -> None:
    assert _driver_options("sqlite+aiosqlite:///x.db?mode=ro") == (
        "sqlite+aiosqlite:///x.db?mode=ro",
        {},
    )
