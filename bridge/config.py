"""The YAML config, parsed once into typed, validated objects.

Every problem is reported as `<file>: <key>: <what is wrong>`, all of them at once, so an
operator fixes the file in one go. Tokens never live in the file: a destination names the
environment variable that holds its token. A token variable that is unset does not make the
config unusable: that destination waits (`missing_tokens`) while the others deliver.

The config comes from one of: BRIDGE_CONFIG_YAML (the YAML itself), a file (BRIDGE_CONFIG or
config/bridge.yaml), a few simple variables (`from_environment`), or the built-in console.

Two layers: the `...Spec` pydantic models are the file as written, and hold every default;
the frozen dataclasses below them (`Config`, `Destination`, `Route`, `AlertRoute`, ...) are
what the rest of the code uses, built by `build` from a spec once it is checked, with names
resolved, words normalised and alert settings inherited.
"""

from __future__ import annotations

import difflib
import types
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Annotated, Any, Literal, Union, get_args, get_origin

import yaml
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, ValidationError

from bridge import phones
from bridge.chat import limits
from bridge.config_values import (
    Duration,
    format_duration,
    label_value,
    receiver_pattern,
    slack_channel,
    token_variable,
)
from bridge.config_values import parse_duration as parse_duration
from bridge.config_values import parse_rate as parse_rate
from bridge.language import DEFAULT as DEFAULT_LANGUAGE
from bridge.language import LANGUAGES, Language
from bridge.phones import international
from bridge.settings import Settings

# The file as written: one strict model per section. Each default lives here, once.


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


TokenVariable = Annotated[str, BeforeValidator(token_variable)]


class SlackTarget(_Strict):
    channel: Annotated[str, BeforeValidator(slack_channel)]
    token_env: TokenVariable = "SLACK_BOT_TOKEN"


class TelegramTarget(_Strict):
    chat_id: int
    topics: bool = False
    token_env: TokenVariable = "TELEGRAM_BOT_TOKEN"


class ConsoleTarget(_Strict):
    pass


Kind = Literal["slack", "telegram", "console"]
Target = SlackTarget | TelegramTarget | ConsoleTarget

DEFAULT_STOP_WORDS = ("STOP", "STOPP", "UNSUBSCRIBE")
DEFAULT_START_WORDS = ("START", "UNSTOP")  # undo a stop word


class RepliesSpec(_Strict):
    prefix: str = "note:"  # a message starting with it stays internal
    allow: list[str | int] | None = None  # user ids that may answer; None: everyone
    stop_words: list[str] = list(DEFAULT_STOP_WORDS)
    start_words: list[str] = list(DEFAULT_START_WORDS)
    max_parts: int = Field(default=3, ge=1, le=10)  # 3 GSM-7 parts: the gateway's 459 chars


class DestinationSpec(_Strict):
    slack: SlackTarget | None = None
    telegram: TelegramTarget | None = None
    console: ConsoleTarget | None = None
    replies: bool | RepliesSpec = False
    max_rate: Annotated[float | None, BeforeValidator(parse_rate)] = -1.0  # -1: the platform's
    combine: bool = True
    language: Language | None = None  # None: the top level's


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
DEFAULT_LONE_FAILURES: LoneFailures = "note"


class AlertRouteSpec(_Strict):
    """A route under `alerts`; a setting it does not give (None) is the top level's."""

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
    lone_failures: LoneFailures = DEFAULT_LONE_FAILURES
    mention: Mention | None = None
    routes: list[AlertRouteSpec] = []
    low_balance: float | None = Field(default=None, ge=0)  # Smstools credit that alerts


class ConfigSpec(_Strict):
    destinations: dict[str, DestinationSpec] = Field(min_length=1)
    country: str | None = None  # numbers written nationally (0470 12 34 56) are in it
    routes: list[RouteSpec] = []
    default: list[str] = []
    lines: dict[str | int, str] = {}
    threads: ThreadsSpec = ThreadsSpec()
    alerts: AlertsSpec | None = None
    retention: RetentionSpec = RetentionSpec()
    balance_check_interval: Duration = 15 * 60.0  # how often the Smstools credit is read
    language: Language = DEFAULT_LANGUAGE  # of every word the bridge writes into chat


# What the rest of the code uses: checked, resolved and frozen. `build` fills every field
# from the spec, so no default is restated here; AlertRoute's few name the constants above.


