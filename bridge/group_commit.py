"""Group commit: webhook bodies that arrive together share one transaction and one commit.

The first body is stored at once; bodies arriving while a commit is under way wait for it
and then go together in the next one. Each request is answered only after the commit that
holds its events (`submit` returns then). When the database cannot take a group (down,
locked, too slow: `store.db.UNAVAILABLE`), `on_unavailable` hears it once for the group and
every request in it gets `NotStored`, to answer 503. On SQLite (one connection,
`synchronous=FULL`) this turns one fsync per webhook into one fsync per group, and it is the
only webhook writer: the worker's short transactions wait for the connection in the pool's
queue between groups.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass

from bridge.config import Config
from bridge.ingest import Body, IngestResult, ingest_group
from bridge.store.db import UNAVAILABLE, Database

GROUP_EVENTS = 20_000  # at most this many events in one group (a body always fits alone)


class NotStored(Exception):
    """The database could not store the group this body was in; nothing of it was kept."""


@dataclass
class _Waiting:
    body: Body
    answer: asyncio.Future[IngestResult]


class GroupCommit:
    def __init__(
        self,
        database: Database,
        config: Config,
        on_unavailable: Callable[[Exception, int], None],
        group_events: int = GROUP_EVENTS,
    ) -> None:
        """`on_unavailable(error, bodies)`: called once per group the database could not take."""
        self.database, self.config, self.group_events = database, config, group_events
        self.on_unavailable = on_unavailable
        self._waiting: list[_Waiting] = []
        self._committing: asyncio.Task[None] | None = None
        self.groups = 0  # transactions committed (or tried): fewer than requests under load

    async def submit(self, body: Body) -> IngestResult:
        """Store `body` with whatever else is waiting; return once it is committed. Raises
        `NotStored` when the database could not take its group."""
        waiting = _Waiting(body, asyncio.get_running_loop().create_future())
        self._waiting.append(waiting)
        if self._committing is None or self._committing.done():
            self._committing = asyncio.create_task(self._commit_all(), name="group-commit")
        # A request cancelled here cancels only its own answer: the commit is a task of its
        # own, shares nothing else with it, and still stores its body.
        return await waiting.answer

    async def _commit_all(self) -> None:
        while self._waiting:
            group = self._next_group()
            self.groups += 1
            try:
                results = await ingest_group(
                    self.database, self.config, [waiting.body for waiting in group]
                )
            except UNAVAILABLE as error:  # one log line for the group; each request a 503
                self.on_unavailable(error, len(group))
                for waiting in group:
                    if not waiting.answer.done():
                        waiting.answer.set_exception(NotStored())
                continue
            except Exception as error:  # a bug: every request of the group hears it
                for waiting in group:
                    if not waiting.answer.done():
                        waiting.answer.set_exception(error)
                continue
            for waiting, result in zip(group, results, strict=True):
                if not waiting.answer.done():
                    waiting.answer.set_result(result)

    def _next_group(self) -> list[_Waiting]:
        group = [self._waiting.pop(0)]
        events = len(group[0].body.items)
        while self._waiting and events + len(self._waiting[0].body.items) <= self.group_events:
            events += len(self._waiting[0].body.items)
            group.append(self._waiting.pop(0))
        return group
