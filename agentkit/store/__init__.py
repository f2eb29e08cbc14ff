"""The conversation-state store: conversations, messages and per-turn metrics, kept across calls.

`open_store(url)` picks a backend by URL (`sqlite:///path.db`, the default; `redis://host/db` when
several workers serve one agent; `memory://`); every
backend implements the `ConversationStore` Protocol. `agentkit.server.conversation_api(store)` serves
a store read-only as JSON. `LeaseKeeper` ends the conversations of processes that died.

`open_session_bus(url)` opens the `SessionBus` that goes with a store URL: with `redis://`, live
sessions are reachable from every worker (new input, their outputs, a hang-up).
"""

from agentkit.store._base import MAX_LIST_LIMIT, RESUMABLE_END_REASONS, ConversationStore
from agentkit.store._bus import (
    BusMessage,
    LocalSessionBus,
    RedisSessionBus,
    SessionBus,
    open_session_bus,
)
from agentkit.store._lease import LeaseKeeper
from agentkit.store._memory import MemoryStore
from agentkit.store._models import Conversation, Role, StoredMessage, ToolCallRecord, TurnMetrics
from agentkit.store._open import SUPPORTED_SCHEMES, open_store
from agentkit.store._redis import RedisStore
from agentkit.store._sqlite import SCHEMA_VERSION, SQLiteStore

__all__ = [
    "MAX_LIST_LIMIT",
    "RESUMABLE_END_REASONS",
    "SCHEMA_VERSION",
    "SUPPORTED_SCHEMES",
    "BusMessage",
    "Conversation",
    "ConversationStore",
    "LeaseKeeper",
    "LocalSessionBus",
    "MemoryStore",
    "RedisSessionBus",
    "RedisStore",
    "Role",
    "SQLiteStore",
    "SessionBus",
    "StoredMessage",
    "ToolCallRecord",
    "TurnMetrics",
    "open_session_bus",
    "open_store",
]
