"""A Telegram group that became a supergroup (`ChatMoved`): the bridge follows it.

The new chat id is remembered in the database, so every process and every restart posts
there, whoever met the move first; reply chains left in the old group start afresh in the
new chat, where agents' answers are taken like any others (`chat_inbound`); on-call is told
once, so someone puts the new id in the config.
"""

from __future__ import annotations

import logging

from bridge.chat.base import ChatMoved
from bridge.config import Config
from bridge.intake import notices
from bridge.store import conversations as conversations_store
from bridge.store import facts as facts_store
from bridge.store.db import Database

log = logging.getLogger(__name__)


async def follow(
    database: Database, config: Config, destination: str, moved: ChatMoved, now: float
) -> None:
    """Remember the move, restart the threads left behind, tell on-call (the first time)."""
    async with database.transaction() as connection:
        first = await facts_store.remember_move(
            database, connection, moved.old_chat, moved.new_chat
        )
        await conversations_store.forget_threads_in(connection, destination, moved.old_chat)
    if first:
        log.warning("%s", moved.detail)
        chats = (moved.old_chat, moved.new_chat)
        await notices.chat_moved(database, config, destination, chats, moved.detail, now)