@dataclass(frozen=True)
class Retention:
    """How long stored data is kept (seconds). Content is erased in place, leaving the record
    that an event or status existed; what only served delivery is deleted."""

    raw_bodies: float  # webhook bodies exactly as they arrived
    content: float  # message text and numbers in events, statuses, alert groups,
    # chat message links; what agents wrote, settled replies; conversations once no longer live
    done_jobs: float  # delivered outbox jobs
    dead_letters: float  # jobs that failed for good, with their message

    def describe(self) -> str:
        return (
            f"raw bodies {format_duration(self.raw_bodies)}, message content "
            f"{format_duration(self.content)}, done jobs {format_duration(self.done_jobs)}, "
            f"dead letters {format_duration(self.dead_letters)}"
        )


@dataclass(frozen=True)
class Replies:
    """Agents may answer the customer from this destination's threads."""

    prefix: str  # lower case
    allow: frozenset[str] | None  # Slack / Telegram user ids; None: every member
    stop_words: frozenset[str]  # upper case
    start_words: frozenset[str]  # upper case
    max_parts: int


@dataclass(frozen=True)
class Destination:
    """A named place messages go to. `kind` is slack, telegram or console."""

    name: str
    kind: Kind
    target: Target
    max_rate: float | None  # posts per second; None: unlimited
    replies: Replies | None  # None: one-way
    # When it is behind, a conversation's waiting messages go out as one post (`combining`).
    combine: bool
    language: Language  # of every word the bridge writes here (`bridge/language.py`)

    def describe(self) -> str:
        also = ", one post per message even when behind" if not self.combine else ""
        also += {"nl": ", in Dutch", "fr": ", in French"}.get(self.language, "")
        if isinstance(self.target, SlackTarget):
            return f"slack channel {self.target.channel}{also}"
        if isinstance(self.target, TelegramTarget):
            topics = ", one forum topic per conversation" if self.target.topics else ""
            return f"telegram chat {self.target.chat_id}{topics}{also}"
        return f"console (stdout){also}"


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
    # For routes built in code: the same defaults as the alerts section's.
    page_above: int = DEFAULT_PAGE_ABOVE  # per-recipient failures page beyond this many
    resolve_after: float | None = None  # quiet this long → resolved; None: group_interval
    lone_failures: LoneFailures = DEFAULT_LONE_FAILURES  # "note": not posted until it pages

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
    low_balance: float | None  # tell on-call when the Smstools credit falls under it

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
    alerts: Alerts | None  # None: no alerts section, failures are not told
    retention: Retention
    balance_check_interval: float  # how often the Smstools credit is read


class ConfigError(Exception):
    """The config cannot be used; `problems` are `file: key: what is wrong` lines, and
    `fixes` (as many) what to do about each, when the line alone does not say it."""

    def __init__(self, problems: Sequence[str], fixes: Sequence[str | None] = ()) -> None:
        super().__init__("\n".join(problems))
        self.problems = list(problems)
        self.fixes = [*fixes, *[None] * (len(problems) - len(fixes))]


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
        fix = (
            "create it (copy config/bridge.slack.example.yaml), point BRIDGE_CONFIG at your "
            "file, or unset BRIDGE_CONFIG and set SLACK_CHANNEL or TELEGRAM_CHAT_ID instead"
        )
        raise ConfigError([f"{path}: cannot read the config: {error.strerror}"], [fix]) from None
    return parse(text, str(path), environ)


def parse(text: str, source: str, environ: Mapping[str, str]) -> Config:
    """Validate the YAML `text`; `source` names it in every problem (a file, a variable)."""
    loader = _Loader(text)
    try:
        document = loader.get_single_data()
    except yaml.YAMLError as error:
        raise ConfigError([_yaml_problem(source, error)], [_YAML_FIX]) from None
    finally:
        loader.dispose()
    if not isinstance(document, dict):
        raise ConfigError([f"{source}: the config must be a mapping with a 'destinations' key"])
    return build(document, source, environ, unquoted_numbers=loader.unquoted_numbers)


def from_settings(settings: Settings) -> Config:
    """The config the settings point at: BRIDGE_CONFIG_YAML, else the file, else the one the
    simple variables build (`from_environment`), else the built-in console."""
    environ = settings.environ
    if settings.config_yaml is not None:
        return parse(settings.config_yaml, "BRIDGE_CONFIG_YAML", environ)
    if settings.config_path is not None:
        return load(settings.config_path, environ)
    document = from_environment(settings.config_variables)
    if document is None:
        return load(None, environ)
    return build(document, ENVIRONMENT_SOURCE, environ)


