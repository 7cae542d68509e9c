"""The YAML config, parsed once into typed, validated objects.

Every problem is reported as `<file>: <key>: <what is wrong>`, all of them at once, so an
operator fixes the file in one go. Tokens never live in the file: a destination names the
environment variable that holds its token.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal, TypeVar

import yaml
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, ValidationError

from bridge import phones
from bridge.chat import limits
from bridge.phones import international

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)\s*$")
_UNIT_SECONDS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_duration(value: object) -> float:
    """`30s`, `5m`, `4h`, `7d` (or a number of seconds) → seconds."""
    if isinstance(value, bool):
        raise ValueError("expected a duration like 30s, 5m, 4h or 7d")
    if isinstance(value, int | float):
        seconds = float(value)
    else:
        match = _DURATION.match(str(value))
        if not match:
            raise ValueError(f"{value!r} is not a duration like 30s, 5m, 4h or 7d")
        seconds = float(match.group(1)) * _UNIT_SECONDS[match.group(2)]
    if seconds < 0:
        raise ValueError("a duration cannot be negative")
    return seconds


Duration = Annotated[float, BeforeValidator(parse_duration)]


_RATE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*/\s*(s|m|h)\s*$")
_PER = {"s": 1.0, "m": 60.0, "h": 3600.0}


def parse_rate(value: object) -> float | None:
    """`1/s`, `20/m`, `500/h` → posts per second; `unlimited` → None."""
    if isinstance(value, str) and value.strip().lower() == "unlimited":
        return None
    match = _RATE.match(str(value))
    if not match or float(match.group(1)) <= 0:
        raise ValueError(f"{value!r} is not a rate like 1/s, 20/m or unlimited")
    return float(match.group(1)) / _PER[match.group(2)]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class SlackTarget(_Strict):
    channel: str = Field(min_length=1)
    token_env: str = "SLACK_BOT_TOKEN"


class TelegramTarget(_Strict):
    chat_id: int
    topics: bool = False
    token_env: str = "TELEGRAM_BOT_TOKEN"


class ConsoleTarget(_Strict):
    pass


DEFAULT_STOP_WORDS = ("STOP", "STOPP", "UNSUBSCRIBE")


class RepliesSpec(_Strict):
    prefix: str = "note:"  # a message starting with it stays internal
    allow: list[str | int] | None = None  # user ids that may answer; None: everyone
    stop_words: list[str] = list(DEFAULT_STOP_WORDS)
    max_parts: int = Field(default=3, ge=1, le=10)  # 3 GSM-7 parts: the gateway's 459 chars


class DestinationSpec(_Strict):
    slack: SlackTarget | None = None
    telegram: TelegramTarget | None = None
    console: ConsoleTarget | None = None
    replies: bool | RepliesSpec = False
    max_rate: Annotated[float | None, BeforeValidator(parse_rate)] = -1.0  # -1: the platform's
    combine: bool = True


class MatchSpec(_Strict):
    receiver: str | int | None = None
    type: Literal["sms", "whatsapp"] | None = None


class RouteSpec(_Strict):
    match: MatchSpec = MatchSpec()
    to: list[str] = Field(min_length=1)


class ThreadsSpec(_Strict):
    idle_after: Duration = 7 * 86400.0


DAY = 86400.0


class RetentionSpec(_Strict):
    raw_bodies: Duration = 30 * DAY
    content: Duration = 30 * DAY
    done_jobs: Duration = 7 * DAY
    dead_letters: Duration = 30 * DAY


Mention = str | dict[Literal["slack", "telegram", "console"], str]

# Delivery codes that count as failures: NOT DELIVERED and the two REJECTED codes.
DEFAULT_ON_CODES = frozenset({2, 4, 5})
# A group of per-recipient failures pages on-call (carries the mention) above this many.
DEFAULT_PAGE_ABOVE = 20
# What a group of per-recipient failures that does not page does: posted to on-call without
# a mention, or only noted in the customer's live thread.
LoneFailures = Literal["post", "note"]


class AlertRouteSpec(_Strict):
    match: dict[str, list[str | int] | str | int]
    to: list[str] | None = None
    group_by: list[str] | None = None
    group_wait: Duration | None = None
    group_interval: Duration | None = None
    repeat_interval: Duration | None = None
    resolve_after: Duration | None = None
    page_above: int | None = Field(None, ge=0)
    lone_failures: LoneFailures | None = None
    mention: Mention | None = None


class AlertsSpec(_Strict):
    to: list[str] = Field(min_length=1)
    on_codes: list[int] = sorted(DEFAULT_ON_CODES)
    group_by: list[str] = ["delivery_code_detail", "sender"]
    group_wait: Duration = 30.0
    group_interval: Duration = 300.0
    repeat_interval: Duration = 4 * 3600.0
    resolve_after: Duration | None = None  # default: the route's group_interval
    page_above: int = Field(DEFAULT_PAGE_ABOVE, ge=0)
    lone_failures: LoneFailures = "post"
    mention: Mention | None = None
    routes: list[AlertRouteSpec] = []
    low_balance: float | None = Field(default=None, ge=0)  # Smstools credit that alerts


class ConfigSpec(_Strict):
    destinations: dict[str, DestinationSpec] = Field(min_length=1)
    routes: list[RouteSpec] = []
    default: list[str] = []
    lines: dict[str | int, str] = {}
    threads: ThreadsSpec = ThreadsSpec()
    alerts: AlertsSpec | None = None
    retention: RetentionSpec = RetentionSpec()
    balance_check_interval: Duration = 15 * 60.0


@dataclass(frozen=True)
class Retention:
    """How long stored data is kept (seconds). Content is erased in place, leaving the record
    that an event or status existed; what only served delivery is deleted."""

    raw_bodies: float = 30 * DAY  # webhook bodies exactly as they arrived
    content: float = 30 * DAY  # message text and numbers in events, statuses, alert groups,
    # chat message links; what agents wrote, settled replies; conversations once no longer live
    done_jobs: float = 7 * DAY  # delivered outbox jobs
    dead_letters: float = 30 * DAY  # jobs that failed for good, with their message

    def describe(self) -> str:
        return (
            f"raw bodies {format_duration(self.raw_bodies)}, message content "
            f"{format_duration(self.content)}, done jobs {format_duration(self.done_jobs)}, "
            f"dead letters {format_duration(self.dead_letters)}"
        )


def format_duration(seconds: float) -> str:
    """`30d`, `4h`, `90s`: the largest unit that divides it."""
    for unit in ("d", "h", "m", "s"):
        if seconds and seconds % _UNIT_SECONDS[unit] == 0:
            return f"{seconds / _UNIT_SECONDS[unit]:g}{unit}"
    return f"{seconds:g}s"


@dataclass(frozen=True)
class Replies:
    """Agents may answer the customer from this destination's threads."""

    prefix: str = "note:"
    allow: frozenset[str] | None = None  # Slack / Telegram user ids; None: every member
    stop_words: frozenset[str] = frozenset(DEFAULT_STOP_WORDS)  # upper case
    max_parts: int = 3


