"""Numbered schema steps with a version row, applied in one transaction.

A database newer than this code is refused rather than guessed at. On PostgreSQL an
advisory lock makes two release phases running at once take turns.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection

from bridge.store.db import Database

_ADVISORY_LOCK = 0x5D5B_71D6  # any constant shared by every smsbridge process


async def _typed_job_payloads(connection: AsyncConnection) -> None:
    """Give jobs queued by an older bridge the typed payload the handlers now read.

    The older bridge carried a job's data in its lane; this is the one place that still
    reads that old form, once, for jobs that may yet be delivered or retried.
    """
    rows = await connection.execute(
        text(
            "SELECT outbox.id, outbox.kind, outbox.lane, outbox.destination, outbox.payload, "
            "events.payload FROM outbox LEFT JOIN events ON events.id = outbox.event_id "
            "WHERE outbox.status <> 'done'"
        )
    )
    for job_id, kind, lane, destination, stored, event in rows.all():
        old = json.loads(stored) if isinstance(stored, str) else stored
        payload: dict[str, Any] | None = None
        if kind in ("inbox", "failure_note"):
            receiver, sender = lane[len(destination) + 1 :].rsplit("|", 1)
            payload = {"conversation": {"receiver": receiver, "sender": sender}}
            if kind == "failure_note":
                found = await connection.execute(
                    text(
                        "SELECT max(id) FROM conversations WHERE destination = :d "
                        "AND receiver = :r AND sender = :s"
                    ),
                    {"d": destination, "r": receiver, "s": sender},
                )
                payload["conversation_id"] = found.scalar() or 0
        elif kind == "read" and event is not None:
            payload = {"messageid": json.loads(event)["message"]["messageid"]}
        elif kind == "alert":
            payload = {"group_id": int(lane.split("|")[1])}
        elif kind == "notice" and old is not None:
            payload = {"failing": old["destination"], "reason": old["reason"]}
            payload["detail"] = old["detail"]
        if payload is not None:
            await connection.execute(
                text("UPDATE outbox SET payload = :p WHERE id = :id"),
                {"p": json.dumps(payload), "id": job_id},
            )


# A statement is SQL for every dialect (`{id}` an auto-increment primary key, `{blob}` raw
# bytes, `{float}` a double, `{json}` a JSON value), SQL per dialect (none: nothing to do
# there), or a data migration in Python.
Statement = str | Mapping[str, str] | Callable[[AsyncConnection], Awaitable[None]]

STEPS: Sequence[Sequence[Statement]] = (
    (
        "CREATE TABLE facts (key TEXT PRIMARY KEY, value TEXT NOT NULL)",
        """CREATE TABLE webhook_requests (
            id {id}, received_at {float} NOT NULL, body {blob} NOT NULL)""",
        """CREATE TABLE events (
            id {id}, request_id BIGINT NOT NULL, webhook_id TEXT UNIQUE, webhook_type TEXT,
            status TEXT NOT NULL, problem TEXT, payload TEXT NOT NULL,
            received_at {float} NOT NULL)""",
        """CREATE TABLE outbox (
            id {id}, event_id BIGINT, destination TEXT NOT NULL, lane TEXT NOT NULL,
            kind TEXT NOT NULL, status TEXT NOT NULL, attempts INTEGER NOT NULL,
            next_attempt_at {float} NOT NULL, locked_until {float}, locked_by TEXT,
            last_error TEXT, created_at {float} NOT NULL, finished_at {float},
            UNIQUE (event_id, destination, kind))""",
        "CREATE INDEX outbox_due ON outbox (next_attempt_at) WHERE status = 'pending'",
        "CREATE INDEX outbox_lane ON outbox (lane, id) WHERE status = 'pending'",
        "CREATE INDEX outbox_status ON outbox (status, id)",
        """CREATE TABLE conversations (
            id {id}, destination TEXT NOT NULL, receiver TEXT NOT NULL, sender TEXT NOT NULL,
            chat TEXT, thread TEXT, started_at {float} NOT NULL,
            last_message_at {float} NOT NULL)""",
        "CREATE INDEX conversations_key ON conversations (destination, receiver, sender, id)",
        "CREATE INDEX conversations_thread ON conversations (destination, chat, thread)",
        """CREATE TABLE chat_messages (
            id {id}, destination TEXT NOT NULL, chat TEXT NOT NULL, message TEXT NOT NULL,
            conversation_id BIGINT, outbox_id BIGINT, part INTEGER NOT NULL,
            gateway_messageid TEXT, created_at {float} NOT NULL,
            UNIQUE (outbox_id, part))""",
        "CREATE INDEX chat_messages_location ON chat_messages (destination, chat, message)",
        "CREATE INDEX chat_messages_gateway ON chat_messages (gateway_messageid)",
    ),
    (
        """CREATE TABLE message_status (
            messageid TEXT PRIMARY KEY, sender TEXT NOT NULL, receiver TEXT NOT NULL,
            delivery_code INTEGER, delivery_detail INTEGER, rank INTEGER NOT NULL,
            status_at TEXT, event_id BIGINT, updated_at {float} NOT NULL,
            read_at TEXT, read_event_id BIGINT, read_shown INTEGER)""",
        """CREATE TABLE alert_groups (
            id {id}, group_key TEXT NOT NULL UNIQUE, labels TEXT NOT NULL,
            sender TEXT NOT NULL, timezone TEXT NOT NULL, count INTEGER NOT NULL,
            codes TEXT NOT NULL, receivers TEXT NOT NULL, others INTEGER NOT NULL,
            first_at {float} NOT NULL, last_at {float} NOT NULL, last_event_id BIGINT NOT NULL)""",
        """CREATE TABLE alert_notices (
            group_id BIGINT NOT NULL, destination TEXT NOT NULL, pending_at {float},
            notified_at {float}, notified_count INTEGER NOT NULL, posted_at {float},
            chat TEXT, message TEXT, PRIMARY KEY (group_id, destination))""",
    ),
    (
        # Jobs that carry their own content (operator notices) rather than an event's.
        "ALTER TABLE outbox ADD COLUMN payload TEXT",
    ),
    (
        # Every job has a typed JSON payload (bridge/jobs.py); alert groups keep JSON state and
        # the matchers of their route, so reordering the routes does not move a group.
        {"postgresql": "ALTER TABLE outbox ALTER COLUMN payload TYPE JSONB USING payload::jsonb"},
        {
            "postgresql": "ALTER TABLE alert_groups ALTER COLUMN labels TYPE JSONB "
            "USING labels::jsonb, ALTER COLUMN codes TYPE JSONB USING codes::jsonb, "
            "ALTER COLUMN receivers TYPE JSONB USING receivers::jsonb"
        },
        "ALTER TABLE alert_groups ADD COLUMN route {json}",
        _typed_job_payloads,
    ),
    (
        # Agents answer from the chat thread: every inbound chat event kept raw, first.
        """CREATE TABLE chat_events (
            id {id}, platform TEXT NOT NULL, event_key TEXT NOT NULL, status TEXT NOT NULL,
            body TEXT NOT NULL, received_at {float} NOT NULL, UNIQUE (platform, event_key))""",
        """CREATE TABLE replies (
            id {id}, chat_event_id BIGINT NOT NULL, destination TEXT NOT NULL,
            conversation_id BIGINT NOT NULL, chat TEXT NOT NULL, message TEXT NOT NULL,
            state TEXT NOT NULL, messageid TEXT, shown TEXT, problem TEXT,
            created_at {float} NOT NULL, updated_at {float} NOT NULL)""",
        "CREATE INDEX replies_messageid ON replies (messageid)",
        """CREATE TABLE opt_outs (
            receiver TEXT NOT NULL, sender TEXT NOT NULL, at {float} NOT NULL,
            PRIMARY KEY (receiver, sender))""",
    ),
    (
        # Alerts say when they are over; a read report finds the thread of the message a
        # customer replied to.
        "ALTER TABLE alert_notices ADD COLUMN resolved_at {float}",
        "ALTER TABLE chat_messages ADD COLUMN replied_to TEXT",
        "CREATE INDEX chat_messages_replied_to ON chat_messages (replied_to)",
    ),
    (
        # Retention and erasure: content is erased in place (the row stays, so counts and
        # deduplication do too); `erased_at` marks what is done.
        "ALTER TABLE events ADD COLUMN erased_at {float}",
        "ALTER TABLE message_status ADD COLUMN erased_at {float}",
        "ALTER TABLE chat_events ADD COLUMN erased_at {float}",
        "CREATE INDEX events_unerased ON events (received_at) WHERE erased_at IS NULL",
        "CREATE INDEX message_status_unerased ON message_status (updated_at) "
        "WHERE erased_at IS NULL",
        "CREATE INDEX webhook_requests_received ON webhook_requests (received_at)",
        "CREATE INDEX outbox_finished ON outbox (status, finished_at)",
        "CREATE INDEX chat_messages_created ON chat_messages (created_at)",
        "CREATE INDEX chat_messages_conversation ON chat_messages (conversation_id)",
        "CREATE INDEX conversations_last ON conversations (last_message_at)",
        "CREATE INDEX alert_groups_last ON alert_groups (last_at)",
        "CREATE INDEX chat_events_unerased ON chat_events (received_at) WHERE erased_at IS NULL",
        # What pruning keeps: agents' messages not sent yet, conversations with a reply to settle.
        "CREATE INDEX replies_chat_event ON replies (chat_event_id, state)",
        "CREATE INDEX replies_conversation ON replies (conversation_id, state)",
        "CREATE INDEX replies_updated ON replies (updated_at)",
        # Hot queries that would scan whole tables: a customer's live conversations (delivery
        # reports), and whether a lane was used lately (operator notices).
        "CREATE INDEX conversations_sender ON conversations (sender, last_message_at)",
        "CREATE INDEX outbox_lane_created ON outbox (lane, created_at)",
    ),
    (
        # One pace per destination, shared by every worker process (bridge/store/pace.py).
        """CREATE TABLE pace (
            destination TEXT PRIMARY KEY, tokens {float} NOT NULL, updated_at {float} NOT NULL,
            paused_until {float} NOT NULL)""",
        # Pruning finds the destinations at rest without reading the table.
        "CREATE INDEX pace_updated ON pace (updated_at)",
    ),
    (
        # Fewer index pages written for every job, which each group commit pays for. Only
        # notice lanes ask when they were last used, so the index covers notice lanes only
        # (over every lane it costs a leaf page per conversation in each commit). And
        # outbox_finished (status, finished_at) serves every query by status, so
        # outbox_status (status, id) goes.
        "DROP INDEX outbox_lane_created",
        "CREATE INDEX outbox_notice_lane ON outbox (lane, created_at) WHERE kind = 'notice'",
        "DROP INDEX outbox_status",
    ),
    (
        # One chat message gives at most one SMS, whatever path it arrived by (two bots in one
        # chat, an update sent again): a reply's (platform, chat, message) is unique across
        # processes. Duplicates an older bridge stored keep no platform, so the index builds.
        "ALTER TABLE replies ADD COLUMN platform TEXT",
        "UPDATE replies SET platform = (SELECT chat_events.platform FROM chat_events "
        "WHERE chat_events.id = replies.chat_event_id) "
        "WHERE id IN (SELECT min(id) FROM replies GROUP BY chat, message)",
        "CREATE UNIQUE INDEX replies_chat_message ON replies (platform, chat, message)",
    ),
    (
        # One process at a time holds a Socket Mode connection or a Telegram poller.
        """CREATE TABLE holds (
            name TEXT PRIMARY KEY, holder TEXT NOT NULL, expires_at {float} NOT NULL)""",
    ),
    (
        # One incident per account-wide cause: what it is, whom it failed for, what was never
        # sent, the low credit, and when the cause went away. Only open incidents are indexed:
        # every delivered report asks whether it ends one.
        "ALTER TABLE alert_groups ADD COLUMN cause INTEGER",
        "ALTER TABLE alert_groups ADD COLUMN senders {json}",
        "ALTER TABLE alert_groups ADD COLUMN unsent {json}",
        "ALTER TABLE alert_groups ADD COLUMN samples {json}",
        "ALTER TABLE alert_groups ADD COLUMN balance TEXT",
        "ALTER TABLE alert_groups ADD COLUMN cleared_at {float}",
        "CREATE INDEX alert_groups_open ON alert_groups (last_at) "
        "WHERE cause IS NOT NULL AND cleared_at IS NULL",
    ),
    (
        # Finished jobs only. Over every job, (status, finished_at) looked to the planner like
        # the way to a claim's pending jobs: each claim read the whole backlog through it and
        # sorted it (SQLite always, PostgreSQL without fresh statistics), where the due index
        # stops at the first heads. Jobs finished by an older bridge without a time get their
        # creation's, so the index holds every finished job.
        "UPDATE outbox SET finished_at = created_at "
        "WHERE status <> 'pending' AND finished_at IS NULL",
        "DROP INDEX outbox_finished",
        "CREATE INDEX outbox_finished ON outbox (status, finished_at) "
        "WHERE finished_at IS NOT NULL",
    ),
    (
        # On SQLite the webhook path stores jobs outside their lanes' index, and the worker's
        # claims admit them, oldest first: in that index every conversation's next job is a
        # leaf page of its own, which every group commit wrote and synced, more of them the
        # longer the backlog. The jobs already queued are admitted. PostgreSQL stores jobs
        # admitted: there the index is the server's work, beside the event loop.
        "ALTER TABLE outbox ADD COLUMN admitted INTEGER NOT NULL DEFAULT 1",
        {"sqlite": "DROP INDEX outbox_lane"},
        {
            "sqlite": "CREATE INDEX outbox_lane ON outbox (lane, id) "
            "WHERE status = 'pending' AND admitted = 1"
        },
        {"sqlite": "CREATE INDEX outbox_unadmitted ON outbox (id) WHERE admitted = 0"},
    ),
    (
        # The webhook path stores the raw body alone; the worker's intake plans its events
        # and jobs later, oldest body first (`intake.planning`). Bodies stored before are
        # planned already.
        "ALTER TABLE webhook_requests ADD COLUMN planned_at {float}",
        "UPDATE webhook_requests SET planned_at = received_at",
        "CREATE INDEX webhook_requests_unplanned ON webhook_requests (id) WHERE planned_at IS NULL",
    ),
)

LATEST = len(STEPS)

_TYPES = {
    "sqlite": {
        "id": "INTEGER PRIMARY KEY",
        "blob": "BLOB",
        "float": "DOUBLE PRECISION",
        "json": "TEXT",
    },
    "postgresql": {
        "id": "BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY",
        "blob": "BYTEA",
        "float": "DOUBLE PRECISION",
        "json": "JSONB",
    },
}


class SchemaTooNew(Exception):
    """The database was migrated by a newer smsbridge: refuse instead of corrupting it."""


async def current_version(connection: AsyncConnection) -> int:
    await connection.execute(
        text("CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)")
    )
    version = (await connection.execute(text("SELECT max(version) FROM schema_version"))).scalar()
    return int(version or 0)


async def migrate(database: Database, target: int = LATEST) -> tuple[int, int]:
    """Bring the schema to `target` (an older one only to test upgrades); return (version
    before, version after)."""
    types = _TYPES[database.dialect]
    async with database.transaction() as connection:
        if database.dialect == "postgresql":
            # Held until this transaction ends: a second `migrate` waits, then sees LATEST.
            await connection.execute(text(f"SELECT pg_advisory_xact_lock({_ADVISORY_LOCK})"))
        before = version = await current_version(connection)
        for number in range(version + 1, target + 1):
            for statement in STEPS[number - 1]:
                if callable(statement):
                    await statement(connection)
                    continue
                sql = statement if isinstance(statement, str) else statement.get(database.dialect)
                if sql is not None:
                    await connection.execute(text(sql.format(**types)))
            await connection.execute(
                text("INSERT INTO schema_version (version) VALUES (:version)"), {"version": number}
            )
            version = number
    if version > LATEST:  # raised once the transaction is over, its connection given back
        raise SchemaTooNew(
            f"the database schema is version {version}, newer than this smsbridge "
            f"({LATEST}): upgrade smsbridge instead"
        )
    return before, version


async def pending(database: Database) -> int:
    """How many steps the database is behind (0 when up to date)."""
    async with database.transaction() as connection:
        return max(LATEST - await current_version(connection), 0)