ENVIRONMENT_SOURCE = "the environment (SLACK_CHANNEL, TELEGRAM_CHAT_ID, ALERTS_…)"
# Destination names of a config built from the environment, by the variable that asks for it.
_ENVIRONMENT_DESTINATIONS = {
    "SLACK_CHANNEL": "slack",
    "TELEGRAM_CHAT_ID": "telegram",
    "ALERTS_SLACK_CHANNEL": "alerts-slack",
    "ALERTS_TELEGRAM_CHAT_ID": "alerts-telegram",
}


def from_environment(variables: Mapping[str, str]) -> dict[str, Any] | None:
    """The config document that SLACK_CHANNEL / TELEGRAM_CHAT_ID (default destinations),
    ALERTS_SLACK_CHANNEL / ALERTS_TELEGRAM_CHAT_ID (alerts and notices) and BRIDGE_LANGUAGE
    mean; None when none is set. A value that cannot be a channel, chat id or language is a
    ConfigError naming its variable."""
    if not variables:
        return None
    destinations: dict[str, Any] = {}
    problems = []
    language = variables.get("BRIDGE_LANGUAGE")
    if language is not None and language not in LANGUAGES:
        problems.append(f"BRIDGE_LANGUAGE: {language!r} is not a language: write en, nl or fr")
    for variable, name in _ENVIRONMENT_DESTINATIONS.items():
        value = variables.get(variable)
        if value is None:
            continue
        if variable.endswith("SLACK_CHANNEL"):
            try:
                destinations[name] = {"slack": {"channel": slack_channel(value)}}
            except ValueError as error:
                problems.append(f"{variable}: {error}")
        elif value.lstrip("-").isdigit():
            destinations[name] = {"telegram": {"chat_id": int(value)}}
        else:
            problems.append(
                f"{variable}: {value!r} is not a Telegram chat id: a number, like -1001234567890 "
                "for a group (add @RawDataBot to the group to see it)"
            )
    if problems:
        raise ConfigError(problems)
    default = [name for name in destinations if not name.startswith("alerts-")]
    alerts = [name for name in destinations if name.startswith("alerts-")]
    if not default:
        destinations["console"] = {"console": {}}
        default = ["console"]
    document: dict[str, Any] = {"destinations": destinations, "default": default}
    if language is not None:
        document["language"] = language
    if alerts:
        document["alerts"] = {"to": alerts}
    return document


def missing_tokens(config: Config, environ: Mapping[str, str]) -> dict[str, str]:
    """Destination name → the token variable it names that is unset. Such a destination is
    kept: its jobs wait in the outbox until the variable is set and the bridge restarted."""
    missing = {}
    for name, destination in config.destinations.items():
        target = destination.target
        if isinstance(target, SlackTarget | TelegramTarget):
            if not environ.get(target.token_env, "").strip():
                missing[name] = target.token_env
    return missing


def token_advice(destination: Destination, variable: str) -> str:
    """Where the token for `destination` comes from, and what to do with it."""
    if destination.kind == "slack":
        where = "the Bot User OAuth Token (xoxb-…) from the Slack app's OAuth & Permissions page"
    else:
        where = "the bot token from @BotFather (/mybots → API Token)"
    return f"set {variable} to {where}, then restart the bridge"


def build(
    document: Mapping[str, Any],
    source: str,
    environ: Mapping[str, str],
    *,
    unquoted_numbers: Mapping[int, str] | None = None,
) -> Config:
    """Validate a parsed document; collect every problem before refusing. `unquoted_numbers`:
    numbers YAML read from digits with a leading 0 (octal), and how they were written."""
    spec = _validated(document, source)
    problems = _Problems(source, spec.destinations, unquoted_numbers or {})
    if spec.country is not None:
        try:
            problems.country = phones.region(spec.country)
        except ValueError as error:
            problems.add("country", str(error))
    destinations = _destinations(spec.destinations, spec.language, environ, problems)
    routes = [
        _route(route, f"routes[{index}]", problems) for index, route in enumerate(spec.routes)
    ]
    default = problems.destination_names(spec.default, "default")
    lines = _lines(spec.lines, problems)
    alerts = None if spec.alerts is None else _alerts(spec.alerts, destinations, problems)
    if spec.balance_check_interval < 1:
        problems.add("balance_check_interval", "give at least 1s")
    if problems.found:
        raise ConfigError(problems.found, problems.fixes)
    return Config(
        source=source,
        destinations=destinations,
        routes=routes,
        default=default,
        lines=lines,
        idle_after=spec.threads.idle_after,
        alerts=alerts,
        retention=Retention(**spec.retention.model_dump()),
        balance_check_interval=spec.balance_check_interval,
    )


