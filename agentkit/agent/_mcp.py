"""Tools from Model Context Protocol servers: `Agent.mcp_servers = [MCPServer.stdio(...), ...]`.

```python
class Assistant(Agent):
    llm = "anthropic/claude-haiku-4-5"
    mcp_servers = (
        MCPServer.stdio("uvx", ["mcp-server-time"]),
        MCPServer.http("https://mcp.example.com/mcp", headers={"Authorization": f"Bearer {TOKEN}"}),
    )
```

Each call has its own connections: when the call starts, every server is started (stdio) or
connected to (streamable HTTP), all at once and while the models warm up, and its tools are listed
and offered to the LLM next to the agent's own; when the call ends, they are closed. A caller never
shares a server's session (or a stdio server's process) with another caller, and a server that
crashed takes down one call's tools, not every call's. The cost is at the call's start, before the
greeting: 30-60 ms over HTTP on the same machine, 0.6-1.2 s for a Python stdio server on a 2-core
machine (a process start and `import mcp`; closing it takes ~0.3 s more at the end). To share one
server among calls, run it once and reach it with `MCPServer.http`.

- An MCP tool is an agentkit `Tool`: its `inputSchema` is the parameters' schema, the arguments pass
  through as the LLM gave them (the server validates them), and the agent's `tool_timeout_s` (or
  the server's `timeout_s`) and barge-in cancellation apply as to the agent's own tools.
- The result the LLM reads is the text content, joined; the structured content as JSON when
  there is some. An `isError` result, a protocol error and a server that died are error results.
- Names: the agent's own tools win. An MCP tool named like one of them, or like an earlier server's,
  is left out with a warning; `prefix="github_"` renames all of a server's tools to avoid that.
  Characters an LLM API refuses in a name become `_`.
- A server that cannot be started, reached or listed within `connect_timeout_s` is logged once and
  the call goes on without its tools.
- Tools are listed once per call: a server's later `tools/list_changed` is not followed.

The `mcp` package is an optional extra (`pip install 'agentkit[mcp]'`), imported only when a call
connects.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import importlib.util
import json
import logging
import os
import re
import sys
from collections.abc import Collection, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Literal, TextIO
from urllib.parse import urlsplit

from agentkit._tasks import TaskSet
from agentkit.agent._tools import Tool, ToolError
from agentkit.exceptions import ConfigError

if TYPE_CHECKING:
    import mcp
    import mcp.types
    from mcp.client import Transport

__all__ = ["MCPConnections", "MCPServer"]

logger = logging.getLogger(__name__)

_NAME = re.compile(r"[A-Za-z0-9_-]{1,64}")
_UNNAMEABLE = re.compile(r"[^A-Za-z0-9_-]")
_MAX_PAGES = 100
"""tools/list pages read at most (a paginator that never ends cannot hold a call's start)."""
_CLOSE_GRACE_S = 1.5
"""How long the connections get to close cleanly at the call's end before they are cancelled."""


@dataclasses.dataclass(frozen=True, kw_only=True)
class MCPServer:
    """An MCP server whose tools an agent offers its LLM; make one with `MCPServer.stdio` or
    `MCPServer.http`."""

    transport: Literal["stdio", "http"]
    command: str = ""
    """stdio: the program that runs the server."""
    args: tuple[str, ...] = ()
    """stdio: its arguments."""
    env: Mapping[str, str] | None = dataclasses.field(default=None, repr=False)
    """stdio: extra environment variables. The server gets only these and a minimal environment
    (`PATH`, `HOME`, ...; the mcp SDK's default), not the agent's whole environment."""
    cwd: str | None = None
    """stdio: the server's working directory (None: the agent's)."""
    url: str = ""
    """http: the streamable HTTP endpoint, e.g. `http://127.0.0.1:8000/mcp`."""
    headers: Mapping[str, str] | None = dataclasses.field(default=None, repr=False)
    """http: headers sent with every request (an `Authorization` header, say)."""
    name: str = ""
    """How logs call the server; defaults to its program and script, or its URL's host and path."""
    prefix: str = ""
    """Put in front of each of its tools' names as the LLM sees them (`"github_"`)."""
    allowed_tools: tuple[str, ...] | None = None
    """Offer only these of its tools (by the server's names); None: all of them."""
    timeout_s: float | None = None
    """Longest one of its tool calls may take (None: the agent's `tool_timeout_s`)."""
    cancellable: bool = True
    """A barge-in cancels a running call; False when its tools write and must finish."""
    connect_timeout_s: float = 5.0
    """Longest the call's start waits for the server to be up and its tools listed."""

    def __post_init__(self) -> None:
        if self.transport == "stdio" and not self.command:
            raise ConfigError("MCPServer.stdio needs a command")
        if self.transport == "http" and urlsplit(self.url).scheme not in ("http", "https"):
            raise ConfigError(f"MCPServer.http needs an http(s) URL, not {_safe_url(self.url)!r}")
        if self.prefix and not re.fullmatch(r"[A-Za-z0-9_-]{1,32}", self.prefix):
            raise ConfigError(f"MCP tool prefix {self.prefix!r} must match [A-Za-z0-9_-]{{1,32}}")
        for what, value in (("timeout_s", self.timeout_s), ("connect_timeout_s", self.connect_timeout_s)):
            if value is not None and value <= 0:
                raise ConfigError(f"MCPServer {what} must be positive")
        if importlib.util.find_spec("mcp") is None:
            raise ConfigError("MCP servers need the mcp package: pip install 'agentkit[mcp]'")

    @classmethod
    def stdio(
        cls,
        command: str,
        args: Sequence[str] = (),
        *,
        env: Mapping[str, str] | None = None,
        cwd: str | os.PathLike[str] | None = None,
        name: str = "",
        prefix: str = "",
        allowed_tools: Sequence[str] | None = None,
        timeout_s: float | None = None,
        cancellable: bool = True,
        connect_timeout_s: float = 5.0,
    ) -> MCPServer:
        """A server the agent runs for each call, speaking MCP on its stdin and stdout (its stderr
        goes to the agent's)."""
        if isinstance(args, str):
            raise ConfigError("MCPServer.stdio args must be a list of arguments, not one string")
        return cls(
            transport="stdio",
            command=command,
            args=tuple(args),
            env=dict(env) if env is not None else None,
            cwd=os.fspath(cwd) if cwd is not None else None,
            name=name,
            prefix=prefix,
            allowed_tools=tuple(allowed_tools) if allowed_tools is not None else None,
            timeout_s=timeout_s,
            cancellable=cancellable,
            connect_timeout_s=connect_timeout_s,
        )

    @classmethod
    def http(
        cls,
        url: str,
        *,
        headers: Mapping[str, str] | None = None,
        name: str = "",
        prefix: str = "",
        allowed_tools: Sequence[str] | None = None,
        timeout_s: float | None = None,
        cancellable: bool = True,
        connect_timeout_s: float = 5.0,
    ) -> MCPServer:
        """A running server reached over streamable HTTP (one MCP session per call)."""
        return cls(
            transport="http",
            url=url,
            headers=dict(headers) if headers is not None else None,
            name=name,
            prefix=prefix,
            allowed_tools=tuple(allowed_tools) if allowed_tools is not None else None,
            timeout_s=timeout_s,
            cancellable=cancellable,
            connect_timeout_s=connect_timeout_s,
        )

    def __repr__(self) -> str:
        return f"MCPServer.{self.transport}({self.label!r})"  # no URL query, header or environment

    @property
    def label(self) -> str:
        """The server's name in logs and error results (never a header, a token or a query)."""
        if self.name:
            return self.name
        if self.transport == "http":
            return _safe_url(self.url)
        script = next((a for a in self.args if not a.startswith("-")), "")
        return " ".join(os.path.basename(p) for p in (self.command, script) if p)

    async def _transport(self, stack: contextlib.AsyncExitStack) -> Transport:
        """The mcp SDK transport for this server (what it needs kept open goes on `stack`)."""
        if self.transport == "stdio":
            from mcp import StdioServerParameters, stdio_client

            params = StdioServerParameters(
                command=self.command, args=list(self.args), env=dict(self.env or {}) or None, cwd=self.cwd
            )
            return stdio_client(params, errlog=_stderr())
        import httpx2
        from mcp.client.streamable_http import streamable_http_client

        timeout = httpx2.Timeout(30.0, read=300.0)  # the SDK's defaults: a response may stream a while
        http = await stack.enter_async_context(httpx2.AsyncClient(headers=self.headers, timeout=timeout))
        return streamable_http_client(self.url, http_client=http)


class _Connection:
    """One server's client for one call, in a task of its own: the SDK's contexts (anyio task
    groups) are entered and left in that task, whichever tasks call its tools."""

    def __init__(self, server: MCPServer) -> None:
        self.server = server
        self.client: mcp.Client | None = None
        self.listed: list[mcp.types.Tool] = []
        self.settled = asyncio.Event()
        """Set once the tools are listed, or the connection failed."""
        self.failure: str | None = None
        self.stop = asyncio.Event()
        self.task: asyncio.Task[None] | None = None

    async def run(self) -> None:
        from mcp import Client

        try:
            async with contextlib.AsyncExitStack() as stack:
                transport = await self.server._transport(stack)
                client = await stack.enter_async_context(Client(transport))
                self.listed = await _list_tools(client)
                self.client = client
                self.settled.set()
                await self.stop.wait()
        except Exception as exc:
            if not self.settled.is_set():
                self.failure = _describe(exc)
            elif not self.stop.is_set():
                logger.warning("MCP server %s: the connection failed (%s)", self.server.label, _describe(exc))
        finally:
            self.client = None
            self.settled.set()

    async def call(self, name: str, arguments: dict[str, Any]) -> str:
        """Call the server's tool `name`; its result as text, or `ToolError` for the LLM."""
        from mcp import MCPError

        label = self.server.label
        client = self.client
        if client is None:
            raise ToolError(f"the MCP server {label} is not connected")
        try:
            result = await client.call_tool(name, arguments)
        except MCPError as exc:
            raise ToolError(f"the MCP server {label} could not run {name}: {exc.message}"[:500]) from None
        except Exception as exc:
            logger.warning("MCP server %s: calling %s failed (%s)", label, name, _describe(exc))
            raise ToolError(f"the MCP server {label} did not answer ({type(exc).__name__})") from None
        text = _result_text(result)
        if result.is_error:
            raise ToolError(text or f"the MCP tool {name} failed")
        return text


class MCPConnections:
    """The MCP connections of one call (its agent's, and those of agents it hands the call to); each
    server's client runs in a task of this owner until `aclose`."""

    def __init__(self, owner: str) -> None:
        self._owner = owner
        self._tasks = TaskSet(f"{owner}-mcp")
        self._connections: list[_Connection] = []

    def start(self, servers: Sequence[MCPServer]) -> list[_Connection]:
        """Start connecting to `servers` (at once: `tools` waits for them)."""
        started = []
        for server in servers:
            connection = _Connection(server)
            connection.task = self._tasks.spawn(connection.run(), f"connect-{len(self._connections)}")
            self._connections.append(connection)
            started.append(connection)
        return started

    async def tools(self, connections: Sequence[_Connection], reserved: Collection[str]) -> dict[str, Tool]:
        """The tools of `connections` once each is up (or has failed, or is past its
        `connect_timeout_s`), by the name the LLM sees; never raises for a server's failure."""
        loop = asyncio.get_running_loop()
        begun = loop.time()
        found: dict[str, Tool] = {}
        for connection in connections:
            server = connection.server
            try:
                async with asyncio.timeout_at(begun + server.connect_timeout_s):
                    await connection.settled.wait()
            except TimeoutError:
                connection.failure = f"no answer within {server.connect_timeout_s:g} s"
                if connection.task is not None:
                    connection.task.cancel()
            if connection.client is None:
                logger.warning(
                    "%s: MCP server %s could not be used (%s); the call goes on without its tools",
                    self._owner,
                    server.label,
                    connection.failure or "the connection ended",
                )
                continue
            for listed in connection.listed:
                made = _tool(connection, listed, taken=(*reserved, *found))
                if made is not None:
                    found[made.name] = made
        return found

    async def aclose(self) -> None:
        """Close every connection (cleanly when it can: a stdio server is told to exit)."""
        for connection in self._connections:
            connection.stop.set()
        tasks = [c.task for c in self._connections if c.task is not None and not c.task.done()]
        if tasks:
            await asyncio.wait(tasks, timeout=_CLOSE_GRACE_S)
        await self._tasks.aclose(timeout_s=_CLOSE_GRACE_S)


def _tool(connection: _Connection, listed: mcp.types.Tool, taken: Collection[str]) -> Tool | None:
    """The agentkit `Tool` of a listed MCP tool; None when it is not offered (logged)."""
    server = connection.server
    if server.allowed_tools is not None and listed.name not in server.allowed_tools:
        return None
    name = _UNNAMEABLE.sub("_", server.prefix + listed.name)[:64]
    if not _NAME.fullmatch(name) or name in taken:
        logger.warning(
            "MCP server %s: its tool %r is left out (the name %r is taken or unusable; set prefix=)",
            server.label,
            listed.name,
            name,
        )
        return None
    mcp_name = listed.name

    async def call(**arguments: Any) -> str:
        return await connection.call(mcp_name, arguments)

    call.__name__ = name
    parameters = dict(listed.input_schema)
    parameters.setdefault("type", "object")
    parameters.setdefault("properties", {})
    return Tool(
        fn=call,
        name=name,
        description=listed.description or listed.title or mcp_name.replace("_", " "),
        parameters=parameters,
        cancellable=server.cancellable,
        timeout_s=server.timeout_s,
    )


async def _list_tools(client: mcp.Client) -> list[mcp.types.Tool]:
    listed: list[mcp.types.Tool] = []
    cursor: str | None = None
    for _ in range(_MAX_PAGES):
        page = await client.list_tools(cursor=cursor)
        listed.extend(page.tools)
        cursor = page.next_cursor
        if cursor is None:
            break
    return listed


def _result_text(result: mcp.types.CallToolResult) -> str:
    """What the LLM reads of a tool's result: the structured content as JSON when there is some,
    else the content blocks' text, joined (other blocks by what they are)."""
    if result.structured_content is not None:
        try:
            return json.dumps(result.structured_content)
        except (TypeError, ValueError):
            pass
    parts = []
    for block in result.content:
        if block.type == "text":
            parts.append(block.text)
        elif block.type == "resource":
            text = getattr(block.resource, "text", None)
            parts.append(text if isinstance(text, str) else f"[resource {block.resource.uri}]")
        elif block.type == "resource_link":
            parts.append(f"[resource {block.uri}]")
        else:
            parts.append(f"[{block.type}: {block.mime_type}]")
    return "\n".join(parts)


def _describe(exc: BaseException) -> str:
    """An exception for a log line: its kind and a safe detail (no URL, header or argument)."""
    while isinstance(exc, BaseExceptionGroup) and exc.exceptions:
        exc = exc.exceptions[0]
    kind = type(exc).__name__
    if isinstance(exc, OSError) and exc.strerror:
        return f"{kind}: {exc.strerror}"
    status = getattr(getattr(exc, "response", None), "status_code", None)
    if isinstance(status, int):
        return f"{kind}: HTTP {status}"
    message = getattr(exc, "message", None)  # an MCPError: the server's own words
    if isinstance(message, str) and message:
        return f"{kind}: {message[:200]}"
    return kind


def _stderr() -> TextIO:
    """Where a stdio server's stderr goes: the agent's, or the process's own when `sys.stderr` has
    been replaced by something without a file descriptor (a capturing test runner)."""
    try:
        sys.stderr.fileno()
    except (AttributeError, OSError, ValueError):
        return sys.__stderr__ or sys.stderr
    return sys.stderr


def _safe_url(url: str) -> str:
    """`url` without credentials, query or fragment."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    with contextlib.suppress(ValueError):  # a port that is not a number
        host = f"{host}:{parts.port}" if parts.port is not None else host
    return f"{parts.scheme}://{host}{parts.path}" if parts.scheme else "(no URL)"
