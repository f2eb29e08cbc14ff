"""Tools an agent's LLM may call: `@tool`, and the `Tool` it makes of a function.

```python
class Shop(Agent):
    @tool
    async def order_status(self, order: int, session: AgentSession) -> str:
        \"\"\"Look up where an order is.

        Args:
            order: The order number the caller gave.
        \"\"\"
        return await db.status(order)

    @tool(cancellable=False, timeout_s=20)
    def book_table(self, people: int, time: Literal["18:00", "20:00"]) -> dict[str, str]:
        \"\"\"Book a table (a write: it finishes even if the caller interrupts).\"\"\"
        ...
```

The tool's name is the function's, its description the docstring's text, its parameters the type
hints (pydantic builds the JSON schema: `str`, numbers, `bool`, `Literal` and enums, lists, optional
values, pydantic models), each described by the docstring's `Args:` section (Google, reST or NumPy
style). A parameter annotated `AgentSession` gets the call's session instead of an LLM argument.
Arguments are validated (and converted: `"42"` → `42`) before the function runs; a validation
error, an exception or a timeout becomes an error result the LLM reads, never a crash. Sync
functions run on a worker thread, async ones on the event loop. The result is sent to the LLM as
text: a `str` as it is, anything else as JSON (pydantic models and dataclasses too).
"""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import inspect
import json
import logging
import re
import types
import typing
from collections.abc import Callable, Iterable, Mapping
from typing import Any, overload

import docstring_parser
import pydantic
import pydantic_core

from agentkit.exceptions import ConfigError
from agentkit.providers.llm import ToolSpec

__all__ = ["Tool", "ToolError", "tool"]

logger = logging.getLogger(__name__)

_NAME = re.compile(r"[A-Za-z0-9_-]{1,64}")
_MAX_RESULT_CHARS = 16_000
"""Longer results are cut (and say so): an LLM context is not a database dump."""


class ToolError(Exception):
    """Raise it in a tool to give the LLM a clear error message (the message is all it sees)."""


@dataclasses.dataclass(frozen=True, eq=False)
class Tool:
    """A callable the LLM may ask for, with its schema, validation and run policy."""

    fn: Callable[..., Any]
    """The function (for a method: unbound; `bind` gives the bound tool)."""
    name: str
    description: str
    parameters: Mapping[str, Any]
    """The arguments' JSON Schema (the LLM's view: without the session parameter)."""
    cancellable: bool = True
    """A barge-in cancels a running call; False for writes that must finish (the result is kept)."""
    timeout_s: float | None = None
    """Longest a call may take (None: the agent's `tool_timeout_s`)."""
    session_param: str | None = None
    """The parameter that receives the `AgentSession`, if the tool asks for it."""
    model: type[pydantic.BaseModel] | None = None
    """Validates and converts the LLM's arguments."""
    owner: object | None = None
    """The object a method tool is bound to (the agent)."""

    @property
    def spec(self) -> ToolSpec:
        return ToolSpec(self.name, self.description, self.parameters)

    def bind(self, owner: object) -> Tool:
        """This tool as a method of `owner`."""
        return dataclasses.replace(self, owner=owner)

    def __get__(self, owner: object, owner_type: type | None = None) -> Tool:
        """`agent.order_status` is the tool bound to the agent (callable like the method)."""
        return self if owner is None else self.bind(owner)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        """Call the function itself, as if undecorated (no validation, no timeout)."""
        return self.fn(self.owner, *args, **kwargs) if self.owner is not None else self.fn(*args, **kwargs)

    async def run(self, arguments: Mapping[str, Any] | None, session: object) -> object:
        """Validate `arguments`, call the function and return what it returned (`result_text` makes
        it text for the LLM; the agent first checks whether it is an agent to hand the call to).

        Raises `ToolError` with a message for the LLM when the arguments are wrong or the tool
        raised; cancellation and timeouts are the caller's (the agent's tool loop).
        """
        if arguments is None:
            raise ToolError("the arguments were not valid JSON")
        kwargs = dict(arguments)
        if self.model is not None:
            try:
                validated = self.model.model_validate(kwargs)
            except pydantic.ValidationError as exc:
                raise ToolError(f"invalid arguments: {_brief(exc)}") from None
            kwargs = {name: getattr(validated, name) for name in type(validated).model_fields}
        if self.session_param is not None:
            kwargs[self.session_param] = session
        fn = self.fn if self.owner is None else functools.partial(self.fn, self.owner)
        try:
            if inspect.iscoroutinefunction(self.fn):
                result = await fn(**kwargs)
            else:
                result = await asyncio.to_thread(fn, **kwargs)
        except ToolError:
            raise
        except Exception as exc:
            logger.warning("tool %s failed (%s)", self.name, type(exc).__name__)
            raise ToolError(f"the tool failed: {type(exc).__name__}: {exc}"[:500]) from exc
        return result


def result_text(result: object) -> str:
    """A tool's return value as the text the LLM reads."""
    if isinstance(result, str):
        text = result
    elif isinstance(result, pydantic.BaseModel):
        text = result.model_dump_json()
    else:
        try:
            text = json.dumps(pydantic.TypeAdapter(Any).dump_python(result, mode="json"))
        except (TypeError, ValueError, pydantic_core.PydanticSerializationError):
            text = str(result)
    if len(text) > _MAX_RESULT_CHARS:
        text = text[:_MAX_RESULT_CHARS] + " [cut: the result was too long]"
    return text


