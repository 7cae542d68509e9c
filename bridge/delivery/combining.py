"""When a destination is behind, a conversation's waiting messages go out as one post.

The worker claims a lane's head inbox job with the due inbox jobs queued right behind it
(its followers) only when the destination has no token left once the head took its own:
waiting messages pile up only when tokens ran short or the platform was down, and a lone
message, or one with a token free, is posted at once on its own. These pure decisions say how
many of the claimed messages one chat message shows; the rest wait for the next post.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

# Messages claimed for one combined post at most. The platform's size limit usually cuts
# sooner: a Slack message holds 50 blocks and each message takes two (its time line and its
# words), so about 20 fit; a Telegram message holds 4096 characters.
MOST = 50


def one_conversation(received_at: Sequence[float], idle_after: float) -> int:
    """How many of these messages, in order, belong to the first one's conversation: a gap
    longer than `idle_after` starts a new conversation, hence a new thread (`threads`)."""
    if not received_at:
        return 0
    latest = received_at[0]
    for count, at in enumerate(received_at[1:], start=1):
        if at - latest > idle_after:
            return count
        latest = max(latest, at)
    return len(received_at)


def most_that_fit(count: int, fits: Callable[[int], bool]) -> int:
    """The largest n in 1..`count` for which `fits(n)` (the first n messages make one chat
    message), searched in halves; adding a message never makes a post smaller. 1 (the first
    message alone, in as many parts as it needs) when not even two fit."""
    low, high = 1, count + 1  # fits(low) holds (alone), fits(high) is out of reach
    while high - low > 1:
        middle = (low + high) // 2
        if fits(middle):
            low = middle
        else:
            high = middle
    return low
