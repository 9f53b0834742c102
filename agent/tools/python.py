"""Operator tools written in Python (``AGENT_TOOLS_MODULE=package.module``).

::

    from agent.tools import CallIdentity, ToolFailure, tool

    @tool(timeout_s=3)
    async def lookup_order(order_id: str, call: CallIdentity) -> dict:
        \"\"\"Look up an order's delivery status.

        Args:
            order_id: The order number the caller reads out, like A1234.
        \"\"\"
        return {"status": "shipped", "eta": "Thursday"}

The declaration comes from the signature and the docstring: the first paragraph is the
description, the ``Args:`` section describes each parameter; parameters with defaults are
optional. A parameter annotated ``CallIdentity`` receives the call and is not shown to the
model. The same timeout, error and record rules as HTTP tools apply (``agent.tools.toolbox``).
"""

from __future__ import annotations

import importlib
import inspect
import re
import types as pytypes
import typing
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any, Final, Literal, TypeVar, get_args, get_origin, overload

from agent.tools.spec import (
    BEHAVIORS,
    SCHEDULINGS,
    Behavior,
    CallIdentity,
    Scheduling,
    ToolSpec,
    check_name,
)

__all__ = ["PythonTool", "ToolDefinitionError", "load_module", "tool"]

F = TypeVar("F", bound=Callable[..., Awaitable[Any]])
_MARK: Final = "__voice_agent_tool__"
_SECTIONS: Final = frozenset(
    {
        "args",
        "arguments",
        "parameters",
        "returns",
        "raises",
        "yields",
        "example",
        "examples",
        "note",
    }
)
_ARG_LINE: Final = re.compile(r"^\s*(\*{0,2}\w+)\s*(\([^)]*\))?\s*:\s*(.*)$")


class ToolDefinitionError(ValueError):
    """A decorated function cannot be offered to the model; the message names it."""


@dataclass(frozen=True)
class PythonTool:
    """A decorated async function, ready to run."""

    spec: ToolSpec
    fn: Callable[..., Awaitable[Any]]
    #: The name of the parameter that receives the ``CallIdentity`` (None: it takes none).
    call_param: str | None = None

    async def invoke(
        self, args: Mapping[str, Any], call_id: str, call: CallIdentity
    ) -> Mapping[str, Any]:
        known = self.spec.parameters.get("properties", {})
        kwargs = {k: v for k, v in args.items() if k in known}
        if self.call_param:
            kwargs[self.call_param] = call
        answer = await self.fn(**kwargs)
        return answer if isinstance(answer, Mapping) else {"result": answer}


@overload
def tool(fn: F, /) -> F: ...


@overload
def tool(
    *,
    name: str | None = None,
    timeout_s: float = 5.0,
    behavior: Behavior = "blocking",
    scheduling: Scheduling = "when_idle",
) -> Callable[[F], F]: ...


def tool(
    fn: F | None = None,
    /,
    *,
    name: str | None = None,
    timeout_s: float = 5.0,
    behavior: Behavior = "blocking",
    scheduling: Scheduling = "when_idle",
) -> F | Callable[[F], F]:
    """Mark an async function as a tool the model may call (usable bare or with options)."""
    if behavior not in BEHAVIORS:
        raise ToolDefinitionError(f"behavior: expected one of {', '.join(BEHAVIORS)}")
    if scheduling not in SCHEDULINGS:
        raise ToolDefinitionError(f"scheduling: expected one of {', '.join(SCHEDULINGS)}")
    if not 0 < timeout_s <= 120:
        raise ToolDefinitionError("timeout_s: expected more than 0 and at most 120 seconds")

    def mark(f: F) -> F:
        setattr(
            f,
            _MARK,
            {"name": name, "timeout_s": timeout_s, "behavior": behavior, "scheduling": scheduling},
        )
        return f

    return mark(fn) if fn is not None else mark


def load_module(module_name: str) -> list[PythonTool]:
    """The tools a module defines (its decorated functions, in definition order)."""
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise ToolDefinitionError(f"cannot import {module_name!r}: {exc}") from None
    found = [
        obj
        for obj in vars(module).values()
        if callable(obj)
        and hasattr(obj, _MARK)
        and getattr(obj, "__module__", None) == module.__name__
    ]
    if not found:
        raise ToolDefinitionError(f"{module_name} defines no function marked with @tool")
    return [from_function(f) for f in found]


