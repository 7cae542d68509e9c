"""Table definitions the queries use. Migrations (migrations.py) create and change them.

Times are UNIX seconds (float): the same on SQLite and PostgreSQL, and trivially injectable.
"""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Column,
    Float,
    Integer,
    LargeBinary,
    MetaData,
    Table,
    Text,
)

metadata = MetaData()

schema_version = Table("schema_version", metadata, Column("version", Integer, nullable=False))

# Small durable facts: the generated webhook token, and later other process-wide state.
facts = Table(
    "facts",
    metadata,
    Column("key", Text, primary_key=True),
    Column("value", Text, nullable=False),
)

# Every webhook body exactly as it arrived, committed before the answer.
webhook_requests = Table(
    "webhook_requests",
    metadata,
    Column("id", BigInteger, primary_key=True),
    Column("received_at", Float, nullable=False),
    Column("body", LargeBinary, nullable=False),
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
    Column("payload", Text),  # for jobs not made from an event (operator notices)
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

# Failures grouped à la Alertmanager: one row per group key (alerts route + group_by labels).
# `codes` is JSON {"code/detail": count}; `receivers` the first ten distinct receivers (JSON)
# and `others` the failures to anyone else.
alert_groups = Table(
    "alert_groups",
    metadata,
    Column("id", BigInteger, primary_key=True),
    Column("group_key", Text, nullable=False, unique=True),
    Column("labels", Text, nullable=False),
    Column("sender", Text, nullable=False),
    Column("timezone", Text, nullable=False),
    Column("count", Integer, nullable=False),
    Column("codes", Text, nullable=False),
    Column("receivers", Text, nullable=False),
    Column("others", Integer, nullable=False),
    Column("first_at", Float, nullable=False),
    Column("last_at", Float, nullable=False),
    Column("last_event_id", BigInteger, nullable=False),
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
)
