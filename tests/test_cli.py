"""The command line: clear one-line errors instead of tracebacks."""

from __future__ import annotations

import pytest

from bridge.cli import main


@pytest.mark.parametrize("command", ["migrate", "worker", "serve"])
def test_an_unreachable_database_is_one_line_without_the_password(
    command: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("DATABASE_URL", "postgres://bridge:s3cret-pw@127.0.0.1:1/bridge")
    monkeypatch.delenv("BRIDGE_CONFIG", raising=False)
    assert main([command]) == 1
    error = capsys.readouterr().err
    assert "cannot use the database postgresql+asyncpg://bridge:***@127.0.0.1:1/bridge" in error
    assert "s3cret-pw" not in error and "Traceback" not in error


def test_migrate_reports_the_schema_version(
    sqlite_url: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("DATABASE_URL", sqlite_url)
    assert main(["migrate"]) == 0
    assert "database schema at version" in capsys.readouterr().out
    assert main(["migrate"]) == 0
    assert "(was" not in capsys.readouterr().out