class _Problems:
    """The `file: key: what is wrong` lines found so far, and the checks every section uses."""

    def __init__(
        self,
        source: str,
        known_destinations: Collection[str],
        unquoted_numbers: Mapping[int, str] | None = None,
    ) -> None:
        self.source = source
        self.known_destinations = known_destinations
        self.unquoted_numbers = unquoted_numbers or {}
        self.country: str | None = None  # the top-level `country`, once checked
        self.found: list[str] = []
        self.fixes: list[str | None] = []

    def add(self, key: str, problem: str, fix: str | None = None) -> None:
        self.found.append(f"{self.source}: {key}: {problem}")
        self.fixes.append(fix)

    def destination_names(self, names: Sequence[str], key: str) -> tuple[str, ...]:
        """`names` once each, in order; an unknown one is a problem at `key[index]`."""
        for index, name in enumerate(names):
            if name not in self.known_destinations:
                self.add(f"{key}[{index}]", unknown_destination(name, self.known_destinations))
        return tuple(dict.fromkeys(names))

    def phone_number(self, written: str | int, key: str) -> str | None:
        """The key of a number written in the config (nationally with `country`); a problem
        when it is not one, saying to quote it when YAML read it as a number."""
        if isinstance(written, int) and written in self.unquoted_numbers:
            original = self.unquoted_numbers[written]
            self.add(
                key,
                f"YAML reads {original} without quotes as the number {written} (a leading 0 "
                f'makes it octal): put the number in quotes, like "{original}"',
            )
            return None
        try:
            return phones.parse(str(written), self.country)
        except ValueError as error:
            hint = "; put the number in quotes" if isinstance(written, int) else ""
            if self.country is None and str(written).strip().startswith("0"):
                hint += (
                    "; a national number needs the country: add `country: BE` (your "
                    "country's two letters) at the top level, or write it as +32 …"
                )
            self.add(key, f"{error}{hint}")
            return None


def unknown_destination(name: str, known: Collection[str]) -> str:
    """`unknown destination 'suport' (did you mean 'support'?; known: …)`."""
    close = difflib.get_close_matches(name, list(known), n=1)
    guess = f"did you mean {close[0]!r}? " if close else ""
    return f"unknown destination {name!r} ({guess}known: {', '.join(sorted(known))})"


def _validated(document: Mapping[str, Any], source: str) -> ConfigSpec:
    """The document as a spec, or every schema problem at once: with them, the destination
    names the document uses that it does not define, so nothing waits for a second run."""
    try:
        return ConfigSpec.model_validate(document)
    except ValidationError as error:
        schema_problems = []
        for issue in error.errors():
            location = [part for part in issue["loc"] if part not in ("str", "int")]
            location = [part for part in location if not str(part).startswith("function-")]
            schema_problems.append(f"{source}: {_key(location)}: {_plainly(issue, location)}")
        names = _Problems(source, _defined_destinations(document))
        _check_names(document, names)
        raise ConfigError(schema_problems + names.found) from None


# What to write instead, for pydantic's error types (its own wording says what the input
# "should be", in Python's terms).
_INSTEAD = {
    "list_type": "write a list, like [a, b] (or one item per line, each starting with - )",
    "dict_type": "write a mapping: keys with a value each, indented under this one",
    "model_type": "write a mapping: keys with a value each, indented under this one",
    "model_attributes_type": "write a mapping: keys with a value each, indented under this one",
    "string_type": "write text (put it in quotes if YAML reads it as something else)",
    "int_type": "write a whole number, like 3",
    "int_parsing": "write a whole number, like 3",
    "int_from_float": "write a whole number, like 3",
    "float_type": "write a number, like 2.5",
    "float_parsing": "write a number, like 2.5",
    "bool_type": "write true or false",
    "bool_parsing": "write true or false",
    "missing": "this key is needed here",
    "too_short": "give at least one",
}


