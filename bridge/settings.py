"""The process environment (12-factor), read once at start-up."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from pydantic import SecretStr

DEFAULT_CONFIG = Path("config/bridge.yaml")
DEFAULT_DATABASE_URL = "sqlite:///smsbridge.db"
DEFAULT_JOB_LEASE = 60.0  # seconds; a dead worker's jobs wait this long on PostgreSQL
DEFAULT_SMSTOOLS_API_URL = "https://api.smsgatewayapi.com/v1"

# Every variable `Settings.from_env` reads. app.json describes each one, and a test keeps this
# tuple, the code below and the deployment files in step.
VARIABLES = (
    "BRIDGE_CONFIG",
    "DATABASE_URL",
    "SMSTOOLS_WEBHOOK_TOKEN",
    "SLACK_BOT_TOKEN",
    "SLACK_API_URL",
    "TELEGRAM_BOT_TOKEN",
    "TELEGRAM_API_URL",
    "PORT",
    "BRIDGE_PUBLIC_URL",
    "BRIDGE_WORKER",
    "SMSTOOLS_WEBHOOK_SECRET",
    "BRIDGE_JOB_LEASE",
    "SMSTOOLS_API_URL",
    "SMSTOOLS_CLIENT_ID",
    "SMSTOOLS_CLIENT_SECRET",
)


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
    smstools_api_url: str = DEFAULT_SMSTOOLS_API_URL
    smstools_client_id: str | None = None
    smstools_client_secret: SecretStr | None = None

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
        return cls(
            config_path=config_path,
            database_url=normalise_database_url(
                env.get("DATABASE_URL", "") or DEFAULT_DATABASE_URL
            ),
            webhook_token=secret("SMSTOOLS_WEBHOOK_TOKEN"),
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
            smstools_api_url=(
                env.get("SMSTOOLS_API_URL", "").strip() or DEFAULT_SMSTOOLS_API_URL
            ).rstrip("/"),
            smstools_client_id=env.get("SMSTOOLS_CLIENT_ID", "").strip() or None,
            smstools_client_secret=secret("SMSTOOLS_CLIENT_SECRET"),
        )


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
