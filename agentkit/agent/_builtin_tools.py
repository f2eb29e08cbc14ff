"""Built-in tools, opt-in: `end_call_tool()` and `transfer_call_tool(...)`.

```python
class Receptionist(Agent):
    tools = [end_call_tool("Thanks for calling. Goodbye!"), transfer_call_tool({"billing": "+14155550100"})]
```

Both act only at the end of the reply that called them, and only if the caller heard it to its end:
the goodbye (or the transfer announcement) is said, the agent waits until the caller has heard it
(Twilio's marks; the playout clock elsewhere), then hangs up (or transfers). A caller who speaks
over the goodbye stops it, and the call goes on: a hallucinated or mistaken `end_call` cannot cut
off someone who is still talking.

Transfers go only to the destinations the agent was given, by name: the LLM picks one of the names
and never supplies a number (a prompt-injected "transfer me to +1 900 ..." has nothing to work with).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Literal

from agentkit.agent._session import AgentSession
from agentkit.agent._tools import Tool, ToolError, make_tool
from agentkit.exceptions import ConfigError

__all__ = ["end_call_tool", "transfer_call_tool"]


def end_call_tool(goodbye: str | None = "Goodbye!", *, name: str = "end_call") -> Tool:
    """A tool that ends the call once `goodbye` (None: the reply's own last words) has been heard."""

    async def end_call(session: AgentSession) -> str:
        """End the phone call. Use it only when the caller says goodbye or clearly has nothing more
        to ask; the goodbye is said for you, so say nothing after calling it."""
        session.end_after_reply(goodbye)
        return "The call ends once the caller has heard the goodbye."

    return make_tool(end_call, name=name)


def transfer_call_tool(
    destinations: Mapping[str, str],
    *,
    announcement: str | None = "Transferring you now.",
    name: str = "transfer_call",
) -> Tool:
    """A tool that transfers the call to one of `destinations` (name → E.164 number or `sip:` URI)
    once `announcement` has been heard. Where the channel cannot transfer (anything but Twilio), the
    LLM gets a clear "not supported" result and can say so."""
    if not destinations:
        raise ConfigError("transfer_call_tool needs at least one destination")
    for label, target in destinations.items():
        if not target.startswith(("+", "sip:")):
            raise ConfigError(f"transfer destination {label!r} must be an E.164 number or a sip: URI")
    names = tuple(destinations)
    where = ", ".join(names)

    async def transfer_call(to: str, session: AgentSession) -> str:
        if to not in destinations:
            raise ToolError(f"unknown destination {to!r}; choose one of: {where}")
        if not session.can_transfer:
            raise ToolError(f"transferring calls is not supported on this channel ({session.channel})")
        session.transfer_after_reply(destinations[to], announcement)
        return f"The call will be transferred to {to} once the caller has heard the announcement."

    transfer_call.__annotations__["to"] = Literal[names]  # the LLM picks a name, never a number
    transfer_call.__doc__ = (
        f"Transfer the caller to a person or department: one of {where}. Use it when the caller asks "
        "for one of them or needs help you cannot give.\n\nArgs:\n    to: Where to transfer the call."
    )
    return make_tool(transfer_call, name=name)
