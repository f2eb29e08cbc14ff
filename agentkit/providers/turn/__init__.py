"""End-of-turn models: does the caller's turn so far sound finished? (`EndOfTurnModel`, `SmartTurn`)."""

from agentkit.providers.turn._base import EndOfTurnModel
from agentkit.providers.turn._smart_turn import SmartTurn

__all__ = ["EndOfTurnModel", "SmartTurn"]
