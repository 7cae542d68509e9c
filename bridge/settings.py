"""The process environment (12-factor), read once at start-up and passed down from here.

Nothing else in the bridge reads `os.environ`: the tokens a config names are looked up in
`Settings.environ`, the snapshot taken here.
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import parse_qsl, urlsplit

from pydantic import SecretStr

DEFAULT_CONFIG = Path("config/bridge.yaml")
DEFAULT_DATABASE_URL = "sqlite:///smsbridge.db"
DEFAULT_PORT = 8000
DEFAULT_JOB_LEASE = 60.0  # seconds; a dead worker's jobs wait this long on PostgreSQL
DEFAULT_SMSTOOLS_API_URL = "https://api.smsgatewayapi.com/v1"
# The HTTP edge against slow or too many clients (README: "Timeouts and limits").
DEFAULT_HEADER_TIMEOUT = 10.0  # seconds to receive a request's head (request line, headers)
DEFAULT_BODY_TIMEOUT = 10.0  # seconds to receive a whole body once its headers are in
DEFAULT_KEEP_ALIVE = 5  # seconds an idle connection is kept open between requests
DEFAULT_MAX_CONNECTIONS = 100  # open connections (and requests) before answering 503
MIN_WEBHOOK_TOKEN = 32  # characters
MAX_TELEGRAM_SECRET = 256  # characters Telegram accepts in a webhook's secret_token

# With no config file, these build one (`config.from_environment`): default destinations,
# where alerts and notices go, and the language the bridge writes in.
ENVIRONMENT_CONFIG = (
    "SLACK_CHANNEL",
    "TELEGRAM_CHAT_ID",
    "ALERTS_SLACK_CHANNEL",
    "ALERTS_TELEGRAM_CHAT_ID",
    "BRIDGE_LANGUAGE",
)

# Every variable `Settings.from_env` reads. app.json describes each one, and a test keeps this
# tuple, the code below and the deployment files in step.
VARIABLES = (
    "BRIDGE_CONFIG",
    "DATABASE_URL",
    "SMSTOOLS_WEBHOOK_TOKEN",
    "SLACK_API_URL",
    "TELEGRAM_API_URL",
    "PORT",
    "BRIDGE_PUBLIC_URL",
    "BRIDGE_WORKER",
    "SMSTOOLS_WEBHOOK_SECRET",
    "BRIDGE_JOB_LEASE",
    "SMSTOOLS_API_URL",
    "SMSTOOLS_CLIENT_ID",
    "SMSTOOLS_CLIENT_SECRET",
    "LOG_LEVEL",
    "SLACK_SIGNING_SECRET",
    "TELEGRAM_WEBHOOK_SECRET",
    "BRIDGE_BODY_TIMEOUT",
    "BRIDGE_KEEP_ALIVE",
    "BRIDGE_MAX_CONNECTIONS",
    "METRICS_TOKEN",
    "LOG_FORMAT",
    "DATABASE_DIRECT_URL",
    "TELEGRAM_UPDATES",
    "SLACK_APP_TOKEN",
    "BRIDGE_CONFIG_YAML",
    "BRIDGE_HEADER_TIMEOUT",
    *ENVIRONMENT_CONFIG,
)
LOG_FORMATS = ("json", "text")
TELEGRAM_UPDATES = ("polling", "webhook")


class SettingsError(Exception):
    """The environment cannot be used; `problems` are `VARIABLE: what is wrong` lines."""

    def __init__(self, problems: Sequence[str]) -> None:
        super().__init__("\n".join(problems))
        self.problems = list(problems)


@dataclass(frozen=True)
class Settings:
    """Everything the bridge takes from the environment. Secrets never print."""

    config_path: Path | None  # BRIDGE_CONFIG, else config/bridge.yaml when it exists
    database_url: str
    webhook_token: SecretStr | None
    slack_api_url: str
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
    log_level: str = "INFO"
    slack_signing_secret: SecretStr | None = None  # verifies POST /slack/events
    telegram_webhook_secret: SecretStr | None = None  # X-Telegram-Bot-Api-Secret-Token
    body_timeout: float = DEFAULT_BODY_TIMEOUT
    keep_alive: int = DEFAULT_KEEP_ALIVE
    max_connections: int = DEFAULT_MAX_CONNECTIONS
    metrics_token: SecretStr | None = None  # when set, GET /metrics needs it as a bearer token
    log_format: str = "text"  # json | text; json by default on a PaaS
    # A session-keeping connection (LISTEN, migrations) when DATABASE_URL is a pooler's.
    database_direct_url: str | None = None
    # How agents' Telegram messages arrive: "webhook" (POST /telegram/webhook) or "polling"
    # (getUpdates, no public URL needed); see `_telegram_updates`.
    telegram_updates: str = "webhook"
    # An app-level token (xapp-…): Slack events arrive over Socket Mode (`http.slack_socket`).
    slack_app_token: SecretStr | None = None
    config_yaml: str | None = None  # BRIDGE_CONFIG_YAML: the whole config in one variable
    # The ENVIRONMENT_CONFIG variables that are set, by name: the config when there is none.
    config_variables: Mapping[str, str] = field(default_factory=dict)
    header_timeout: float = DEFAULT_HEADER_TIMEOUT
    # The whole environment as read at start-up, for the token variables the config names.
    environ: Mapping[str, str] = field(default_factory=dict, repr=False)

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        """Read the environment (default: the process's); SettingsError names each bad one."""
        env = dict(os.environ if environ is None else environ)
        problems: list[str] = []

        def secret(name: str) -> SecretStr | None:
            value = env.get(name, "").strip()
            return SecretStr(value) if value else None

        port, lease = _port(env, problems), _lease(env, problems)
        webhook_token = secret("SMSTOOLS_WEBHOOK_TOKEN")
        _check_webhook_token(webhook_token, problems)
        telegram_secret = secret("TELEGRAM_WEBHOOK_SECRET")
        problems.extend(_telegram_secret_problems(telegram_secret))
        slack_app_token = secret("SLACK_APP_TOKEN")
        problems.extend(_slack_app_token_problems(slack_app_token))
        header_timeout, body_timeout, keep_alive, max_connections = _edge_limits(env, problems)
        ephemeral_disk = next((name for name in _EPHEMERAL_DISK_MARKERS if env.get(name)), None)
        log_format = _log_format(env, ephemeral_disk, problems)
        telegram_updates = _telegram_updates(env, problems)
        config_yaml = _config_yaml(env, problems)
        public_url = _public_url(env, problems)
        if problems:
            raise SettingsError(problems)
        slack_api_url, telegram_api_url, smstools_api_url = _api_urls(env)
        return cls(
            config_path=None if config_yaml is not None else _config_path(env),
            database_url=normalise_database_url(
                env.get("DATABASE_URL", "") or DEFAULT_DATABASE_URL
            ),
            webhook_token=webhook_token,
            slack_api_url=slack_api_url,
            telegram_api_url=telegram_api_url,
            port=int(port),
            public_url=public_url,
            run_worker=env.get("BRIDGE_WORKER", "1").strip().lower() not in ("0", "false", "no"),
            webhook_secret=secret("SMSTOOLS_WEBHOOK_SECRET"),
            job_lease=lease,
            ephemeral_disk=ephemeral_disk,
            smstools_api_url=smstools_api_url,
            smstools_client_id=env.get("SMSTOOLS_CLIENT_ID", "").strip() or None,
            smstools_client_secret=secret("SMSTOOLS_CLIENT_SECRET"),
            log_level=env.get("LOG_LEVEL", "").strip().upper() or "INFO",
            slack_signing_secret=secret("SLACK_SIGNING_SECRET"),
            telegram_webhook_secret=telegram_secret,
            body_timeout=body_timeout,
            keep_alive=int(keep_alive),
            max_connections=int(max_connections),
            metrics_token=secret("METRICS_TOKEN"),
            log_format=log_format,
            database_direct_url=_direct_database_url(env),
            telegram_updates=telegram_updates,
            slack_app_token=slack_app_token,
            config_yaml=config_yaml,
            config_variables={
                name: env[name].strip() for name in ENVIRONMENT_CONFIG if env.get(name, "").strip()
            },
            header_timeout=header_timeout,
            environ=env,
        )

    @classmethod
    def for_migrations(cls, environ: Mapping[str, str] | None = None) -> Settings:
        """Only what `smsbridge migrate` needs: the database URLs. A release phase must not fail
        on the rest of the environment (a config still to be written, a token still to be
        pasted); SettingsError only for the database variables."""
        env = dict(os.environ if environ is None else environ)
        return cls(
            config_path=None,
            database_url=normalise_database_url(
                env.get("DATABASE_URL", "") or DEFAULT_DATABASE_URL
            ),
            webhook_token=None,
            slack_api_url="",
            telegram_api_url="",
            port=DEFAULT_PORT,
            public_url=None,
            run_worker=False,
            database_direct_url=_direct_database_url(env),
            environ=env,
        )


def _config_path(env: Mapping[str, str]) -> Path | None:
    """BRIDGE_CONFIG, else the default config file when there is one."""
    config = env.get("BRIDGE_CONFIG", "").strip()
    if config:
        return Path(config)
    return DEFAULT_CONFIG if DEFAULT_CONFIG.is_file() else None


def _public_url(env: Mapping[str, str], problems: list[str]) -> str | None:
    """BRIDGE_PUBLIC_URL without a trailing slash; anything but an http(s) address is a problem,
    since the webhook URLs built on it would be broken."""
    raw = env.get("BRIDGE_PUBLIC_URL", "").strip()
    if not raw:
        return None
    parts = urlsplit(raw)
    if parts.scheme not in ("https", "http") or not parts.hostname:
        problems.append(
            f"BRIDGE_PUBLIC_URL: {raw!r} is not an address the bridge can build webhook URLs "
            "on; give it with its scheme, like https://bridge.example.com (http:// only for "
            "a local test)"
        )
        return None
    return raw.rstrip("/")


def _port(env: Mapping[str, str], problems: list[str]) -> float:
    port = _number(env, "PORT", float(DEFAULT_PORT), problems, "a port number from 1 to 65535")
    if not (port.is_integer() and 1 <= port <= 65535):
        problems.append(f"PORT: {env['PORT'].strip()!r} is not a port number from 1 to 65535")
    return port


def _lease(env: Mapping[str, str], problems: list[str]) -> float:
    lease = _number(env, "BRIDGE_JOB_LEASE", DEFAULT_JOB_LEASE, problems, "seconds, like 60")
    if not (lease > 0 and math.isfinite(lease)):
        problems.append("BRIDGE_JOB_LEASE: a job lease is a number of seconds above 0")
    return lease


def _check_webhook_token(webhook_token: SecretStr | None, problems: list[str]) -> None:
    token_length = len(webhook_token.get_secret_value()) if webhook_token else None
    if token_length is not None and token_length < MIN_WEBHOOK_TOKEN:
        problems.append(
            f"SMSTOOLS_WEBHOOK_TOKEN: {token_length} characters; it is the only secret "
            f"guarding the webhook, so it needs at least {MIN_WEBHOOK_TOKEN}. Make one with: "
            "python3 -c 'import secrets; print(secrets.token_urlsafe(32))' (or unset it and "
            "the bridge generates one)"
        )


def _api_urls(env: Mapping[str, str]) -> tuple[str, str, str]:
    """Where Slack's, Telegram's and Smstools' APIs are (the platforms', unless a test or a
    proxy says otherwise)."""
    slack = env.get("SLACK_API_URL", "").strip() or "https://slack.com/api/"
    telegram = env.get("TELEGRAM_API_URL", "").strip() or "https://api.telegram.org"
    smstools = env.get("SMSTOOLS_API_URL", "").strip() or DEFAULT_SMSTOOLS_API_URL
    return slack, telegram.rstrip("/"), smstools.rstrip("/")


def _config_yaml(env: Mapping[str, str], problems: list[str]) -> str | None:
    """BRIDGE_CONFIG_YAML, the whole config in one variable; never beside BRIDGE_CONFIG."""
    config_yaml = env.get("BRIDGE_CONFIG_YAML", "").strip() or None
    if config_yaml is not None and env.get("BRIDGE_CONFIG", "").strip():
        problems.append(
            "BRIDGE_CONFIG and BRIDGE_CONFIG_YAML are both set: keep the one that holds "
            "the config (a file's path, or the YAML itself) and unset the other"
        )
    return config_yaml


def _edge_limits(env: Mapping[str, str], problems: list[str]) -> tuple[float, float, float, float]:
    """The head and body timeouts, keep-alive and connection limit of the HTTP edge."""
    header_timeout = _positive(
        env, "BRIDGE_HEADER_TIMEOUT", DEFAULT_HEADER_TIMEOUT, problems, "seconds above 0, like 10"
    )
    body_timeout = _positive(
        env, "BRIDGE_BODY_TIMEOUT", DEFAULT_BODY_TIMEOUT, problems, "seconds above 0, like 10"
    )
    keep_alive = _positive(
        env,
        "BRIDGE_KEEP_ALIVE",
        DEFAULT_KEEP_ALIVE,
        problems,
        "whole seconds above 0, like 5",
        whole=True,
    )
    max_connections = _positive(
        env,
        "BRIDGE_MAX_CONNECTIONS",
        DEFAULT_MAX_CONNECTIONS,
        problems,
        "a whole number above 0, like 100",
        whole=True,
    )
    return header_timeout, body_timeout, keep_alive, max_connections


def _log_format(env: Mapping[str, str], ephemeral_disk: str | None, problems: list[str]) -> str:
    """LOG_FORMAT; json by default on a PaaS (`ephemeral_disk`), text elsewhere."""
    log_format = env.get("LOG_FORMAT", "").strip().lower()
    if not log_format:
        return "json" if ephemeral_disk else "text"
    if log_format not in LOG_FORMATS:
        problems.append(f"LOG_FORMAT: {log_format!r} is not json or text")
    return log_format


def _telegram_updates(env: Mapping[str, str], problems: list[str]) -> str:
    """TELEGRAM_UPDATES. Unset, it is "webhook" when TELEGRAM_WEBHOOK_SECRET or
    BRIDGE_PUBLIC_URL says a webhook is meant, else "polling": without a public URL, polling
    is the way an agent's answer reaches the bridge at all."""
    mode = env.get("TELEGRAM_UPDATES", "").strip().lower()
    if not mode:
        meant = (
            env.get("TELEGRAM_WEBHOOK_SECRET", "").strip()
            or env.get("BRIDGE_PUBLIC_URL", "").strip()
        )
        return "webhook" if meant else "polling"
    if mode not in TELEGRAM_UPDATES:
        problems.append(f"TELEGRAM_UPDATES: {mode!r} is not polling or webhook")
    return mode


def _number(
    env: Mapping[str, str], name: str, default: float, problems: list[str], expected: str
) -> float:
    """A numeric variable, or `default` when unset; a bad value is one problem line."""
    raw = env.get(name, "").strip()
    if not raw:
        return default
    try:
        return float(raw)
    except ValueError:
        problems.append(f"{name}: {raw!r} is not a number ({expected})")
        return default


def _positive(
    env: Mapping[str, str],
    name: str,
    default: float,
    problems: list[str],
    expected: str,
    *,
    whole: bool = False,
) -> float:
    """A numeric variable above 0 (a whole number if `whole`), or `default` when unset; a bad
    value is one problem line."""
    value = _number(env, name, default, problems, expected)
    if value <= 0 or not math.isfinite(value) or (whole and not float(value).is_integer()):
        problems.append(f"{name}: {env[name].strip()!r} is not {expected}")
        return default
    return value


_TELEGRAM_SECRET_CHARACTERS = re.compile(r"[A-Za-z0-9_-]+")


def _telegram_secret_problems(secret: SecretStr | None) -> list[str]:
    """TELEGRAM_WEBHOOK_SECRET alone guards a path that sends SMS: at most one line saying why
    it cannot be used (characters Telegram refuses, too long for it, or too short to guard)."""
    if secret is None:
        return []  # generated and kept in the database
    value, name = secret.get_secret_value(), "TELEGRAM_WEBHOOK_SECRET"
    if not _TELEGRAM_SECRET_CHARACTERS.fullmatch(value):
        return [f"{name}: Telegram accepts only A-Z a-z 0-9 _ - in a webhook secret"]
    if len(value) > MAX_TELEGRAM_SECRET:
        return [f"{name}: {len(value)} characters; Telegram accepts {MAX_TELEGRAM_SECRET} at most"]
    if len(value) < MIN_WEBHOOK_TOKEN:
        return [
            f"{name}: {len(value)} characters; it alone guards the path that sends SMS, so it "
            f"needs at least {MIN_WEBHOOK_TOKEN}. Make one with: python3 -c 'import secrets; "
            "print(secrets.token_urlsafe(32))' (or unset it and the bridge generates one)"
        ]
    return []


def _slack_app_token_problems(token: SecretStr | None) -> list[str]:
    """SLACK_APP_TOKEN must be an app-level token: at most one line saying what it is instead
    (the value itself is never repeated)."""
    if token is None or token.get_secret_value().startswith("xapp-"):
        return []
    looks_like = (
        "a bot token (xoxb-…)" if token.get_secret_value().startswith("xoxb-") else "not one"
    )
    return [
        f"SLACK_APP_TOKEN: an app-level token starts with xapp- and this is {looks_like}; "
        "make one under Basic Information → App-Level Tokens with the scope connections:write"
    ]


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


def normalise_database_url(url: str, variable: str = "DATABASE_URL") -> str:
    """Map the URLs PaaS add-ons hand out onto SQLAlchemy's async drivers.

    `postgres://` and `postgresql://` become `postgresql+asyncpg://`; `sqlite:///x.db`
    becomes `sqlite+aiosqlite:///x.db`. `sslmode=require` is translated by the store. Any
    other database is a SettingsError naming `variable` and what it accepts (the URL itself
    is not repeated: it may hold a password).
    """
    url = url.strip()
    for prefix in ("postgres://", "postgresql://"):
        if url.startswith(prefix):
            _check_channel_binding(url, variable)
            return "postgresql+asyncpg://" + url[len(prefix) :]
    if url.startswith("sqlite://"):
        return "sqlite+aiosqlite://" + url[len("sqlite://") :]
    if url.startswith("postgresql+asyncpg://"):
        _check_channel_binding(url, variable)
        return url
    if url.startswith("sqlite+aiosqlite://"):
        return url
    scheme = url.split("://", 1)[0] + "://" if "://" in url else "a URL without a scheme"
    raise SettingsError(
        [
            f"{variable}: {scheme} is not a database the bridge can use; it accepts "
            "sqlite:///path/to/file.db and postgresql://user:password@host:5432/database"
        ]
    )


def _check_channel_binding(url: str, variable: str) -> None:
    """libpq's `channel_binding` (Neon's URLs carry `require`): asyncpg binds no channel
    (SCRAM-SHA-256 only, never -PLUS), so `prefer` and `disable` mean what it does anyway
    (the store drops them) and `require` is refused rather than silently weakened."""
    for key, value in parse_qsl(urlsplit(url).query, keep_blank_values=True):
        if key != "channel_binding" or value in ("prefer", "disable"):
            continue
        if value != "require":
            problem = f"channel_binding={value} is not one of disable, prefer, require"
        else:
            problem = (
                "channel_binding=require cannot be honoured: the bridge's PostgreSQL driver "
                "(asyncpg) does not do channel binding, so it would connect without it; "
                "remove channel_binding from the URL or set channel_binding=prefer (what "
                "that gives up: docs/postgres-poolers.md)"
            )
        raise SettingsError([f"{variable}: {problem}"])


def _direct_database_url(env: Mapping[str, str]) -> str | None:
    """DATABASE_DIRECT_URL, normalised, or None when unset."""
    raw = env.get("DATABASE_DIRECT_URL", "").strip()
    if not raw:
        return None
    url = normalise_database_url(raw, "DATABASE_DIRECT_URL")
    if not url.startswith("postgresql"):
        raise SettingsError(["DATABASE_DIRECT_URL: a direct URL is postgresql://…"])
    return url
