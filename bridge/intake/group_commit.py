"""Group commit: webhook bodies that arrive together share one transaction and one commit.

The request path stores each raw body here and nothing else; the worker's intake
(`planning`) plans its events and jobs later, in the order the bodies were stored.

Bodies submitted in the same pass of the event loop go together (the pass that read several
requests parses them all before the group starts), and bodies arriving while a commit is
under way wait for it and then go together in the next one. Each request is answered only
after the commit that holds its body (`submit` returns then). When the database cannot take
a group (down, locked, too slow: `store.db.UNAVAILABLE`), `on_unavailable` hears it once for
the group and every request in it gets `NotStored`, to answer 503. On SQLite (one connection,
`synchronous=FULL`) this turns one fsync per webhook into one fsync per group, and it is the
only webhook writer: the worker's short transactions wait for the connection in the pool's
queue until the group commit gives it back (within KEEP seconds, even under a steady stream
of webhooks). On PostgreSQL a second group commits beside the first (its round trip and the
server's commit overlap the next requests' parsing), except where the two share a
conversation: then the later one waits, so a conversation's bodies get ids (the order the
intake plans them in) in the order they arrived.

Where one group commits at a time (SQLite), the next group waits, for up to COMEBACK after a
commit, for the senders that commit answered: under load they send their next webhook at
once. All the senders then share one commit, where otherwise they split into two halves
taking turns, each paying a commit's fixed cost (its WAL sync and the index pages every group
writes). A sender alone, or the last of them back, starts it at once.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass

from sqlalchemy.ext.asyncio import AsyncConnection

from bridge import phones
from bridge.intake.ingest import Body
from bridge.store import group_writes
from bridge.store.db import UNAVAILABLE, Database, describe_error
from bridge.writes import LastWrite

log = logging.getLogger(__name__)

GROUP_EVENTS = 20_000  # at most this many events in one group (a body always fits alone)
# Groups committing at once. SQLite has one writer. On PostgreSQL a second group is written
# while the first waits for its round trip and commit, unless they share a conversation.
IN_FLIGHT = {"sqlite": 1, "postgresql": 2}
# A group's connection is kept for the next group, for at most this long from its checkout:
# checking one out of SQLAlchemy's pool and back is a noticeable share of what storing a
# small group costs. The bound gives the worker (on SQLite the pool's only connection is the
# webhooks' too) its turn under a steady stream of webhooks.
KEEP = 0.05  # seconds
# How long a kept connection waits for the next group, once none commits or waits for its
# senders (COMEBACK), before going back to the pool: short enough to hold nothing idle.
IDLE = 0.002  # seconds
# How long, at most, the next group waits for the senders a commit answered (one group at a
# time only): long enough for the event loop to send the answers and read the next requests,
# short against a commit.
COMEBACK = 0.001  # seconds
# A body with reports waits for every other: their planning reads and writes what other
# conversations share, so they are planned in the order they arrived among all the others.
_EVERY = "*"


class NotStored(Exception):
    """The database could not store the group this body was in; nothing of it was kept."""


@dataclass
class _Waiting:
    body: Body
    answer: asyncio.Future[None]
    conversations: frozenset[str]  # its jobs will join these lanes (or _EVERY)


class GroupCommit:
    """Stores webhook bodies in shared transactions: `submit` returns once its body is
    committed, with whatever else was waiting (see the module's docstring)."""

    def __init__(
        self,
        database: Database,
        on_unavailable: Callable[[Exception, int], None],
        group_events: int = GROUP_EVENTS,
        *,
        sender: str = "",
    ) -> None:
        """`on_unavailable(error, bodies)`: called once per group the database could not take.
        `sender`: who the NOTIFY of each commit names (`wakeups.announce`): the worker of
        this process, which the caller wakes itself."""
        self.database, self.group_events = database, group_events
        self.on_unavailable = on_unavailable
        self.sender = sender
        self.in_flight = IN_FLIGHT[database.dialect]
        self._waiting: list[_Waiting] = []
        self._committing: dict[asyncio.Task[None], list[_Waiting]] = {}  # the groups
        self._kept: list[tuple[AsyncConnection, float]] = []  # connections, and since when
        self._idle: asyncio.TimerHandle | None = None  # gives the kept ones back
        self._start_due = False  # a start is scheduled for the end of this loop pass
        self._comeback: asyncio.TimerHandle | None = None  # the wait for answered senders
        self._expected = 0  # bodies waiting once they are back
        self._closing: set[asyncio.Task[None]] = set()
        self.groups = 0  # transactions committed (or tried): fewer than requests under load
        self.writes = LastWrite()  # whether the latest group was stored (readiness)
        # Set while no body waits, no group commits and no connection is kept: the pool has
        # every connection this took back. Lets a caller wait for that instead of guessing.
        self.at_rest = asyncio.Event()
        self.at_rest.set()

    async def warm(self) -> None:
        """Before the first webhook: prepare the group's statement on as many connections as
        groups may commit at once, so the first webhooks after a start do not wait for it to
        be planned. The pool hands the connections given back last out first. A database not
        answering yet only leaves that to the first groups. (SQLite plans in microseconds.)"""
        if self.database.dialect != "postgresql":
            return
        connections: list[AsyncConnection] = []  # all taken at once: each a different one
        try:
            for _ in range(self.in_flight):
                connections.append(await self.database.connect())
                await group_writes.prepare(self.database, connections[-1])
        except UNAVAILABLE as error:
            log.warning("webhook statements not prepared ahead: %s", describe_error(error))
        finally:
            await _close(connections)

    async def submit(self, body: Body) -> None:
        """Store `body` with whatever else is waiting; return once it is committed. Raises
        `NotStored` when the database could not take its group."""
        answer: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        # Only a second group in flight needs to know what a body shares with the first.
        shares = _conversations(body) if self.in_flight > 1 else frozenset()
        self._waiting.append(_Waiting(body, answer, shares))
        self.at_rest.clear()
        if self._comeback is not None and len(self._waiting) >= self._expected:
            self._comeback.cancel()  # the answered senders are back
            self._comeback = None
        if not self._start_due and self._comeback is None:
            # At the end of this pass: the other requests it read join this group instead of
            # waiting for a commit of this body alone (a commit costs much the same whatever
            # the group's size).
            self._start_due = True
            asyncio.get_running_loop().call_soon(self._start_now)
        # A request cancelled here cancels only its own answer: the commit is a task of its
        # own, shares nothing else with it, and still stores its body.
        return await answer

    def _start_now(self) -> None:
        self._start_due = False
        if self._comeback is None:  # else it starts the group
            self._start()

    def _come_back(self) -> None:
        self._comeback = None
        self._start()
        self._give_back_later()
        self._rest_if_idle()

    def _start(self, answered: int = 0) -> None:
        """Start groups from the waiting bodies, in arrival order, while fewer than
        `in_flight` commit. A body waits while a group with one of its conversations commits,
        so a conversation's jobs are committed (and delivered) in the order they arrived."""
        while self._waiting and len(self._committing) < self.in_flight:
            busy = frozenset().union(
                *(w.conversations for group in self._committing.values() for w in group)
            )
            group = self._next_group(busy, self._share(answered))
            if not group:
                break
            task = asyncio.create_task(self._commit(group), name="group-commit")
            self._committing[task] = group
            task.add_done_callback(self._committed)

    def _share(self, answered: int) -> int:
        """How many bodies a group may take: an equal share, among the groups that may be in
        flight, of the requests under way (those waiting, committing, or `answered` by the
        group that just committed and soon back). Without it, two groups in flight settle
        into one of a single body and one of all the others, which pays a second commit for
        one request."""
        committing = sum(len(group) for group in self._committing.values())
        requests = answered + len(self._waiting) + committing
        return max(1, -(-requests // self.in_flight))

    def _committed(self, task: asyncio.Task[None]) -> None:
        answered = len(self._committing.pop(task))
        if self.in_flight == 1 and len(self._waiting) < self._expected:
            # Wait for the senders just answered (`submit` starts the group once they are
            # back), or COMEBACK at most. Some may be back already: their requests can be
            # read before this callback runs.
            self._comeback = asyncio.get_running_loop().call_later(COMEBACK, self._come_back)
            return
        self._start(answered)
        self._give_back_later()
        self._rest_if_idle()

    def _next_group(self, busy: frozenset[str], share: int) -> list[_Waiting]:
        group: list[_Waiting] = []
        events = 0
        while (
            self._waiting
            and len(group) < share
            and not _overlap(self._waiting[0].conversations, busy)
        ):
            size = len(self._waiting[0].body.items)
            if group and events + size > self.group_events:
                break
            events += size
            group.append(self._waiting.pop(0))
        return group

    async def _commit(self, group: list[_Waiting]) -> None:
        self.groups += 1
        self._expected = 0  # a failed group's senders are not waited for
        try:
            # A group alone (light traffic) keeps nothing: the worker may be waiting for
            # the connection this commit just woke it for.
            company = len(group) > 1 or bool(self._waiting)
            async with self._connection(keep=company) as connection:
                await group_writes.store(
                    self.database,
                    connection,
                    [group_writes.NewBody(w.body.raw, w.body.received_at) for w in group],
                    self.sender,
                )
                self.writes.succeeded(time.time())  # committed: `store` commits
                self._expected = len(self._waiting) + len(group)  # once all are back
                for waiting in group:
                    if not waiting.answer.done():
                        waiting.answer.set_result(None)
        except UNAVAILABLE as error:  # one log line for the group; each request a 503
            self.writes.failed(f"cannot store webhooks ({describe_error(error)})", time.time())
            self.on_unavailable(error, len(group))
            for waiting in group:
                if not waiting.answer.done():
                    waiting.answer.set_exception(NotStored())
            return
        except Exception as error:  # a bug: every request of the group hears it
            for waiting in group:
                if not waiting.answer.done():
                    waiting.answer.set_exception(error)

    @asynccontextmanager
    async def _connection(self, *, keep: bool) -> AsyncIterator[AsyncConnection]:
        """A connection for one group: one an earlier group kept, else one from the pool.
        With `keep`, kept for the next group for up to KEEP seconds from its checkout, and
        given back once no group took it within IDLE; dropped after an error (it may be the
        connection's)."""
        if self._kept:
            connection, since = self._kept.pop()
        else:
            connection, since = await self.database.connect(), time.monotonic()
        try:
            yield connection
        except BaseException:
            await connection.close()
            raise
        if not keep or time.monotonic() - since >= KEEP:
            await connection.close()
            return
        self._kept.append((connection, since))

    def _give_back_later(self) -> None:
        """Once a group is done and no other starts (or commits) now: the kept connections
        go back to the pool unless a group takes them within IDLE."""
        if self._kept and not self._committing and self._comeback is None:
            if self._idle is not None:
                self._idle.cancel()
            self._idle = asyncio.get_running_loop().call_later(IDLE, self._give_back)

    def _give_back(self) -> None:
        """No group took the kept connections within IDLE: back to the pool with them."""
        self._idle = None
        kept, self._kept = self._kept, []
        if kept:
            task = asyncio.create_task(_close([connection for connection, _ in kept]))
            self._closing.add(task)
            task.add_done_callback(self._closed)
        self._rest_if_idle()

    def _closed(self, task: asyncio.Task[None]) -> None:
        self._closing.discard(task)
        self._rest_if_idle()

    def _rest_if_idle(self) -> None:
        if not (self._waiting or self._committing or self._kept or self._closing):
            if self._comeback is None:
                self.at_rest.set()

    async def close(self) -> None:
        """Give back what is kept (at shutdown, once no request is under way)."""
        if self._idle is not None:
            self._idle.cancel()
        if self._comeback is not None:
            self._comeback.cancel()
            self._comeback = None
        self._give_back()
        await asyncio.gather(*self._closing)


async def _close(connections: list[AsyncConnection]) -> None:
    for connection in connections:
        await connection.close()


def _overlap(conversations: frozenset[str], busy: frozenset[str]) -> bool:
    if not busy or not conversations:
        return False
    return _EVERY in busy or _EVERY in conversations or not conversations.isdisjoint(busy)


def _conversations(body: Body) -> frozenset[str]:
    """The lanes a body's jobs may join: each inbox message's (receiver, sender); every lane
    for reports, whose planning reads and writes what other conversations share."""
    found = set()
    for item in body.items:
        kind = item.get("webhook_type") if isinstance(item, dict) else None
        if kind in ("delivery_report", "read_report"):
            return frozenset({_EVERY})
        message = item.get("message") if kind == "inbox_message" else None
        if isinstance(message, dict):
            receiver, sender = message.get("receiver"), message.get("sender")
            if isinstance(receiver, str) and isinstance(sender, str):
                found.add(f"{phones.key(receiver)}|{phones.key(sender)}")
    return frozenset(found)
