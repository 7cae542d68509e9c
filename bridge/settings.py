"""The process environment (12-factor), read once at start-up."""

from __future__ import annotations

import math
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

from pydantic import SecretStr

Number = TypeVar("Number", int, float)

DEFAULT_CONFIG = Path("config/bridge.yaml")
DEFAULT_DATABASE_URL = "sqlite:///smsbridge.db"
DEFAULT_JOB_LEASE = 60.0  # seconds; a dead worker's jobs wait this long on PostgreSQL
# The HTTP edge against slow or too many clients (README: "Timeouts and limits").
DEFAULT_BODY_TIMEOUT = 10.0  # seconds to receive a whole body once its headers are in
DEFAULT_KEEP_ALIVE = 5  # seconds an idle connection is kept open between requests
DEFAULT_MAX_CONNECTIONS = 100  # open connections (and requests) before answering 503
MIN_WEBHOOK_TOKEN = 32  # characters


class SettingsError(Exception):
    """An environment variable cannot be used; the message names it and says what to do."""


@dataclass(frozen=True)
class Settings:
    """Everything the bridge takes from the environment. Secrets never print."""

    config_path: Path | None
    database_url: str
    webhook_token: SecretStr | None
    slack_bot_token: SecretStr | None
    slack_api_url: str
    telegram_bot_token: SecretStr | None
    telegram_api_url: str
    port: int
    public_url: str | None
    run_worker: bool
    webhook_secret: SecretStr | None = None
    job_lease: float = DEFAULT_JOB_LEASE
    ephemeral_disk: str | None = None
    body_timeout: float = DEFAULT_BODY_TIMEOUT
    keep_alive: int = DEFAULT_KEEP_ALIVE
    max_connections: int = DEFAULT_MAX_CONNECTIONS

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        env = os.environ if environ is None else environ

        def secret(name: str) -> SecretStr | None:
            value = env.get(name, "").strip()
            return SecretStr(value) if value else None

        config = env.get("BRIDGE_CONFIG", "").strip()
        if config:
            config_path: Path | None = Path(config)
        else:
            config_path = DEFAULT_CONFIG if DEFAULT_CONFIG.is_file() else None
        port = env.get("PORT", "").strip()
        webhook_token = secret("SMSTOOLS_WEBHOOK_TOKEN")
        token_length = len(webhook_token.get_secret_value()) if webhook_token else None
        if token_length is not None and token_length < MIN_WEBHOOK_TOKEN:
            raise SettingsError(
                f"SMSTOOLS_WEBHOOK_TOKEN has {token_length} characters; it is the only "
                f"secret guarding the webhook, so it needs at least {MIN_WEBHOOK_TOKEN}. Make one "
                "with: python3 -c 'import secrets; print(secrets.token_urlsafe(32))' (or unset "
                "it and the bridge generates one)"
            )
        return cls(
            config_path=config_path,
            database_url=normalise_database_url(
                env.get("DATABASE_URL", "") or DEFAULT_DATABASE_URL
            ),
            webhook_token=webhook_token,
            slack_bot_token=secret("SLACK_BOT_TOKEN"),
            slack_api_url=env.get("SLACK_API_URL", "").strip() or "https://slack.com/api/",
            telegram_bot_token=secret("TELEGRAM_BOT_TOKEN"),
            telegram_api_url=(
                env.get("TELEGRAM_API_URL", "").strip() or "https://api.telegram.org"
            ).rstrip("/"),
            port=int(port) if port.isdigit() else 8000,
            public_url=env.get("BRIDGE_PUBLIC_URL", "").strip().rstrip("/") or None,
            run_worker=env.get("BRIDGE_WORKER", "1").strip().lower() not in ("0", "false", "no"),
            webhook_secret=secret("SMSTOOLS_WEBHOOK_SECRET"),
            job_lease=float(env.get("BRIDGE_JOB_LEASE", "").strip() or DEFAULT_JOB_LEASE),
            ephemeral_disk=next((name for name in _EPHEMERAL_DISK_MARKERS if env.get(name)), None),
            body_timeout=_positive(env, "BRIDGE_BODY_TIMEOUT", DEFAULT_BODY_TIMEOUT, float),
            keep_alive=_positive(env, "BRIDGE_KEEP_ALIVE", DEFAULT_KEEP_ALIVE, int),
            max_connections=_positive(env, "BRIDGE_MAX_CONNECTIONS", DEFAULT_MAX_CONNECTIONS, int),
        )


def _positive(env: Mapping[str, str], name: str, default: Number, kind: type[Number]) -> Number:
    """A positive number from the environment, or the default when unset."""
    raw = env.get(name, "").strip()
    if not raw:
        return default
    try:
        value = kind(raw)
    except ValueError:
        value = kind(0)
    if not 0 < value < math.inf:
        unit = "a whole number" if kind is int else "a number"
        raise SettingsError(f"{name}={raw!r}: expected {unit} above 0")
    return value


# Variables that PaaS set on machines whose disk is wiped at every deploy or restart.
_EPHEMERAL_DISK_MARKERS = ("DYNO", "RENDER_SERVICE_ID", "RAILWAY_ENVIRONMENT")


def sqlite_on_ephemeral_disk(settings: Settings) -> str | None:
    """A loud warning when SQLite would lose every stored message at the next restart."""
    if settings.ephemeral_disk is None or not settings.database_url.startswith("sqlite"):
        return None
    return (
        f"DATABASE_URL is SQLite but {settings.ephemeral_disk} is set: this platform's disk is "
        "wiped on restart, taking queued messages and thread mappings with it. Attach a "
        "PostgreSQL add-on and set DATABASE_URL."
    )


def normalise_database_url(url: str) -> str:
    """Map the URLs PaaS add-ons hand out onto SQLAlchemy's async drivers.

    `postgres://` and `postgresql://` become `postgresql+asyncpg://`; `sqlite:///x.db`
    becomes `sqlite+aiosqlite:///x.db`. `sslmode=require` is translated by the store.
    """
    url = url.strip()
    for prefix in ("postgres://", "postgresql://"):
        if url.startswith(prefix):
            return "postgresql+asyncpg://" + url[len(prefix) :]
    if url.startswith("sqlite://"):
        return "sqlite+aiosqlite://" + url[len("sqlite://") :]
    return url