@dataclass(frozen=True)
class Destination:
    """A named place messages go to. `kind` is slack, telegram or console."""

    name: str
    kind: Literal["slack", "telegram", "console"]
    target: SlackTarget | TelegramTarget | ConsoleTarget
    max_rate: float | None = None  # posts per second; None: unlimited
    replies: Replies | None = None  # None: one-way
    # When it is behind, a conversation's waiting messages go out as one post (`combining`).
    combine: bool = True

    def describe(self) -> str:
        separately = ", one post per message even when behind" if not self.combine else ""
        if isinstance(self.target, SlackTarget):
            return f"slack channel {self.target.channel}{separately}"
        if isinstance(self.target, TelegramTarget):
            topics = ", one forum topic per conversation" if self.target.topics else ""
            return f"telegram chat {self.target.chat_id}{topics}{separately}"
        return f"console (stdout){separately}"


@dataclass(frozen=True)
class Route:
    """Inbox messages whose receiver (E.164 digits, exact or prefix) and type match go `to`."""

    receiver: str | None
    receiver_is_prefix: bool
    type: str | None
    to: tuple[str, ...]

    def matches(self, receiver: str, message_type: str) -> bool:
        if self.type is not None and self.type != message_type:
            return False
        if self.receiver is None:
            return True
        if self.receiver_is_prefix:
            return receiver.startswith(self.receiver)
        return receiver == self.receiver

    def describe(self) -> str:
        conditions = []
        if self.receiver is not None:
            shown = self.receiver + "*" if self.receiver_is_prefix else international(self.receiver)
            conditions.append(f"receiver {shown}")
        if self.type is not None:
            conditions.append(f"type {self.type}")
        return (" and ".join(conditions) or "everything") + " → " + ", ".join(self.to)


# What a delivery failure is labelled with, for alert grouping (`group_by`) and matchers.
ALERT_LABELS = ("delivery_code", "delivery_code_detail", "sender", "receiver")