def _plainly(issue: Any, location: Sequence[int | str]) -> str:
    """A schema problem as what to write instead."""
    kind = issue["type"]
    if kind == "extra_forbidden":
        known = _known_keys(location[:-1])
        close = difflib.get_close_matches(str(location[-1]), known, n=1)
        guess = f"did you mean {close[0]!r}? " if close else ""
        return f"unknown key ({guess}known here: {', '.join(known)})"
    if kind == "literal_error":
        expected = issue.get("ctx", {}).get("expected", "")
        return f"write one of {expected}"
    if kind in _INSTEAD:
        return _INSTEAD[kind]
    message: str = issue["msg"]
    return message.removeprefix("Value error, ")


def _known_keys(location: Sequence[int | str]) -> list[str]:
    """The keys the schema accepts at `location` (a mapping's place in the document)."""
    annotation: Any = ConfigSpec
    for part in location:
        annotation = _step(annotation, part)
        if annotation is None:
            return []
    model = _model_in(annotation)
    return list(model.model_fields) if model is not None else []


def _step(annotation: Any, part: int | str) -> Any:
    """The annotation one step down from `annotation` at `part` (a key or a list index)."""
    model = _model_in(annotation)
    if model is not None and isinstance(part, str) and part in model.model_fields:
        return model.model_fields[part].annotation
    for option in _options(annotation):
        origin = get_origin(option)
        if origin is list and isinstance(part, int):
            return get_args(option)[0]
        if origin is dict:
            return get_args(option)[1]
    return None


def _options(annotation: Any) -> tuple[Any, ...]:
    if get_origin(annotation) in (Union, types.UnionType):
        return get_args(annotation)
    return (annotation,)


def _model_in(annotation: Any) -> type[BaseModel] | None:
    for option in _options(annotation):
        if isinstance(option, type) and issubclass(option, BaseModel):
            return option
    return None


def _defined_destinations(document: Mapping[str, Any]) -> list[str]:
    destinations = document.get("destinations")
    return [str(name) for name in destinations] if isinstance(destinations, dict) else []


def _check_names(document: Mapping[str, Any], problems: _Problems) -> None:
    """The destination names a document refers to, checked before its schema is right."""
    if not problems.known_destinations:
        return  # `destinations` itself is the problem, said by the schema

    def check(names: object, key: str) -> None:
        if isinstance(names, list):
            problems.destination_names([name for name in names if isinstance(name, str)], key)

    check(document.get("default"), "default")
    for index, route in enumerate(_list(document.get("routes"))):
        if isinstance(route, dict):
            check(route.get("to"), f"routes[{index}].to")
    alerts = document.get("alerts")
    if isinstance(alerts, dict):
        check(alerts.get("to"), "alerts.to")
        for index, route in enumerate(_list(alerts.get("routes"))):
            if isinstance(route, dict):
                check(route.get("to"), f"alerts.routes[{index}].to")


def _list(value: object) -> list[Any]:
    return value if isinstance(value, list) else []


_YAML_FIX = (
    "look at that line and the one before it: a missing colon or closing quote, or indentation "
    "that does not line up"
)


def _yaml_problem(source: str, error: yaml.YAMLError) -> str:
    """A YAML syntax error located in `source` (PyYAML names a string `<unicode string>`)."""
    mark = getattr(error, "problem_mark", None)
    where = f"line {mark.line + 1}, column {mark.column + 1}" if mark is not None else "(top level)"
    what = getattr(error, "problem", None) or str(error)
    context = getattr(error, "context", None)
    detail = f"{what} ({context})" if context else what
    return f"{source}: {where}: not valid YAML: {detail}"


class _Loader(yaml.SafeLoader):
    """YAML's safe loader, remembering the numbers it read from digits with a leading zero
    (`0032460200000` is octal to YAML): a phone number there was meant as text."""

    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        self.unquoted_numbers: dict[int, str] = {}

    def construct_yaml_int(self, node: yaml.ScalarNode) -> int:
        number: int = super().construct_yaml_int(node)
        text = str(node.value).replace("_", "")
        if len(text) > 1 and text.startswith("0") and text.isdigit():
            self.unquoted_numbers[number] = text
        return number


_Loader.add_constructor("tag:yaml.org,2002:int", _Loader.construct_yaml_int)


def _key(location: Sequence[int | str]) -> str:
    key = ""
    for part in location:
        key += f"[{part}]" if isinstance(part, int) else (f".{part}" if key else str(part))
    return key or "(top level)"


