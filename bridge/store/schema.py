"""Table definitions the queries use. Migrations (migrations.py) create and change them.

Times are UNIX seconds (float): the same on SQLite and PostgreSQL, and trivially injectable.
"""

from __future__ import annotations

from sqlalchemy import (
    JSON,
    BigInteger,
    Column,
    Float,
    Integer,
    LargeBinary,
    MetaData,
    Table,
    Text,
)
from sqlalchemy.dialects.postgresql import JSONB

metadata = MetaData()

# JSON values, stored as JSONB on PostgreSQL and as text on SQLite.
Json = JSON(none_as_null=True).with_variant(JSONB(none_as_null=True), "postgresql")

schema_version = Table("schema_version", metadata, Column("version", Integer, nullable=False))

# Small durable facts: the generated webhook token, and later other process-wide state.
facts = Table(
    "facts",
    metadata,
    Column("key", Text, primary_key=True),
    Column("value", Text, nullable=False),
)

# Named holds: one process at a time does what must not run twice (`store/holds.py`).
holds = Table(
    "holds",
    metadata,
    Column("name", Text, primary_key=True),
    Column("holder", Text, nullable=False),
    Column("expires_at", Float, nullable=False),
)

# Every webhook body exactly as it arrived, committed before the answer; `planned_at` is set
# once the worker's intake stored its events and planned their jobs (NULL: waiting for it).
webhook_requests = Table(
    "webhook_requests",
    metadata,
    Column("id", BigInteger, primary_key=True),
    Column("received_at", Float, nullable=False),
    Column("body", LargeBinary, nullable=False),
    Column("planned_at", Float),
)

# One row per event of a body; `webhook_id` is unique so a resent event is recognised.
# `status` is `ok` (understood) or `unparsed` (kept and counted, `problem` says why).
events = Table(
    "events",
    metadata,
    Column("id", BigInteger, primary_key=True),
    Column("request_id", BigInteger, nullable=False),
    Column("webhook_id", Text, unique=True),
    Column("webhook_type", Text),
    Column("status", Text, nullable=False),
    Column("problem", Text),
    Column("payload", Text, nullable=False),  # `{}` once erased (retention, forget)
    Column("received_at", Float, nullable=False),
    Column("erased_at", Float),
)

# The durable outbox: one job per (event, destination, kind). Jobs of one `lane` (a
# conversation) are delivered strictly in id order; lanes never wait for each other.
outbox = Table(
    "outbox",
    metadata,
    Column("id", BigInteger, primary_key=True),
    Column("event_id", BigInteger),
    Column("destination", Text, nullable=False),
    Column("lane", Text, nullable=False),
    Column("kind", Text, nullable=False),
    Column("status", Text, nullable=False),  # pending | done | dead
    Column("attempts", Integer, nullable=False),
    Column("next_attempt_at", Float, nullable=False),
    Column("locked_until", Float),
    Column("locked_by", Text),
    Column("last_error", Text),
    Column("created_at", Float, nullable=False),
    Column("finished_at", Float),
    Column("payload", Json),  # the job's typed payload (bridge/jobs.py)
    # 1 once the job is in its lane's index (claimable); SQLite stores jobs with 0 and the
    # worker's claims admit them, oldest first (store/outbox.py).
    Column("admitted", Integer, nullable=False),
)

# A conversation is (destination, receiver, sender) during one stretch of activity: after
# `threads.idle_after` of silence the next message opens a new row, hence a new thread.
conversations = Table(
    "conversations",
    metadata,
    Column("id", BigInteger, primary_key=True),
    Column("destination", Text, nullable=False),
    Column("receiver", Text, nullable=False),
    Column("sender", Text, nullable=False),
    Column("chat", Text),
    Column("thread", Text),
    Column("started_at", Float, nullable=False),
    Column("last_message_at", Float, nullable=False),
)

# Every chat message the bridge posted, linked to its conversation, the outbox job and part
# that produced it, and the gateway message id it shows (inbox `id`, later reply `messageid`).
# Its notes to agents and, in reply chains, agents' messages belong to the conversation too
# (no outbox job): a reply to any of them is an answer in that conversation.
chat_messages = Table(
    "chat_messages",
    metadata,
    Column("id", BigInteger, primary_key=True),
    Column("destination", Text, nullable=False),
    Column("chat", Text, nullable=False),
    Column("message", Text, nullable=False),
    Column("conversation_id", BigInteger),
    Column("outbox_id", BigInteger),
    Column("part", Integer, nullable=False),
    Column("gateway_messageid", Text),
    Column("created_at", Float, nullable=False),
    Column("replied_to", Text),  # the gateway message a customer's message answers
)