@dataclass(frozen=True)
class AlertRoute:
    """Where failures with matching labels are told, and how they are grouped and paced."""

    matchers: Mapping[str, frozenset[str]]  # label → accepted values; empty: everything
    to: tuple[str, ...]
    group_by: tuple[str, ...]
    group_wait: float
    group_interval: float
    repeat_interval: float
    mention: Mapping[str, str]  # destination kind → trusted markup that pages someone
    page_above: int = DEFAULT_PAGE_ABOVE  # per-recipient failures page beyond this many
    resolve_after: float | None = None  # quiet this long → resolved; None: group_interval
    lone_failures: LoneFailures = "post"  # "note": not posted until the group pages

    @property
    def quiet_after(self) -> float:
        """How long a group must have no new failure before its alert says it is over."""
        return self.group_interval if self.resolve_after is None else self.resolve_after

    def matches(self, labels: Mapping[str, str]) -> bool:
        return all(labels.get(label, "") in values for label, values in self.matchers.items())

    def describe(self) -> str:
        conditions = " and ".join(
            f"{label} in [{', '.join(sorted(values))}]" for label, values in self.matchers.items()
        )
        lone = (
            "lone failures posted without a mention"
            if self.lone_failures == "post"
            else "lone failures only noted in the customer's thread"
        )
        return (
            f"{conditions or 'every failure'} → {', '.join(self.to)} "
            f"(group by {', '.join(self.group_by) or 'nothing'}; wait {self.group_wait:g}s, "
            f"interval {self.group_interval:g}s, repeat {self.repeat_interval:g}s, "
            f"quiet after {self.quiet_after:g}s; pages for account-wide codes or "
            f"above {self.page_above}; {lone})"
        )


@dataclass(frozen=True)
class Alerts:
    """Delivery failures (`on_codes`) become grouped alerts; the first matching route wins."""

    on_codes: frozenset[int]
    routes: tuple[AlertRoute, ...]  # the configured routes, then the top level (matches all)
    low_balance: float | None = None  # tell on-call when the Smstools credit falls under it

    @property
    def top(self) -> AlertRoute:
        """The top level of the alerts section: its destinations, mention and intervals."""
        return self.routes[-1]

    def route_for(self, labels: Mapping[str, str]) -> AlertRoute:
        return next(route for route in self.routes if route.matches(labels))


@dataclass(frozen=True)
class Config:
    source: str
    destinations: Mapping[str, Destination]
    routes: Sequence[Route]
    default: tuple[str, ...]
    lines: Mapping[str, str]
    idle_after: float
    alerts: Alerts | None = None
    retention: Retention = Retention()
    balance_check_interval: float = 15 * 60.0  # how often the Smstools credit is read


class ConfigError(Exception):
    """The config cannot be used; `problems` are `file: key: what is wrong` lines."""

    def __init__(self, problems: Sequence[str]) -> None:
        super().__init__("\n".join(problems))
        self.problems = list(problems)


BUILTIN: dict[str, Any] = {
    "destinations": {"console": {"console": {}}},
    "default": ["console"],
}


def load(path: Path | None, environ: Mapping[str, str]) -> Config:
    """Read and validate the config at `path` (None: the built-in console-only config)."""
    if path is None:
        return build(BUILTIN, "built-in config", environ)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as error:
        raise ConfigError([f"{path}: cannot read the config: {error.strerror}"]) from None
    try:
        document = yaml.safe_load(text)
    except yaml.YAMLError as error:
        raise ConfigError([f"{path}: not valid YAML: {error}"]) from None
    if not isinstance(document, dict):
        raise ConfigError([f"{path}: the config must be a mapping with a 'destinations' key"])
    return build(document, str(path), environ)


def _key(location: Sequence[int | str]) -> str:
    key = ""
    for part in location:
        key += f"[{part}]" if isinstance(part, int) else (f".{part}" if key else str(part))
    return key or "(top level)"


