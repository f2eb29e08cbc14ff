"""A small MCP server for tests/test_mcp.py (FastMCP, which mcp 2 calls `MCPServer`).

`python tests/_mcp_server.py` serves it over stdio; `python tests/_mcp_server.py http PORT` over
streamable HTTP at http://127.0.0.1:PORT/mcp. Every call is appended to `$MCP_TEST_CALLS` (a file),
with the server's process id, so a test can see what reached which server.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys

from mcp.server.mcpserver import MCPServer
from mcp.server.mcpserver.exceptions import ToolError

server = MCPServer("agentkit-test")


def _record(name: str, arguments: dict[str, object]) -> None:
    path = os.environ.get("MCP_TEST_CALLS")
    if path:
        with open(path, "a", encoding="utf-8") as calls:
            calls.write(json.dumps({"name": name, "arguments": arguments, "pid": os.getpid()}) + "\n")


@server.tool()
def add(a: int, b: int) -> int:
    """Add two whole numbers."""
    _record("add", {"a": a, "b": b})
    return a + b


@server.tool()
def refund(order: int) -> str:
    """Refund an order (always refused: the test's failing tool)."""
    _record("refund", {"order": order})
    raise ToolError(f"order {order} cannot be refunded")


@server.tool()
async def wait(seconds: float) -> str:
    """Wait a while, then say so."""
    _record("wait", {"seconds": seconds})
    await asyncio.sleep(seconds)
    return "waited"


@server.tool()
def crash() -> str:
    """End the server's process at once (a server that dies mid-call)."""
    _record("crash", {})
    os._exit(3)


if __name__ == "__main__":
    if sys.argv[1:2] == ["http"]:
        server.run("streamable-http", host="127.0.0.1", port=int(sys.argv[2]))
    else:
        server.run()