def _destinations(
    specs: Mapping[str, DestinationSpec],
    language: Language,
    environ: Mapping[str, str],
    problems: _Problems,
) -> dict[str, Destination]:
    """The usable destinations by name, each in its own `language` or else the top level's;
    a broken one is left out and its problems noted."""
    destinations = {}
    for name, spec in specs.items():
        destination = _destination(name, spec, spec.language or language, environ, problems)
        if destination is not None:
            destinations[name] = destination
    return destinations


def _destination(
    name: str,
    spec: DestinationSpec,
    language: Language,
    environ: Mapping[str, str],
    problems: _Problems,
) -> Destination | None:
    key = f"destinations.{name}"
    platforms: tuple[tuple[Kind, Target | None], ...] = (
        ("slack", spec.slack),
        ("telegram", spec.telegram),
        ("console", spec.console),
    )
    chosen = [(kind, target) for kind, target in platforms if target is not None]
    if len(chosen) != 1:
        problems.add(key, "give exactly one of slack, telegram or console")
        return None
    kind, target = chosen[0]
    max_rate = spec.max_rate
    if max_rate is not None and max_rate < 0:
        max_rate = default_rate(target)
    replies = _replies(spec.replies, kind, f"{key}.replies", environ, problems)
    return Destination(name, kind, target, max_rate, replies, spec.combine, language)


# What answering from a platform needs from the environment, beyond the chat token.
_REPLY_VARIABLES = {
    "slack": ("SMSTOOLS_CLIENT_ID", "SMSTOOLS_CLIENT_SECRET"),
    "telegram": ("SMSTOOLS_CLIENT_ID", "SMSTOOLS_CLIENT_SECRET"),
}
# How a platform's events reach the bridge: one of these is needed (Slack: signed HTTP
# requests, or Socket Mode).
_EVENT_VARIABLES = {"slack": ("SLACK_SIGNING_SECRET", "SLACK_APP_TOKEN")}


def _replies(
    spec: bool | RepliesSpec,
    kind: Kind,
    key: str,
    environ: Mapping[str, str],
    problems: _Problems,
) -> Replies | None:
    """The destination's `replies` setting; what keeps it from working is a problem."""
    if spec is False:
        return None
    if kind not in _REPLY_VARIABLES:
        problems.add(key, "only Slack and Telegram destinations can answer")
        return None
    spec = RepliesSpec() if spec is True else spec
    missing = [name for name in _REPLY_VARIABLES[kind] if not environ.get(name, "").strip()]
    either = _EVENT_VARIABLES.get(kind, ())
    if either and not any(environ.get(name, "").strip() for name in either):
        missing.append(" or ".join(either))
    if missing:
        problems.add(
            key,
            "answering customers needs the environment variable(s) "
            f"{', '.join(missing)}, which are not set",
        )
    return Replies(
        prefix=spec.prefix.strip().lower(),
        allow=None if spec.allow is None else frozenset(str(user).strip() for user in spec.allow),
        stop_words=frozenset(word.strip().upper() for word in spec.stop_words),
        start_words=frozenset(word.strip().upper() for word in spec.start_words),
        max_parts=spec.max_parts,
    )


def default_rate(target: Target) -> float | None:
    """The platform's documented limit: Slack per channel, Telegram per private chat / group."""
    if isinstance(target, SlackTarget):
        return limits.SLACK_DEFAULT
    if isinstance(target, TelegramTarget):
        group = target.chat_id < 0
        return limits.TELEGRAM_GROUP_DEFAULT if group else limits.TELEGRAM_PRIVATE_DEFAULT
    return None


def _route(spec: RouteSpec, key: str, problems: _Problems) -> Route:
    receiver, is_prefix = None, False
    written = spec.match.receiver
    if isinstance(written, str) and written.strip().endswith("*"):
        try:
            receiver, is_prefix = receiver_pattern(written, problems.country)
        except ValueError as error:
            problems.add(f"{key}.match.receiver", str(error))
    elif written is not None:
        receiver = problems.phone_number(written, f"{key}.match.receiver")
    to = problems.destination_names(spec.to, f"{key}.to")
    return Route(receiver, is_prefix, spec.match.type, to)


def _lines(spec: Mapping[str | int, str], problems: _Problems) -> dict[str, str]:
    """Labels of our own numbers, keyed by their E.164 digits."""
    lines = {}
    for number, label in spec.items():
        written = (
            problems.unquoted_numbers.get(number, number) if isinstance(number, int) else number
        )
        parsed = problems.phone_number(number, f"lines.{written}")
        if parsed is not None:
            lines[parsed] = label
    return lines