def build(document: Mapping[str, Any], source: str, environ: Mapping[str, str]) -> Config:
    """Validate a parsed document; collect every problem before refusing."""
    try:
        spec = ConfigSpec.model_validate(document)
    except ValidationError as error:
        schema_problems = []
        for issue in error.errors():
            location = [part for part in issue["loc"] if part not in ("str", "int")]
            message = issue["msg"].removeprefix("Value error, ")
            if issue["type"] == "extra_forbidden":
                message = "unknown key"
            schema_problems.append(f"{source}: {_key(location)}: {message}")
        raise ConfigError(schema_problems) from None

    problems: list[str] = []
    destinations: dict[str, Destination] = {}
    for name, destination in spec.destinations.items():
        chosen = [
            (kind, target)
            for kind, target in (
                ("slack", destination.slack),
                ("telegram", destination.telegram),
                ("console", destination.console),
            )
            if target is not None
        ]
        if len(chosen) != 1:
            problems.append(
                f"{source}: destinations.{name}: give exactly one of slack, telegram or console"
            )
            continue
        kind, target = chosen[0]
        token_env = getattr(target, "token_env", None)
        if token_env is not None and not environ.get(token_env, "").strip():
            problems.append(
                f"{source}: destinations.{name}.{kind}: the environment variable {token_env} "
                "that holds its token is not set"
            )
        max_rate = destination.max_rate
        if max_rate is not None and max_rate < 0:
            max_rate = default_rate(target)
        replies = _replies(destination.replies, kind, f"{source}: destinations.{name}", environ)
        problems.extend(replies[1])
        destinations[name] = Destination(
            name,
            kind,  # type: ignore[arg-type]
            target,
            max_rate,
            replies[0],
            destination.combine,
        )

    def check_names(names: Sequence[str], key: str) -> tuple[str, ...]:
        for index, name in enumerate(names):
            if name not in spec.destinations:
                known = ", ".join(sorted(spec.destinations))
                problems.append(
                    f"{source}: {key}[{index}]: unknown destination {name!r} (known: {known})"
                )
        return tuple(dict.fromkeys(names))

    routes: list[Route] = []
    for index, route in enumerate(spec.routes):
        receiver, is_prefix = None, False
        if route.match.receiver is not None:
            try:
                receiver, is_prefix = _receiver_pattern(str(route.match.receiver))
            except ValueError as error:
                problems.append(f"{source}: routes[{index}].match.receiver: {error}")
        to = check_names(route.to, f"routes[{index}].to")
        routes.append(Route(receiver, is_prefix, route.match.type, to))
    default = check_names(spec.default, "default")

    lines: dict[str, str] = {}
    for number, label in spec.lines.items():
        try:
            lines[phones.parse(str(number))] = label
        except ValueError as error:
            problems.append(f"{source}: lines.{number}: {error}")

    alerts = None
    if spec.alerts is not None:
        alerts = _alerts(spec.alerts, source, destinations, check_names, problems)

    if spec.balance_check_interval < 1:
        problems.append(f"{source}: balance_check_interval: give at least 1s")

    if problems:
        raise ConfigError(problems)
    retention = Retention(**spec.retention.model_dump())
    return Config(
        source,
        destinations,
        routes,
        default,
        lines,
        spec.threads.idle_after,
        alerts,
        retention,
        balance_check_interval=spec.balance_check_interval,
    )


def _alerts(
    spec: AlertsSpec,
    source: str,
    destinations: Mapping[str, Destination],
    check_names: Callable[[Sequence[str], str], tuple[str, ...]],
    problems: list[str],
) -> Alerts:
    """The `alerts` section: routes inherit every setting they do not give from the top."""

    def labels(names: Sequence[str], key: str) -> tuple[str, ...]:
        for index, name in enumerate(names):
            if name not in ALERT_LABELS:
                problems.append(
                    f"{source}: {key}[{index}]: unknown label {name!r} "
                    f"(known: {', '.join(ALERT_LABELS)})"
                )
        return tuple(dict.fromkeys(names))

    def mentions(mention: Mention | None, to: Sequence[str], key: str) -> dict[str, str]:
        if mention is None:
            return {}
        if isinstance(mention, dict):
            return {str(kind): markup for kind, markup in mention.items()}
        for name in to:
            destination = destinations.get(name)
            if destination is not None and destination.kind == "telegram" and "<" in mention:
                problems.append(
                    f"{source}: {key}: {mention!r} is Slack markup but {name!r} is a Telegram "
                    "destination; give one per platform: {slack: '<!subteam^…>', "
                    "telegram: '@name'}"
                )
        return {"slack": mention, "telegram": mention, "console": mention}

    def matchers(match: Mapping[str, object], key: str) -> dict[str, frozenset[str]]:
        result: dict[str, frozenset[str]] = {}
        for label, accepted in match.items():
            values = accepted if isinstance(accepted, list) else [accepted]
            if label not in ALERT_LABELS:
                problems.append(
                    f"{source}: {key}.{label}: unknown label (known: {', '.join(ALERT_LABELS)})"
                )
            elif not values:
                problems.append(f"{source}: {key}.{label}: give at least one value")
            elif label.startswith("delivery_code") and not all(
                str(value).strip().isdigit() for value in values
            ):
                problems.append(f"{source}: {key}.{label}: codes are numbers, like 2000")
            result[label] = frozenset(_label_value(label, str(value)) for value in values)
        return result

    top_to = check_names(spec.to, "alerts.to")
    top = AlertRoute(
        matchers={},
        to=top_to,
        group_by=labels(spec.group_by, "alerts.group_by"),
        group_wait=spec.group_wait,
        group_interval=spec.group_interval,
        repeat_interval=spec.repeat_interval,
        mention=mentions(spec.mention, top_to, "alerts.mention"),
        page_above=spec.page_above,
        resolve_after=spec.resolve_after,
        lone_failures=spec.lone_failures,
    )
    routes = []
    for index, route in enumerate(spec.routes):
        key = f"alerts.routes[{index}]"
        to = check_names(route.to, f"{key}.to") if route.to is not None else top.to
        routes.append(
            AlertRoute(
                matchers=matchers(route.match, f"{key}.match"),
                to=to,
                group_by=(
                    labels(route.group_by, f"{key}.group_by")
                    if route.group_by is not None
                    else top.group_by
                ),
                group_wait=_inherit(route.group_wait, top.group_wait),
                group_interval=_inherit(route.group_interval, top.group_interval),
                repeat_interval=_inherit(route.repeat_interval, top.repeat_interval),
                mention=(
                    mentions(route.mention, to, f"{key}.mention")
                    if route.mention is not None
                    else top.mention
                ),
                page_above=_inherit(route.page_above, top.page_above),
                resolve_after=(
                    route.resolve_after if route.resolve_after is not None else top.resolve_after
                ),
                lone_failures=(
                    route.lone_failures if route.lone_failures is not None else top.lone_failures
                ),
            )
        )
    return Alerts(frozenset(spec.on_codes), (*routes, top), low_balance=spec.low_balance)


