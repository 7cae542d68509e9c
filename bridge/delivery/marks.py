"""The ✅ on a Slack thread's first post, where agents answer (`replies` on): set while the
latest word in the conversation is ours (an answer reached the gateway, from any
destination), taken off when the customer writes again, so the channel shows which
conversations wait for an answer.

Only Slack threads are marked: a Telegram bot has one reaction per message, and a topic's
first post has no place everyone sees. Slack's `already_reacted` and `no_reaction` count as
done (the adapter's), so a retried job marks or unmarks once.
"""

from __future__ import annotations

from bridge.chat.base import MessageGone, Sent
from bridge.jobs import Delivery
from bridge.store import replies as replies_store
from bridge.store.conversations import Conversation

ANSWERED = "✅"  # Slack's `white_check_mark`


def _root(delivery: Delivery, conversation: Conversation) -> Sent | None:
    """The thread's first post, when the conversation's destination is a Slack channel."""
    destination = delivery.config.destinations.get(conversation.destination)
    # Only where agents answer: there the token has reactions:write (`smsbridge doctor`).
    if destination is None or destination.kind != "slack" or destination.replies is None:
        return None
    if conversation.chat is None or conversation.thread is None:
        return None
    return Sent(conversation.chat, conversation.thread, conversation.thread)


async def mark_answered(delivery: Delivery, conversation: Conversation) -> None:
    """An answer was sent: mark the conversation's Slack thread as answered."""
    root = _root(delivery, conversation)
    if root is None:
        return
    try:
        await delivery.adapter.react(root, ANSWERED)
    except MessageGone:
        pass  # someone deleted the thread's first post: nothing is left to mark


async def unmark_on_customer(
    delivery: Delivery, conversation: Conversation, since: float, until: float
) -> None:
    """The customer wrote again (received at `until`; their previous message at `since`):
    take the mark off when an answer was sent in between, which is when it was set."""
    root = _root(delivery, conversation)
    if root is None:
        return
    async with delivery.database.transaction() as connection:
        answered = await replies_store.answered_between(
            connection, conversation.receiver, conversation.sender, since, until
        )
    if answered:
        await delivery.adapter.unreact(root, ANSWERED)
