"""Logging set-up: whatever handler a record reaches, phone numbers are masked and secrets gone.

Code never logs message content (a rule for reviewers; nothing can recognise content). Phone
numbers and secrets are another matter: they slip into exception texts and third-party
messages, so every record passes `PrivacyFilter` before any handler formats it.
"""

from __future__ import annotations

import logging
import re
import sys
from collections.abc import Iterable, Mapping
from typing import Any

from pythonjsonlogger.core import RESERVED_ATTRS
from pythonjsonlogger.json import JsonFormatter

from bridge import phones
from bridge.phones import mask

FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
# LOG_FORMAT=json: one object per line, these four first, then the record's `extra` fields.
JSON_FIELDS = {"asctime": "time", "levelname": "level", "name": "logger", "message": "message"}
_STANDARD = frozenset(RESERVED_ATTRS) | {"message", "asctime", "_smsbridge_redacted"}
HIDDEN = "•••"
# Third-party loggers that print request URLs (Telegram's contain the bot token) at INFO.
NOISY = ("httpx", "httpcore", "telegram", "slack_sdk", "aiosqlite", "asyncio")

# A number as people and gateways write it, not preceded by part of a longer token (chat
# -100..., Slack ts 17...123.45, host:port) unless by a scheme (`tel:`, `wa:`): digit groups
# split by single spaces (`+32 470 12 34 56`, `32470123456`, `0032470123456`, `0470 12 34
# 56`, several numbers possibly side by side); after a `+` also by dashes and dots
# (`+32-470-12-34-56`, `+32.470.12.34.56`; elsewhere dates and addresses use them), and with
# the country code in brackets (`(+32) 470 123 456`). Possessive, so a match never
# backtracks: linear in the text's length.
# (Not phonenumbers' PhoneNumberMatcher: given a default region, it misses the gateway's
# bare international digits of other countries, such as 33612345678.)
_PHONE = re.compile(
    r"(?:(?<=\btel:)|(?<=\bsms:)|(?<=\bwa:)|(?<=\bwhatsapp:)|(?<![\w.:/+-]))"
    r"(?:(?:\(\+\d{1,3}\)|\+\d++)(?:[-. ]?\d++)*+|\d++(?: \d++)*+)"
)
_SEPARATORS = re.compile(r"[().-]")  # dropped before a group is parsed
_AFTER_TOKEN = re.compile(r"\w|\.\d")  # what follows a run that is part of a longer token
# What ends the text before an id's digits (`update_id=`, `"message_id": `, `update `,
# `chat `): ids are not numbers to mask, even when their digits would make one. WhatsApp's
# `wa_id` is the customer's number.
_ID_BEFORE = re.compile(r"(?:\bids?|(?<!\bwa)_id|\bupdate|\bchat|\buser)\W{0,3}$", re.IGNORECASE)
_ID_KEY_LENGTH = 16  # characters before the digits looked at for an id's key
_MAX_GROUPS = 15  # a phone number has at most 15 digits, so at most 15 groups
_TOKENS = (
    re.compile(r"xox[a-z]-[A-Za-z0-9-]+"),  # Slack tokens
    re.compile(r"(?<!\d)\d{5,}:[A-Za-z0-9_-]{30,}"),  # Telegram bot tokens
    re.compile(r"(?<=://)([^:/@\s]+):[^@\s]+(?=@)"),  # passwords in URLs
)
_SECRET_NAME = re.compile(r"(TOKEN|SECRET|PASSWORD|PASSWD|API_KEY|PRIVATE_KEY)$|^DATABASE_URL$")
_MIN_SECRET = 8  # shorter values would blank out ordinary words


def secrets_in(environ: Mapping[str, str]) -> list[str]:
    """Values of the environment that are secrets by name (`*_TOKEN`, `*_SECRET`, ...)."""
    found = []
    for name, value in environ.items():
        if _SECRET_NAME.search(name.upper()) and len(value.strip()) >= _MIN_SECRET:
            found.append(value.strip())
    return found


def redact(text: str, secrets: Iterable[str] = ()) -> str:
    """`text` with the given secrets and anything shaped like a token hidden, numbers masked."""
    for secret in sorted(secrets, key=len, reverse=True):
        text = text.replace(secret, HIDDEN)
    text = _TOKENS[0].sub(HIDDEN, text)
    text = _TOKENS[1].sub(HIDDEN, text)
    text = _TOKENS[2].sub(lambda match: f"{match.group(1)}:{HIDDEN}", text)
    return _PHONE.sub(_mask_number, text)