# What answering from a platform needs from the environment, beyond the chat token.
_REPLY_VARIABLES = {
    "slack": ("SMSTOOLS_CLIENT_ID", "SMSTOOLS_CLIENT_SECRET", "SLACK_SIGNING_SECRET"),
    "telegram": ("SMSTOOLS_CLIENT_ID", "SMSTOOLS_CLIENT_SECRET"),
}


def _replies(
    spec: bool | RepliesSpec, kind: str, key: str, environ: Mapping[str, str]
) -> tuple[Replies | None, list[str]]:
    """The destination's `replies` setting, and what keeps it from working."""
    if spec is False:
        return None, []
    if kind not in _REPLY_VARIABLES:
        return None, [f"{key}.replies: only Slack and Telegram destinations can answer"]
    spec = RepliesSpec() if spec is True else spec
    missing = [name for name in _REPLY_VARIABLES[kind] if not environ.get(name, "").strip()]
    problems = []
    if missing:
        problems.append(
            f"{key}.replies: answering customers needs the environment variable(s) "
            f"{', '.join(missing)}, which are not set"
        )
    replies = Replies(
        prefix=spec.prefix.strip().lower(),
        allow=None if spec.allow is None else frozenset(str(user).strip() for user in spec.allow),
        stop_words=frozenset(word.strip().upper() for word in spec.stop_words),
        max_parts=spec.max_parts,
    )
    return replies, problems


N = TypeVar("N", int, float)


def _inherit(value: N | None, default: N) -> N:
    return default if value is None else value


def _label_value(label: str, value: str) -> str:
    """Matcher values in the form labels have: codes as plain numbers, numbers as digits."""
    value = value.strip()
    if label.startswith("delivery_code"):
        return value.lstrip("0") or "0"
    if label in ("receiver", "sender"):
        return phones.key(value)
    return value


def default_rate(target: SlackTarget | TelegramTarget | ConsoleTarget) -> float | None:
    """The platform's documented limit: Slack per channel, Telegram per private chat / group."""
    if isinstance(target, SlackTarget):
        return limits.SLACK_DEFAULT
    if isinstance(target, TelegramTarget):
        group = target.chat_id < 0
        return limits.TELEGRAM_GROUP_DEFAULT if group else limits.TELEGRAM_PRIVATE_DEFAULT
    return None


def _receiver_pattern(pattern: str) -> tuple[str, bool]:
    """`"+32 460 20 00 00"` → exact E.164 digits; `"3246*"` → a prefix of them."""
    if pattern.endswith("*"):
        digits = phones.key(pattern[:-1])
        if not digits.isdigit():
            raise ValueError(f"{pattern!r}: a prefix pattern is digits followed by *")
        return digits, True
    return phones.parse(pattern), False
