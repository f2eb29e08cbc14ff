"""The conversation-state store: conversations, messages and per-turn metrics, kept across calls.

`open_store(url)` picks a backend by URL (`sqlite:///path.db`, the default; `redis://host/db` when
several workers serve one agent; `memory://`); every
backend implements the `ConversationStore` Protocol. `agentkit.server.conversation_api(store)` serves
a store read-only as JSON. `LeaseKeeper` ends the conversations of processes that died.
"""

from agentkit.store._base import MAX_LIST_LIMIT, ConversationStore
from agentkit.store._lease import LeaseKeeper
from agentkit.store._memory import MemoryStore
from agentkit.store._models import Conversation, Role, StoredMessage, ToolCallRecord, TurnMetrics
from agentkit.store._open import SUPPORTED_SCHEMES, open_store
from agentkit.store._redis import RedisStore
from agentkit.store._sqlite import SCHEMA_VERSION, SQLiteStore

__all__ = [
    "MAX_LIST_LIMIT",
    "SCHEMA_VERSION",
    "SUPPORTED_SCHEMES",
    "Conversation",
    "ConversationStore",
    "LeaseKeeper",
    "MemoryStore",
    "RedisStore",
    "Role",
    "SQLiteStore",
    "StoredMessage",
    "ToolCallRecord",
    "TurnMetrics",
    "open_store",
]