# One delivery status per gateway `messageid`, moved only forward by `rank` (final beats
# non-final), plus when it was read. `read_shown` counts the chat messages marked read.
message_status = Table(
    "message_status",
    metadata,
    Column("messageid", Text, primary_key=True),
    Column("sender", Text, nullable=False),
    Column("receiver", Text, nullable=False),
    Column("delivery_code", Integer),
    Column("delivery_detail", Integer),
    Column("rank", Integer, nullable=False),
    Column("status_at", Text),
    Column("event_id", BigInteger),
    Column("updated_at", Float, nullable=False),
    Column("read_at", Text),
    Column("read_event_id", BigInteger),
    Column("read_shown", Integer),
    Column("erased_at", Float),  # sender and receiver blanked (retention, forget)
)

# Failures grouped à la Alertmanager: one row per group key (the alerts route's matchers and
# the group_by labels' values, never the route's position in the config). `route` holds those
# matchers, to find the route again; `codes` is {"code/detail": count}; `receivers` the first
# ten distinct receivers and `others` the failures to anyone else. `cause` is the detail code
# of an account-wide incident; `senders` whom it failed for, `unsent` failures per gateway
# `reference`, `samples` one event per distinct text (read back to say what was never sent),
# `balance` the low credit the credit watch read, `cleared_at` when the cause went away.
alert_groups = Table(
    "alert_groups",
    metadata,
    Column("id", BigInteger, primary_key=True),
    Column("group_key", Text, nullable=False, unique=True),
    Column("route", Json),
    Column("labels", Json, nullable=False),
    Column("sender", Text, nullable=False),
    Column("timezone", Text, nullable=False),
    Column("count", Integer, nullable=False),
    Column("codes", Json, nullable=False),
    Column("receivers", Json, nullable=False),
    Column("others", Integer, nullable=False),
    Column("first_at", Float, nullable=False),
    Column("last_at", Float, nullable=False),
    Column("last_event_id", BigInteger, nullable=False),
    Column("cause", Integer),
    Column("senders", Json),
    Column("unsent", Json),
    Column("samples", Json),
    Column("balance", Text),
    Column("cleared_at", Float),
)

# A group's alert at one destination: when the next notification is due (`pending_at`, an
# outbox job exists while it is set), what was last told, and the chat message to edit.
alert_notices = Table(
    "alert_notices",
    metadata,
    Column("group_id", BigInteger, primary_key=True),
    Column("destination", Text, primary_key=True),
    Column("pending_at", Float),
    Column("notified_at", Float),
    Column("notified_count", Integer, nullable=False),
    Column("posted_at", Float),
    Column("chat", Text),
    Column("message", Text),
    Column("resolved_at", Float),  # the alert was edited to say the group went quiet
)

# Every Slack event / Telegram update received, raw, committed before it is answered; unique on
# the platform's own id (Slack `event_id`, Telegram `update_id`) so a retried event is a no-op.
# `status` says what became of it: `reply`, or `ignored: <why>`.
chat_events = Table(
    "chat_events",
    metadata,
    Column("id", BigInteger, primary_key=True),
    Column("platform", Text, nullable=False),
    Column("event_key", Text, nullable=False),
    Column("status", Text, nullable=False),
    Column("body", Text, nullable=False),  # `{}` once erased (retention, forget)
    Column("received_at", Float, nullable=False),
    Column("erased_at", Float),
)

# An agent's answer to a customer. `state` is planned → sending → sent (or unknown, refused,
# blocked, too_long, internal); `sending` is written before the gateway is called, so a job
# taken over after a crash knows the SMS may have gone and never sends it again. `messageid`
# is the gateway's id, `shown` the status emoji now on the agent's chat message. (platform,
# chat, message) is unique: one chat message gives at most one reply.
replies = Table(
    "replies",
    metadata,
    Column("id", BigInteger, primary_key=True),
    Column("chat_event_id", BigInteger, nullable=False),
    Column("destination", Text, nullable=False),
    Column("conversation_id", BigInteger, nullable=False),
    Column("chat", Text, nullable=False),
    Column("message", Text, nullable=False),
    Column("platform", Text),  # slack | telegram; none on an older bridge's duplicates
    Column("state", Text, nullable=False),
    Column("messageid", Text),
    Column("shown", Text),
    Column("problem", Text),
    Column("created_at", Float, nullable=False),
    Column("updated_at", Float, nullable=False),
)

# Customers who wrote STOP to a line: no further answers reach them from it.
opt_outs = Table(
    "opt_outs",
    metadata,
    Column("receiver", Text, primary_key=True),
    Column("sender", Text, primary_key=True),
    Column("at", Float, nullable=False),
)


# Each destination's pace, shared by every worker: a token bucket (`tokens` as of
# `updated_at`) and how long a 429 told everyone to wait.
pace = Table(
    "pace",
    metadata,
    Column("destination", Text, primary_key=True),
    Column("tokens", Float, nullable=False),
    Column("updated_at", Float, nullable=False),
    Column("paused_until", Float, nullable=False),
)
