"""MCP servers' tools through real agent sessions (Silero turn-taking on recorded speech, scripted
STT and LLM steps, tone TTS), against tests/_mcp_server.py run as a stdio subprocess and over
streamable HTTP on 127.0.0.1: tools offered with their schemas, calls and results both ways, error
results, timeouts, a server that dies, servers that cannot start, handoff, and the close."""

from __future__ import annotations

import json
import logging
import os
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest
from test_agent import Helper, feed, start, utterance

from agentkit import Agent, ConfigError, MCPServer, tool
from agentkit.agent import Tool
from agentkit.providers.llm import ChatMessage, LLMChunk, ToolCall, ToolResult
from agentkit.testing import ScriptedLLM, ScriptedSTT, ToneTTS

pytestmark = [pytest.mark.usefixtures("models_dir"), pytest.mark.slow]

SERVER = Path(__file__).resolve().parent / "_mcp_server.py"
ADD_SCHEMA = {
    "type": "object",
    "properties": {"a": {"title": "A", "type": "integer"}, "b": {"title": "B", "type": "integer"}},
    "required": ["a", "b"],
    "title": "addArguments",
}


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _listening(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
    except OSError:
        return False


@pytest.fixture
def calls(tmp_path: Path) -> Path:
    """The file the test server appends each call it receives to."""
    return tmp_path / "calls.jsonl"


def received(calls: Path) -> list[dict[str, Any]]:
    if not calls.exists():
        return []
    return [json.loads(line) for line in calls.read_text().splitlines()]


@pytest.fixture
def http_url(calls: Path) -> Iterator[str]:
    """tests/_mcp_server.py over streamable HTTP on a free loopback port, for one test."""
    port = _free_port()
    env = {**os.environ, "MCP_TEST_CALLS": str(calls)}
    argv = [sys.executable, str(SERVER), "http", str(port)]
    process = subprocess.Popen(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 20
        while not _listening(port):
            if process.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"the MCP test server did not start on port {port}")
            time.sleep(0.05)
        yield f"http://127.0.0.1:{port}/mcp"
    finally:
        process.terminate()
        try:
            process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def stdio_server(calls: Path, **options: Any) -> MCPServer:
    return MCPServer.stdio(sys.executable, [str(SERVER)], env={"MCP_TEST_CALLS": str(calls)}, **options)


def call(name: str, arguments: dict[str, Any], call_id: str) -> LLMChunk:
    return LLMChunk(tool_call=ToolCall(call_id, name, arguments))


class Scripted(Helper):
    """Its LLM steps are a script (one list of chunks per step, then "Done."); it keeps what each
    step saw: the history and the tools offered."""

    tool_filler = None

    def __init__(self, steps: Sequence[Sequence[str | LLMChunk]] = (), **options: Any) -> None:
        options.setdefault("stt", ScriptedSTT("Can you work something out for me?"))
        options.setdefault("tts", ToneTTS(ms_per_char=2))
        options.setdefault("llm", ScriptedLLM())  # not used (`llm_node` is the script); it can call tools
        super().__init__(**options)
        self.steps = list(steps)
        self.seen: list[list[ChatMessage]] = []
        self.offered: list[dict[str, Tool]] = []

    async def llm_node(self, history: Sequence[ChatMessage]) -> AsyncIterator[str | LLMChunk]:
        self.seen.append(list(history))
        self.offered.append(dict(self.agent_tools()))
        step = len(self.seen) - 1
        for chunk in self.steps[step] if step < len(self.steps) else ["Done."]:
            yield chunk


async def one_turn(agent: Scripted) -> tuple[Scripted, list[ChatMessage]]:
    """Start a session, speak one turn, wait for the reply to finish; the handler and its history."""
    session, transport, handler = await start(agent)
    assert isinstance(handler, Scripted)
    try:
        await feed(session, utterance())
        await transport.wait_for("metrics", timeout_s=20)
        history = handler.session.history
    finally:
        await session.close()
    return handler, history


# -- descriptions ----------------------------------------------------------------------------------


def test_server_descriptions_name_servers_without_their_secrets() -> None:
    local = MCPServer.stdio("/usr/bin/python3", ["-u", "servers/weather.py"], env={"API_KEY": "s3cret"})
    assert local.label == "python3 weather.py" and "s3cret" not in repr(local)
    remote = MCPServer.http("https://user:pw@mcp.example.com:8443/mcp?token=s3cret", headers={"X": "s3cret"})
    assert remote.label == "https://mcp.example.com:8443/mcp" and "s3cret" not in repr(remote)
    assert MCPServer.http("http://h/mcp", name="crm").label == "crm"
    with pytest.raises(ConfigError, match="http"):
        MCPServer.http("mcp.example.com/mcp")
    with pytest.raises(ConfigError, match="list of arguments"):
        MCPServer.stdio("npx", "-y server")
    with pytest.raises(ConfigError, match="prefix"):
        MCPServer.stdio("srv", prefix="bad prefix")
    with pytest.raises(ConfigError, match="MCPServer"):
        Helper(mcp_servers=["http://127.0.0.1:1/mcp"])  # type: ignore[list-item]
    with pytest.raises(ConfigError, match="cannot call tools"):
        Helper(
            stt=ScriptedSTT("hi"),
            llm=ScriptedLLM("hi", supports_tools=False),
            tts=ToneTTS(),
            mcp_servers=[remote],
        )


# -- through sessions ------------------------------------------------------------------------------

ASK = [
    "Let me work that out.",
    call("add", {"a": 2, "b": 3}, "call_add"),
    call("refund", {"order": 7}, "call_refund"),
]


@pytest.mark.parametrize("transport", ["stdio", "http"])
async def test_tools_are_offered_called_and_their_results_reach_the_next_step(
    transport: str, calls: Path, request: pytest.FixtureRequest
) -> None:
    server = (
        stdio_server(calls) if transport == "stdio" else MCPServer.http(request.getfixturevalue("http_url"))
    )
    agent, history = await one_turn(Scripted([ASK], mcp_servers=[server]))

    offered = agent.offered[0]
    assert {"add", "refund", "wait", "crash"} <= set(offered)
    assert offered["add"].parameters == ADD_SCHEMA and offered["add"].description == "Add two whole numbers."
    # the two calls run at once, so the server may receive them in either order
    assert sorted((c["name"], c["arguments"]) for c in received(calls)) == [
        ("add", {"a": 2, "b": 3}),
        ("refund", {"order": 7}),
    ]
    [_, _, results] = agent.seen[1][-3:]  # the second LLM step saw both results
    add, refund = results.tool_results
    assert add == ToolResult("call_add", "add", '{"result": 5}')
    assert refund.is_error and "order 7 cannot be refunded" in refund.content
    assert history[-2].tool_results == results.tool_results and history[-1].text == "Done."


async def test_a_call_past_its_timeout_and_a_server_that_died_give_error_results(calls: Path) -> None:
    steps = [
        ["Waiting.", call("wait", {"seconds": 10}, "call_wait")],
        ["Crashing.", call("crash", {}, "call_crash")],
        ["Adding.", call("add", {"a": 1, "b": 1}, "call_add")],
    ]
    server = stdio_server(calls, timeout_s=0.5)
    _, history = await one_turn(Scripted(steps, mcp_servers=[server]))

    results = [m.tool_results[0] for m in history if m.role == "tool"]
    assert [(r.name, r.is_error) for r in results] == [("wait", True), ("crash", True), ("add", True)]
    assert results[0].content == "timed out after 0.5 s"
    assert results[1].content.startswith("the MCP server python _mcp_server.py could not run crash: ")
    assert results[2].content.startswith("the MCP server python _mcp_server.py could not run add: ")
    assert [c["name"] for c in received(calls)] == ["wait", "crash"]  # nothing reached a dead server
    assert history[-1].text == "Done."


async def test_servers_that_cannot_start_leave_the_call_without_their_tools(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING, logger="agentkit.agent._mcp")
    closed = _free_port()
    servers = [
        MCPServer.stdio("/nonexistent/mcp-server", env={"TOKEN": "s3cret"}),
        MCPServer.stdio(sys.executable, ["-c", "pass"], name="quitter"),  # exits at once
        MCPServer.http(f"http://127.0.0.1:{closed}/mcp?key=s3cret", headers={"Authorization": "s3cret"}),
    ]

    @tool
    def local_time() -> str:
        """The time here."""
        return "noon"

    steps = [["Checking.", call("local_time", {}, "call_1"), call("add", {"a": 1, "b": 2}, "call_2")]]
    began = time.monotonic()
    agent, history = await one_turn(Scripted(steps, tools=[local_time], mcp_servers=servers))

    assert time.monotonic() - began < 15
    assert set(agent.offered[0]) == {"local_time"}
    local, missing = history[-2].tool_results
    assert local.content == "noon" and not local.is_error
    assert missing.is_error and "no tool named 'add'" in missing.content
    warnings = [r.getMessage() for r in caplog.records if "could not be used" in r.getMessage()]
    assert len(warnings) == 3 and all("goes on without its tools" in w for w in warnings)
    assert "FileNotFoundError" in warnings[0] and "quitter" in warnings[1]
    assert "s3cret" not in caplog.text


async def test_names_taken_by_the_agents_own_tools_stay_its_own_and_prefix_and_allow_list_apply(
    calls: Path,
) -> None:
    @tool
    def add(a: int, b: int) -> int:
        """Add (locally)."""
        return a + b

    servers = [
        stdio_server(calls),  # its `add` is left out: the agent's own wins
        stdio_server(calls, prefix="calc_", allowed_tools=["add", "refund"]),
    ]
    agent, _ = await one_turn(Scripted([["Hm."]], tools=[add], mcp_servers=servers))

    offered = agent.offered[0]
    assert offered["add"].description == "Add (locally)."
    assert {"refund", "wait", "crash", "calc_add", "calc_refund"} <= set(offered)
    assert "calc_wait" not in offered and offered["calc_add"].parameters == ADD_SCHEMA


async def test_each_call_has_its_own_stdio_server_closed_when_the_call_ends(calls: Path) -> None:
    adding: list[str | LLMChunk] = ["Adding.", call("add", {"a": 1, "b": 1}, "c")]
    steps = [adding, ["Done."], adding]  # the session copies share the prototype's step count
    prototype = Scripted(steps, mcp_servers=[stdio_server(calls)])
    first, _ = await one_turn(prototype)
    second, _ = await one_turn(prototype)
    assert [c["name"] for c in received(calls)] == ["add", "add"]
    pids = {c["pid"] for c in received(calls)}
    assert len(pids) == 2  # a server process per call
    for pid in pids:
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)  # exited and reaped at the call's end
    assert first is not second and prototype.agent_tools() == {}  # the prototype never connects


async def test_an_agent_handed_the_call_brings_its_mcp_servers(calls: Path) -> None:
    accountant = Scripted(
        [["Adding.", call("add", {"a": 20, "b": 22}, "call_add")]], mcp_servers=[stdio_server(calls)]
    )

    class Reception(Scripted):
        @tool
        def transfer(self) -> Agent:
            """Hand the caller to the accountant."""
            return accountant

    reception = Reception([["One moment.", call("transfer", {}, "call_transfer")]])
    session, transport, handler = await start(reception)
    try:
        await feed(session, utterance())
        await transport.wait_for("metrics", timeout_s=20)
        history = handler.session.history
    finally:
        await session.close()

    assert "add" not in reception.offered[0] and "add" in accountant.offered[0]
    assert [m.tool_results[0].content for m in history if m.role == "tool"][-1] == '{"result": 42}'
    [pid] = {c["pid"] for c in received(calls)}
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)  # the successor's server closed with the call
