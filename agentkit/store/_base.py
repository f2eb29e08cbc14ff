"""The `ConversationStore` Protocol every backend implements, and the rules they share.

Shared behaviour (the same test suite runs against every backend):

- Ids: `start_conversation` makes a random hex id unless given one; a taken id raises `ValueError`.
- Order: messages get `index` 0, 1, 2, ... per conversation in the order the store receives them,
  even from several writers. `list_conversations` is newest first (by `started_at`, then id);
  `caller_history` is oldest first.
- Unknown conversation ids raise `KeyError` from the writing methods; `get_conversation` returns
  `None` and `messages` / `metrics` return `[]`.
- Each write is complete when its coroutine returns (SQLite: its own committed transaction).
- After `aclose()`, every method raises `RuntimeError`; `aclose()` itself may be called again.

Crashes. Each store object is one *owner* (a random `owner` id): the conversations it starts are
recorded as its own, and while its process runs it renews a lease (`renew_lease`, which the server
does every few seconds). A process that dies, even by SIGKILL, leaves its conversations open and its
lease running out; `end_abandoned` (which every server runs at startup and then now and then) ends
every open conversation whose owner's lease has expired, with `end_reason="crashed"`. So several
processes on one store never end each other's live conversations, and no conversation stays open
forever.

Calls that reconnect. A conversation may carry the transport's id of its call (`call_id`: Twilio's
`CallSid`). When a call's media stream drops, or the process serving it dies, the call reconnects
to some worker (Twilio requests the `<Connect action>` URL), which finds the conversation with
`conversation_of_call` and, if it ended for one of `RESUMABLE_END_REASONS` or is still open, takes
it over with `claim_conversation`: the call goes on in the same conversation, with its history.
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

from agentkit.store._models import Conversation, Role, StoredMessage, ToolCallRecord, TurnMetrics

__all__ = [
    "DEFAULT_LIST_LIMIT",
    "MAX_LIST_LIMIT",
    "RESUMABLE_END_REASONS",
    "ConversationStore",
    "check_limits",
]

DEFAULT_LIST_LIMIT = 50
"""How many conversations `list_conversations` returns when not told."""
MAX_LIST_LIMIT = 500
"""The most conversations one `list_conversations` call (and one API page) returns."""
RESUMABLE_END_REASONS = frozenset({"crashed", "dropped", "server_shutdown"})
"""End reasons after which a call may go on in the same conversation: its process died (`crashed`),
its media stream dropped without the call ending (`dropped`), or its server shut down gracefully
(`server_shutdown`). Any other reason (the caller or the agent hung up, a time limit) ends the call."""


@runtime_checkable
class ConversationStore(Protocol):
    """Conversations, their messages and per-turn metrics, kept across calls (and processes)."""

    async def start_conversation(
        self,
        agent: str,
        channel: str,
        caller: str | None = None,
        conversation_id: str | None = None,
        *,
        call_id: str | None = None,
    ) -> Conversation:
        """Record a new conversation starting now and return it (`call_id`: the transport's id of
        the call, for `conversation_of_call`)."""
        ...

    async def conversation_of_call(self, call_id: str) -> Conversation | None:
        """The latest conversation started for the call `call_id` (by `started_at`), or `None`."""
        ...

    async def claim_conversation(self, conversation_id: str) -> Conversation:
        """Take the conversation over: this store becomes its owner and it is open again (its end
        time and reason cleared), so a call that reconnected goes on in it. Raises `KeyError` for an
        unknown id."""
        ...

    async def end_conversation(
        self, conversation_id: str, *, reason: str = "ended", if_owner: bool = False
    ) -> Conversation:
        """Mark the conversation ended now, for `reason`, and return it; ending it again keeps the
        first end time and reason. `if_owner`: only while this store owns it; one another store has
        claimed since (the call reconnected to another worker) is returned unchanged, so the worker
        the call left cannot end it there."""
        ...

    @property
    def owner(self) -> str:
        """This store object's owner id: the conversations it starts are its own (see above)."""
        ...

    async def renew_lease(self, ttl_s: float) -> None:
        """Keep this owner's conversations alive for `ttl_s` seconds from now."""
        ...

    async def end_abandoned(self, reason: str = "crashed") -> list[str]:
        """End every open conversation of another owner whose lease has expired (or that has none);
        the ids ended."""
        ...

    async def add_message(
        self,
        conversation_id: str,
        role: Role,
        text: str,
        *,
        started_at: float,
        ended_at: float | None = None,
        interrupted: bool = False,
    ) -> StoredMessage:
        """Append a message to the conversation; the store assigns its `index`."""
        ...

    async def add_metrics(self, metrics: TurnMetrics) -> None:
        """Record one turn's metrics; a second record for the same turn raises `ValueError`."""
        ...

    async def add_tool_call(self, record: ToolCallRecord) -> None:
        """Keep one tool call of the conversation (appended in the order received)."""
        ...

    async def tool_calls(self, conversation_id: str) -> list[ToolCallRecord]:
        """The conversation's tool calls in the order they were added."""
        ...

    async def get_conversation(self, conversation_id: str) -> Conversation | None:
        """The conversation with this id, or `None`."""
        ...

    async def messages(self, conversation_id: str) -> list[StoredMessage]:
        """The conversation's messages in `index` order."""
        ...

    async def metrics(self, conversation_id: str) -> list[TurnMetrics]:
        """The conversation's turn metrics in `turn_index` order."""
        ...

    async def list_conversations(
        self,
        *,
        agent: str | None = None,
        caller: str | None = None,
        limit: int = DEFAULT_LIST_LIMIT,
        before: float | None = None,
    ) -> list[Conversation]:
        """Newest first, at most `limit` (1 to `MAX_LIST_LIMIT`), optionally filtered.

        `before` (unix seconds) keeps only conversations that started strictly earlier: pass the
        `started_at` of the last one of a page to get the next page.
        """
        ...

    async def caller_history(
        self,
        agent: str,
        caller: str,
        *,
        limit_messages: int = 50,
        exclude_conversation_id: str | None = None,
    ) -> list[StoredMessage]:
        """A returning caller's messages with this agent, across their conversations, oldest first.

        Only the newest `limit_messages` are returned (0 gives `[]`). Pass the current conversation's
        id as `exclude_conversation_id` to get only the earlier conversations.
        """
        ...

    async def ping(self) -> None:
        """Check that the store answers (the server asks at startup, so a wrong URL fails fast).

        Raises `ConfigError` naming the problem, never a password.
        """
        ...

    async def aclose(self) -> None:
        """Release the store's resources (connection, worker thread)."""
        ...


def check_limits(*, limit: int | None = None, limit_messages: int | None = None) -> None:
    """Raise `ValueError` for a list `limit` outside 1..`MAX_LIST_LIMIT` or a negative `limit_messages`."""
    if limit is not None and not 1 <= limit <= MAX_LIST_LIMIT:
        raise ValueError(f"limit must be between 1 and {MAX_LIST_LIMIT}, not {limit}")
    if limit_messages is not None and limit_messages < 0:
        raise ValueError(f"limit_messages must be >= 0, not {limit_messages}")