def _alerts(
    spec: AlertsSpec, destinations: Mapping[str, Destination], problems: _Problems
) -> Alerts:
    """The `alerts` section: routes inherit every setting they do not give from the top."""
    to = problems.destination_names(spec.to, "alerts.to")
    top = AlertRoute(
        matchers={},
        to=to,
        group_by=_labels(spec.group_by, "alerts.group_by", problems),
        group_wait=spec.group_wait,
        group_interval=spec.group_interval,
        repeat_interval=spec.repeat_interval,
        mention=_mentions(spec.mention, to, "alerts.mention", destinations, problems),
        page_above=spec.page_above,
        resolve_after=spec.resolve_after,
        lone_failures=spec.lone_failures,
    )
    routes = [
        _alert_route(route, top, f"alerts.routes[{index}]", destinations, problems)
        for index, route in enumerate(spec.routes)
    ]
    return Alerts(frozenset(spec.on_codes), (*routes, top), low_balance=spec.low_balance)


# The route settings taken as written; `to`, `group_by` and `mention` are checked first.
_PLAIN_ROUTE_SETTINGS = {
    "group_wait",
    "group_interval",
    "repeat_interval",
    "resolve_after",
    "page_above",
    "lone_failures",
}


def _alert_route(
    spec: AlertRouteSpec,
    top: AlertRoute,
    key: str,
    destinations: Mapping[str, Destination],
    problems: _Problems,
) -> AlertRoute:
    """A route under `alerts`: the top level, with what the route gives in its place."""
    to = top.to if spec.to is None else problems.destination_names(spec.to, f"{key}.to")
    matchers = _matchers(spec.match, f"{key}.match", problems)
    group_by = top.group_by
    if spec.group_by is not None:
        group_by = _labels(spec.group_by, f"{key}.group_by", problems)
    mention = top.mention
    if spec.mention is not None:
        mention = _mentions(spec.mention, to, f"{key}.mention", destinations, problems)
    # The spec's keys are AlertRoute's attribute names; None means "not given".
    given = spec.model_dump(include=_PLAIN_ROUTE_SETTINGS, exclude_none=True)
    return replace(top, matchers=matchers, to=to, group_by=group_by, mention=mention, **given)


def _labels(names: Sequence[str], key: str, problems: _Problems) -> tuple[str, ...]:
    """`group_by`: alert labels once each, in order; an unknown one is a problem."""
    for index, name in enumerate(names):
        if name not in ALERT_LABELS:
            problems.add(
                f"{key}[{index}]", f"unknown label {name!r} (known: {', '.join(ALERT_LABELS)})"
            )
    return tuple(dict.fromkeys(names))


def _mentions(
    mention: Mention | None,
    to: Sequence[str],
    key: str,
    destinations: Mapping[str, Destination],
    problems: _Problems,
) -> dict[str, str]:
    """Destination kind → markup. One string serves every platform, unless it is Slack
    markup and a Telegram destination would show it as text."""
    if mention is None:
        return {}
    if isinstance(mention, dict):
        return {str(kind): markup for kind, markup in mention.items()}
    for name in to:
        destination = destinations.get(name)
        if destination is not None and destination.kind == "telegram" and "<" in mention:
            problems.add(
                key,
                f"{mention!r} is Slack markup but {name!r} is a Telegram destination; give one "
                "per platform: {slack: '<!subteam^…>', telegram: '@name'}",
            )
    return {"slack": mention, "telegram": mention, "console": mention}


def _matchers(
    match: Mapping[str, object], key: str, problems: _Problems
) -> dict[str, frozenset[str]]:
    """Label → the values it accepts, in the form failures are labelled with."""
    result: dict[str, frozenset[str]] = {}
    for label, accepted in match.items():
        values = accepted if isinstance(accepted, list) else [accepted]
        if label not in ALERT_LABELS:
            problems.add(f"{key}.{label}", f"unknown label (known: {', '.join(ALERT_LABELS)})")
        elif not values:
            problems.add(f"{key}.{label}", "give at least one value")
        elif label.startswith("delivery_code") and not all(
            str(value).strip().isdigit() for value in values
        ):
            problems.add(f"{key}.{label}", "codes are numbers, like 2000")
        result[label] = frozenset(label_value(label, str(value)) for value in values)
    return result