def from_function(fn: Callable[..., Awaitable[Any]]) -> PythonTool:
    """The tool for one decorated function."""
    options = getattr(fn, _MARK, None) or {}
    where = f"{fn.__module__}:{fn.__qualname__}"
    if not inspect.iscoroutinefunction(fn):
        raise ToolDefinitionError(f"{where}: a tool must be an async function")
    name = options.get("name") or fn.__name__
    if problem := check_name(name):
        raise ToolDefinitionError(f"{where}: name: {problem}")
    description, arg_docs = _docstring(inspect.getdoc(fn) or "")
    if not description:
        raise ToolDefinitionError(f"{where}: needs a docstring (the model decides by it)")
    try:
        hints = typing.get_type_hints(fn)
    except Exception as exc:
        raise ToolDefinitionError(f"{where}: cannot read its type hints ({exc})") from None
    properties: dict[str, Any] = {}
    required: list[str] = []
    call_param = None
    for param in inspect.signature(fn).parameters.values():
        if param.kind in (param.VAR_POSITIONAL, param.VAR_KEYWORD):
            raise ToolDefinitionError(f"{where}: *args and **kwargs cannot be declared")
        hint = hints.get(param.name, Any)
        if hint is CallIdentity or _strip_optional(hint) is CallIdentity:
            call_param = param.name
            continue
        try:
            schema = _schema(hint)
        except ToolDefinitionError as exc:
            raise ToolDefinitionError(f"{where}: parameter {param.name}: {exc}") from None
        if param.name in arg_docs:
            schema["description"] = arg_docs[param.name]
        properties[param.name] = schema
        if param.default is param.empty:
            required.append(param.name)
    parameters: dict[str, Any] = {"type": "object", "properties": properties}
    if required:
        parameters["required"] = required
    spec = ToolSpec(
        name=name,
        description=description,
        parameters=parameters,
        timeout_s=float(options.get("timeout_s", 5.0)),
        behavior=options.get("behavior", "blocking"),
        scheduling=options.get("scheduling", "when_idle"),
        source=where,
    )
    return PythonTool(spec, fn, call_param)


def _docstring(doc: str) -> tuple[str, dict[str, str]]:
    """The description (the text before the first section) and each argument's description
    (the ``Args:`` section, Google style)."""
    description: list[str] = []
    args: dict[str, str] = {}
    section = "description"
    current: str | None = None
    for line in doc.splitlines():
        stripped = line.strip()
        header = stripped.lower().rstrip(":")
        if stripped.endswith(":") and header in _SECTIONS:
            section = "args" if header in ("args", "arguments", "parameters") else "other"
            current = None
            continue
        if section == "description":
            description.append(line)
        elif section == "args":
            match = _ARG_LINE.match(line)
            if match and not line.startswith(" " * 8):
                current = match.group(1).lstrip("*")
                args[current] = match.group(3).strip()
            elif current and stripped:
                args[current] = f"{args[current]} {stripped}".strip()
    return " ".join(" ".join(description).split()), args


def _strip_optional(hint: Any) -> Any:
    if get_origin(hint) in (typing.Union, pytypes.UnionType):
        rest = [a for a in get_args(hint) if a is not type(None)]
        if len(rest) == 1:
            return rest[0]
    return hint


def _schema(hint: Any) -> dict[str, Any]:
    hint = _strip_optional(hint)
    origin = get_origin(hint)
    if hint is str:
        return {"type": "string"}
    if hint is bool:
        return {"type": "boolean"}
    if hint is int:
        return {"type": "integer"}
    if hint is float:
        return {"type": "number"}
    if origin is Literal:
        values = get_args(hint)
        if all(isinstance(v, str) for v in values):
            return {"type": "string", "enum": list(values)}
        if all(isinstance(v, int) and not isinstance(v, bool) for v in values):
            return {"type": "integer", "enum": list(values)}
        raise ToolDefinitionError("a Literal of strings or of integers")
    if origin in (list, tuple) or hint in (list, tuple):
        items = get_args(hint)
        schema: dict[str, Any] = {"type": "array"}
        if items and items[0] is not Ellipsis:
            schema["items"] = _schema(items[0])
        return schema
    if origin is dict or hint is dict:
        return {"type": "object"}
    raise ToolDefinitionError(
        f"type {hint!r} cannot be declared (use str, int, float, bool, Literal[…], list[…])"
    )