def _brief(exc: pydantic.ValidationError) -> str:
    parts = []
    for error in exc.errors()[:5]:
        where = ".".join(str(p) for p in error["loc"]) or "arguments"
        parts.append(f"{where}: {error['msg']}")
    return "; ".join(parts)


@overload
def tool(fn: Callable[..., Any], /) -> Tool: ...


@overload
def tool(
    *,
    name: str | None = None,
    description: str | None = None,
    cancellable: bool = True,
    timeout_s: float | None = None,
) -> Callable[[Callable[..., Any]], Tool]: ...


def tool(
    fn: Callable[..., Any] | None = None,
    /,
    *,
    name: str | None = None,
    description: str | None = None,
    cancellable: bool = True,
    timeout_s: float | None = None,
) -> Tool | Callable[[Callable[..., Any]], Tool]:
    """Make a function (or an `Agent` method) a tool the LLM may call; see the module docstring."""

    def make(fn: Callable[..., Any]) -> Tool:
        return make_tool(fn, name=name, description=description, cancellable=cancellable, timeout_s=timeout_s)

    return make(fn) if fn is not None else make


def make_tool(
    fn: Callable[..., Any],
    *,
    name: str | None = None,
    description: str | None = None,
    cancellable: bool = True,
    timeout_s: float | None = None,
) -> Tool:
    """The `Tool` of `fn` (what `@tool` does); raises `ConfigError` for what cannot be offered."""
    if isinstance(fn, Tool):
        return fn
    if not callable(fn):
        raise ConfigError(f"a tool must be a function, not {type(fn).__name__}")
    tool_name: str = name or str(getattr(fn, "__name__", ""))
    if not _NAME.fullmatch(tool_name):
        raise ConfigError(f"tool name {tool_name!r} must match [A-Za-z0-9_-]{{1,64}}")
    if timeout_s is not None and timeout_s <= 0:
        raise ConfigError(f"tool {tool_name}: timeout_s must be positive")
    doc = docstring_parser.parse(inspect.getdoc(fn) or "")
    summary = "\n\n".join(p for p in (doc.short_description, doc.long_description) if p)
    arg_docs = {p.arg_name: p.description or "" for p in doc.params}
    try:  # the parameters' hints only: a return type may name a class defined in a function
        annotations = {k: v for k, v in getattr(fn, "__annotations__", {}).items() if k != "return"}
        shim = types.SimpleNamespace(__annotations__=annotations)
        hints = typing.get_type_hints(shim, globalns=getattr(fn, "__globals__", None), include_extras=True)
    except Exception as exc:
        raise ConfigError(f"tool {tool_name}: its type hints cannot be resolved ({exc})") from None
    fields: dict[str, Any] = {}
    session_param: str | None = None
    params = list(inspect.signature(fn).parameters.values())
    if params and params[0].name in ("self", "cls"):
        params = params[1:]
    for param in params:
        if param.kind in (param.VAR_POSITIONAL, param.VAR_KEYWORD):
            raise ConfigError(f"tool {tool_name}: *args and **kwargs cannot be described to an LLM")
        annotation = hints.get(param.name, inspect.Parameter.empty)
        if annotation is inspect.Parameter.empty:
            raise ConfigError(f"tool {tool_name}: parameter {param.name!r} needs a type hint")
        if _is_session(annotation):
            session_param = param.name
            continue
        default = ... if param.default is inspect.Parameter.empty else param.default
        fields[param.name] = (
            annotation,
            pydantic.Field(default, description=arg_docs.get(param.name) or None),
        )
    try:
        model = pydantic.create_model(f"{tool_name}_arguments", **fields)
        schema = _clean(model.model_json_schema())
    except (pydantic.PydanticSchemaGenerationError, pydantic.PydanticUserError, TypeError) as exc:
        raise ConfigError(f"tool {tool_name}: its parameters cannot be described ({exc})"[:300]) from None
    return Tool(
        fn=fn,
        name=tool_name,
        description=description or summary or tool_name.replace("_", " "),
        parameters=schema,
        cancellable=cancellable,
        timeout_s=timeout_s,
        session_param=session_param,
        model=model,
    )


def _is_session(annotation: object) -> bool:
    from agentkit.agent._session import AgentSession

    return annotation is AgentSession or (
        isinstance(annotation, type) and issubclass(annotation, AgentSession)
    )


def _clean(schema: dict[str, Any]) -> dict[str, Any]:
    """Pydantic's schema without its titles (noise to an LLM), `required` kept."""

    def strip(node: Any) -> Any:
        if isinstance(node, dict):
            kept = {k: strip(v) for k, v in node.items() if k != "title" or not isinstance(v, str)}
            if "const" in kept and "enum" not in kept:  # a one-value Literal: say it as a choice
                kept["enum"] = [kept["const"]]
            return kept
        if isinstance(node, list):
            return [strip(v) for v in node]
        return node

    cleaned: dict[str, Any] = strip(schema)
    cleaned.setdefault("properties", {})
    cleaned["type"] = "object"
    return cleaned


def collect_tools(owner: object, extra: Iterable[Callable[..., Any] | Tool]) -> dict[str, Tool]:
    """The tools of an agent: its `@tool` methods (bound to it) and the functions in `extra`."""
    found: dict[str, Tool] = {}
    for klass in reversed(type(owner).__mro__):
        for value in vars(klass).values():
            if isinstance(value, Tool):
                found[value.name] = value.bind(owner)
    for fn in extra:
        made = make_tool(fn)
        if made.name in found:
            raise ConfigError(f"two tools are named {made.name!r}")
        found[made.name] = made
    return found
