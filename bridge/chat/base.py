"""What every chat adapter speaks: a platform-neutral post, sent parts, classified errors.

The worker only ever sees these types; nothing Slack- or Telegram-specific leaks upward.
All text fields of a `Post` are *plain, untrusted text*: each adapter escapes them for its
platform. Only `Post.mention` is trusted markup (it comes from the operator's config).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from enum import Enum
from typing import Protocol

from bridge.errors import Permanent, Reason, Retryable


@dataclass(frozen=True)
class Quote:
    """An earlier message the post refers to (the outbound SMS a customer replied to)."""

    text: str
    when: str


@dataclass(frozen=True)
class Moment:
    """A point in time for a post's small print: `at` (Unix seconds) for platforms that show
    each reader their own clock (Slack's `<!date>`), `text` as everyone else reads it."""

    at: float
    text: str


class Tone(Enum):
    """How a post should strike the eye: adapters show it as a colour or an emoji."""

    PLAIN = "plain"
    FIRING = "firing"  # an alert that needs someone (red)
    RESOLVED = "resolved"  # an alert that is over (green)


@dataclass(frozen=True)
class Post:
    """One logical chat message, before any platform formatting.

    `heading` is shown bold (left out when empty: a later post in a thread), `context` as
    small print (one item each), `moment` after it, `body` verbatim, exactly as written.
    `author` is who wrote it (the customer), for platforms that can show a post under another
    name.

    `titled`: the heading (the customer's number, `author`) and context say what the thread's
    title says (who, on which line, over what), so a platform that shows the author's name
    leaves the heading out, and one that shows the title beside the post (a Telegram topic)
    leaves both out. `quiet`: not the customer's words nor a page, so nobody needs a
    notification for it (read lines, notes): platforms that can deliver it silently.

    `more`: further posts shown in the same chat message after this one, in order (a
    conversation's waiting messages combined): each shows its context, quote and body; all
    else is this post's.
    """

    heading: str
    context: Sequence[str] = ()
    body: str = ""
    quote: Quote | None = None
    mention: str | None = None
    author: str | None = None
    tone: Tone = Tone.PLAIN
    more: tuple[Post, ...] = ()
    moment: Moment | None = None
    titled: bool = False
    quiet: bool = False


@dataclass(frozen=True)
class Part:
    """One platform API call's worth of a post (Telegram splits long content into parts)."""

    text: str
    extra: dict[str, object] = field(default_factory=dict)


@dataclass(frozen=True)
class Sent:
    """Where a part landed.

    `chat` is the channel / chat id, `message` the platform's message id (Slack `ts`,
    Telegram `message_id`), and `thread` the reference later messages of the same
    conversation must be posted under.
    """

    chat: str
    message: str
    thread: str


@dataclass(frozen=True)
class Origin:
    """Which outbox job and part a chat message shows: carried with the post where the
    platform keeps it (Slack message metadata), so a job taken over after a crash can find
    what it already posted.

    `combined`: the further jobs whose messages the same chat message shows (part 0 of each),
    when a conversation's waiting messages were combined into one post.
    """

    job: int
    part: int
    combined: tuple[int, ...] = ()

    @property
    def jobs(self) -> frozenset[int]:
        """Every job the chat message shows."""
        return frozenset((self.job, *self.combined))


@dataclass(frozen=True)
class Found:
    """A post `find_posted` found: where it landed, and what it says it shows."""

    sent: Sent
    origin: Origin


ORIGIN = "origin"  # the `Part.extra` key that carries a part's `Origin`


class TokenRefused(Permanent):
    """The platform refused the destination's own token (invalid, revoked, account
    deactivated): nothing goes there until the token is replaced, so its jobs wait in the
    outbox instead of failing for good."""


class ThreadGone(Permanent):
    """The conversation's thread no longer exists (deleted topic): start a new one."""


class MessageGone(Permanent):
    """The message to edit no longer exists (someone deleted it): post it anew."""


class ThreadClosed(ThreadGone):
    """The thread is closed and the bot may not reopen it (closed forum topic): start a new
    one, and say there why."""


class ChatMoved(Retryable):
    """The chat has a new id (a Telegram group became a supergroup). The adapter posts to
    `new_chat` from now on; the job is tried again at once, there."""

    def __init__(self, detail: str, old_chat: str, new_chat: str) -> None:
        super().__init__(Reason.MOVED, detail, retry_after=0.0)
        self.old_chat = old_chat
        self.new_chat = new_chat


class ChatAdapter(Protocol):
    """A destination's platform client. Implementations own limits, escaping, error mapping."""

    name: str

    async def start(self) -> None:
        """Open connections / check the token. Raise `Permanent` when it can never work."""

    async def close(self) -> None:
        """Release connections."""

    async def open_thread(self, title: str) -> str | None:
        """Create a thread explicitly (Telegram forum topic) and return its reference.

        Return None where a conversation's thread is simply its first message (Slack, plain
        Telegram chats, console): the first `send` then returns the thread reference.
        """

    def render(self, post: Post) -> Sequence[Part]:
        """Turn a post into the API calls that show it, escaping every untrusted field."""

    async def send(self, part: Part, thread: str | None) -> Sent:
        """Post one part, under `thread` when given. Raises `Retryable` or `Permanent`."""

    async def reply(self, sent: Sent, part: Part) -> Sent:
        """Post one part as a reply to the message `sent` (Slack: in its thread; Telegram: a
        reply to it), so those following it are notified, as an edit would not."""

    async def find_posted(self, origin: Origin, thread: str | None, since: float) -> Found | None:
        """A message posted since `since` (in `thread`, or at the top level when None) that
        shows `origin`: its job and part, or for part 0 any of `origin.jobs` (a combined
        post shows part 0 of each of its jobs), if the platform can tell; None when not found
        or it cannot look."""

    async def edit(self, sent: Sent, part: Part) -> None:
        """Replace a message in place (alerts that grow). Raises `MessageGone` when the
        message was deleted, else `Retryable` or `Permanent`."""

    async def react(self, sent: Sent, emoji: str) -> None:
        """Add a reaction (a Unicode emoji) to a message. Raises `Retryable` or `Permanent`."""

    async def unreact(self, sent: Sent, emoji: str) -> None:
        """Take back a reaction the bot added (where a new one does not replace it)."""

    async def plain_text(self, text: str) -> str:
        """An agent's message as this platform delivered it → the plain text of an SMS."""
