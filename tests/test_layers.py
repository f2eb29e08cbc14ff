"""agentkit's packages form layers: every import points downward, there are no circles, and
`import agentkit` stays light (no web framework, no WebRTC stack).

Each subpackage (`agentkit/stream/`, ...) and each top-level module (`agentkit/cli.py`, ...) is one
node; `agentkit/__init__.py`, the public facade, is the node `agentkit`. Every `import` counts, also
one inside a function or under `if TYPE_CHECKING:`: a lazy import still ties the two layers together.
"""

from __future__ import annotations

import ast
import itertools
import subprocess
import sys
from collections import defaultdict
from pathlib import Path

import agentkit

PACKAGE = Path(agentkit.__file__).parent

LAYERS: tuple[tuple[str, ...], ...] = (
    ("exceptions",),
    ("config", "clock"),
    ("_executor", "_tasks", "_aio", "_identity"),
    ("audio", "models"),
    ("providers", "store"),
    ("stream",),
    ("agent",),
    ("_default_agent", "transports"),
    ("agentkit",),  # the facade: re-exports from the layers below
    ("server", "_talk", "_serve", "_workers"),
    ("cli",),
    ("testing",),  # fakes and simulated callers may use anything
)
"""Bottom first. A node may import only nodes of strictly lower layers."""

RANK = {node: level for level, nodes in enumerate(LAYERS) for node in nodes}


def _nodes() -> set[str]:
    return {
        p.name.removesuffix(".py")
        for p in PACKAGE.iterdir()
        if (p.suffix == ".py" and p.name != "__init__.py") or (p / "__init__.py").is_file()
    }


def _node_of(parts: list[str], nodes: set[str]) -> str | None:
    """The node an absolute module path (`["agentkit", "stream", "_session"]`) belongs to."""
    if parts[0] != "agentkit":
        return None
    if len(parts) == 1 or parts[1] not in nodes:
        return "agentkit"
    return parts[1]


def _imported_modules(
    node: ast.Import | ast.ImportFrom, package: list[str], nodes: set[str]
) -> list[list[str]]:
    if isinstance(node, ast.Import):
        return [alias.name.split(".") for alias in node.names]
    if node.level:  # relative: `from . import x`, `from ..stream import y`
        base = package[: len(package) - node.level + 1]
        module = base + (node.module.split(".") if node.module else [])
    else:
        module = (node.module or "").split(".")
    if module == ["agentkit"]:  # `from agentkit import stream` names a subpackage, `Stream` the facade
        return [["agentkit", alias.name] if alias.name in nodes else ["agentkit"] for alias in node.names]
    if node.level and not node.module:
        return [[*module, alias.name] for alias in node.names]
    return [module]


def import_graph() -> dict[str, dict[str, list[str]]]:
    """node -> imported node -> where (`path:line`), for every import between two of agentkit's nodes."""
    nodes = _nodes()
    graph: dict[str, dict[str, list[str]]] = defaultdict(lambda: defaultdict(list))
    for path in sorted(PACKAGE.rglob("*.py")):
        relative = path.relative_to(PACKAGE).parts
        source = "agentkit" if relative == ("__init__.py",) else relative[0].removesuffix(".py")
        package = ["agentkit", *relative[:-1]]
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
            if not isinstance(node, ast.Import | ast.ImportFrom):
                continue
            for module in _imported_modules(node, package, nodes):
                target = _node_of(module, nodes)
                if target is not None and target != source:
                    where = f"{path.relative_to(PACKAGE.parent)}:{node.lineno}"
                    graph[source][target].append(where)
    return graph


def _find_cycles(graph: dict[str, dict[str, list[str]]]) -> list[list[str]]:
    """One circle through each strongly connected group of nodes (Tarjan), as `[a, b, ..., a]`."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    groups: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in graph.get(node, {}):
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            group = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                group.append(member)
                if member == node:
                    break
            if len(group) > 1:
                groups.append(group)

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return [_circle_in(graph, set(group)) for group in groups]


def _circle_in(graph: dict[str, dict[str, list[str]]], group: set[str]) -> list[str]:
    """A path from the group's first node back to itself, staying inside the group (breadth first)."""
    start = min(group)
    paths = {start: [start]}
    queue = [start]
    while queue:
        node = queue.pop(0)
        for target in sorted(graph.get(node, {})):
            if target == start:
                return [*paths[node], start]
            if target in group and target not in paths:
                paths[target] = [*paths[node], target]
                queue.append(target)
    raise AssertionError(f"no circle in {sorted(group)}")  # pragma: no cover


def test_the_layer_table_names_every_package_and_module() -> None:
    missing = sorted((_nodes() | {"agentkit"}) - RANK.keys())
    assert not missing, f"place {missing} in LAYERS (tests/test_layers.py)"


def test_there_are_no_import_circles() -> None:
    graph = import_graph()
    circles = []
    for circle in _find_cycles(graph):
        steps = [f"{a} -> {b} ({graph[a][b][0]})" for a, b in itertools.pairwise(circle)]
        circles.append(" -> ".join(circle) + ":\n    " + "\n    ".join(steps))
    assert not circles, "import circles between agentkit's packages:\n" + "\n".join(circles)


def test_imports_only_point_down_the_layers() -> None:
    upward = [
        f"{source} (layer {RANK[source]}) imports {target} (layer {RANK[target]}) at {', '.join(where)}"
        for source, targets in sorted(import_graph().items())
        for target, where in sorted(targets.items())
        if source in RANK and target in RANK and RANK[target] >= RANK[source]
    ]
    assert not upward, "imports that do not point down the layers:\n" + "\n".join(upward)


def test_import_agentkit_loads_no_web_or_webrtc_stack() -> None:
    code = (
        "import agentkit, sys\n"
        "heavy = sorted(m for m in ('fastapi', 'starlette', 'aiortc') if m in sys.modules)\n"
        "print(heavy)\n"
        "sys.exit(1 if heavy else 0)\n"
    )
    command = [sys.executable, "-c", code]
    result = subprocess.run(command, check=False, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, f"`import agentkit` loads {result.stdout.strip()} {result.stderr[-2000:]}"