def _mask_number(match: re.Match[str]) -> str:
    """Mask the numbers in a run of digit groups; several numbers may sit side by side."""
    text, start, run = match.string, match.start(), match.group(0)
    if _AFTER_TOKEN.match(text, match.end()):
        return run  # digits that continue into a longer token are not a number
    if _ID_BEFORE.search(text, max(0, start - _ID_KEY_LENGTH), start):
        return run
    groups, shown, start = run.split(" "), [], 0
    while start < len(groups):
        for end in range(min(len(groups), start + _MAX_GROUPS), start, -1):
            digits = _phone_digits(_SEPARATORS.sub("", " ".join(groups[start:end])))
            if digits is not None:
                shown.append(mask(digits))
                start = end
                break
        else:
            shown.append(groups[start])
            start += 1
    return " ".join(shown)


def _phone_digits(raw: str) -> str | None:
    """E.164 digits when `raw` is a possible phone number, else None."""
    if not 8 <= len(raw.lstrip("+").replace(" ", "")) <= 15:
        return None
    try:
        # A number starting with one 0 is national, as Belgian customers write it.
        return phones.parse(raw, national=None if raw.startswith("+") else "BE")
    except ValueError:
        return None


class PrivacyFilter(logging.Filter):
    """Rewrites each record (message, arguments, traceback) through `redact`. Never drops one."""

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        super().__init__()
        self.secrets = list(secrets)
        self._formatter = logging.Formatter()

    def filter(self, record: logging.LogRecord) -> bool:
        if getattr(record, "_smsbridge_redacted", False):
            return True  # a record reaching several handlers is rewritten once
        try:
            message = record.getMessage()
        except Exception:  # a broken format string must not hide the record
            message = f"{record.msg!r} (unformattable arguments)"
        record.msg, record.args = redact(message, self.secrets), None
        if record.exc_info and not record.exc_text:
            record.exc_text = self._formatter.formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = redact(record.exc_text, self.secrets)
            # Formatters show `exc_text` when `exc_info` is gone; the JSON formatter would
            # otherwise format the traceback afresh, unredacted.
            record.exc_info = None
        if record.stack_info:
            record.stack_info = redact(record.stack_info, self.secrets)
        for name, value in list(vars(record).items()):
            if name not in _STANDARD:  # an `extra` field: shown by the JSON format
                setattr(record, name, self._redact_value(value))
        record._smsbridge_redacted = True
        return True

    def _redact_value(self, value: Any) -> Any:
        if isinstance(value, str):
            return redact(value, self.secrets)
        if isinstance(value, int | float | bool) or value is None:
            return value
        return redact(str(value), self.secrets)  # anything else is shown as redacted text


def hide(secret: str) -> None:
    """Add a secret learnt after start-up (the generated webhook token) to every filter."""
    if len(secret) < _MIN_SECRET:
        return
    for handler in logging.getLogger().handlers:
        for privacy in handler.filters:
            if isinstance(privacy, PrivacyFilter) and secret not in privacy.secrets:
                privacy.secrets.append(secret)


def formatter(form: str = "text") -> logging.Formatter:
    """`text` (one readable line) or `json` (one JSON object per line)."""
    if form == "json":
        return JsonFormatter(
            " ".join(f"%({name})s" for name in JSON_FIELDS),
            rename_fields={name: shown for name, shown in JSON_FIELDS.items() if name != shown},
            json_ensure_ascii=False,
        )
    return logging.Formatter(FORMAT)


def configure(
    level: str = "INFO", secrets: Iterable[str] = (), form: str = "text"
) -> PrivacyFilter:
    """Log to stderr in `form` (unless the root logger already has handlers) through a
    `PrivacyFilter` on every root handler; quiet the third-party loggers that print tokens."""
    root = logging.getLogger()
    if not root.handlers:
        stderr = logging.StreamHandler(sys.stderr)
        stderr.setFormatter(formatter(form))
        root.addHandler(stderr)
    root.setLevel(level.upper())
    privacy = PrivacyFilter(secrets)
    for handler in root.handlers:
        for old in [f for f in handler.filters if isinstance(f, PrivacyFilter)]:
            handler.removeFilter(old)
        handler.addFilter(privacy)
    for name in NOISY:
        logging.getLogger(name).setLevel(logging.WARNING)
    return privacy
