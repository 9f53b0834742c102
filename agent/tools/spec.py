"""What every operator tool has in common: its declaration, the call it runs for, its result.

A tool the operator adds (an HTTP endpoint from ``AGENT_TOOLS_FILE``, a Python function from
``AGENT_TOOLS_MODULE``, the knowledge base's ``search_knowledge``) is a ``ToolSpec`` (what the
model is told) plus an ``invoke`` coroutine (what runs). ``agent.tools.toolbox.Toolbox`` puts
the timeout, the error shape and the size cap around every one of them, so a backend can be
slow, broken or hostile and the call still goes on.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Final, Literal, Protocol

if TYPE_CHECKING:
    from google.genai import types

__all__ = [
    "BEHAVIORS",
    "MAX_ARGUMENTS_BYTES",
    "MAX_RESPONSE_BYTES",
    "SCHEDULINGS",
    "Behavior",
    "CallIdentity",
    "Scheduling",
    "Tool",
    "ToolFailure",
    "ToolSpec",
    "check_name",
    "check_parameters",
    "failure_response",
]

Behavior = Literal["blocking", "non_blocking"]
Scheduling = Literal["when_idle", "silent", "interrupt"]
BEHAVIORS: Final = ("blocking", "non_blocking")
SCHEDULINGS: Final = ("when_idle", "silent", "interrupt")

#: The Live API's rule for function names (letters, digits, '_' and '-', at most 64).
_NAME: Final = re.compile(r"^[A-Za-z_][A-Za-z0-9_\-]{0,63}$")
#: A function response larger than this is refused: it would be read to the model as context
#: on every later turn, and an answer for the phone fits in far less.
MAX_RESPONSE_BYTES: Final = 16 * 1024
#: Arguments the model sends larger than this are not passed on to a backend.
MAX_ARGUMENTS_BYTES: Final = 16 * 1024
#: The longest description we pass to the model (it is part of every session's setup).
MAX_DESCRIPTION_CHARS: Final = 2000
_SCHEMA_TYPES: Final = frozenset({"object", "string", "number", "integer", "boolean", "array"})


@dataclass(frozen=True, slots=True)
class CallIdentity:
    """Who the tool runs for: what the backend is told about the call."""

    call_sid: str
    caller: str = ""
    callee: str = ""
    direction: str = "inbound"
    custom_parameters: Mapping[str, str] = field(default_factory=dict)

    def as_json(self) -> dict[str, Any]:
        return {
            "call_sid": self.call_sid,
            "from": self.caller,
            "to": self.callee,
            "direction": self.direction,
            "custom_parameters": dict(self.custom_parameters),
        }


@dataclass(frozen=True, slots=True)
class ToolSpec:
    """One tool as the model sees it, and the rules it runs under."""

    name: str
    description: str
    #: A JSON Schema object (``{"type": "object", "properties": …}``).
    parameters: Mapping[str, Any]
    timeout_s: float = 5.0
    behavior: Behavior = "blocking"
    #: How the answer to a non-blocking call is delivered (ignored for blocking tools).
    scheduling: Scheduling = "when_idle"
    #: Where it was defined, for messages ("tools.yaml: tools[2]", "shop.tools:lookup").
    source: str = ""
    #: Declared to the model by the toolbox (False: declared with the built-in tools, like
    #: ``search_knowledge``, whose runner alone lives in a toolbox).
    declared: bool = True

    def declaration(self, *, with_behavior: bool) -> types.FunctionDeclaration:
        """The declaration sent at session setup. ``with_behavior``: the backend takes the
        ``behavior`` field (the Gemini API does; on ``gemini-3.8-live`` an undeclared
        function is non-blocking, so a blocking tool must say so)."""
        from google.genai import types  # the SDK only where a session is set up

        return types.FunctionDeclaration(
            name=self.name,
            description=self.description,
            parameters_json_schema=dict(self.parameters),
            behavior=types.Behavior(self.behavior.upper()) if with_behavior else None,
        )

    def sdk_scheduling(self) -> types.FunctionResponseScheduling | None:
        if self.behavior != "non_blocking":
            return None
        from google.genai import types

        return types.FunctionResponseScheduling(self.scheduling.upper())


class Tool(Protocol):
    """A runnable tool: its spec and the coroutine that answers it."""

    @property
    def spec(self) -> ToolSpec: ...

    async def invoke(
        self, args: Mapping[str, Any], call_id: str, call: CallIdentity
    ) -> Mapping[str, Any]:
        """The tool's answer (a JSON object). Raise ``ToolFailure`` for an answer that says
        what went wrong; anything else raised is reported as an internal error."""
        ...


class ToolFailure(Exception):
    """A tool could not answer. ``outcome`` goes to the records and metrics (``timeout``,
    ``http_error``, ``connection_error``, ``invalid_json``, ``too_large``, …); ``retryable``
    tells the model whether trying again can help."""

    def __init__(self, outcome: str, message: str, *, retryable: bool) -> None:
        super().__init__(message)
        self.outcome = outcome
        self.message = message
        self.retryable = retryable


def failure_response(failure: ToolFailure) -> dict[str, Any]:
    """The function response for a failed tool: informative, so the model can tell the
    caller and does not call again and again when retrying cannot help."""
    return {
        "status": "error",
        "error": failure.message,
        "retryable": failure.retryable,
    }


def check_name(name: object) -> str | None:
    """None when ``name`` is a valid function name, else what is wrong with it."""
    if not isinstance(name, str) or not _NAME.match(name):
        return (
            "expected letters, digits, '_' or '-', starting with a letter or '_', at most 64 "
            f"characters; got {name!r}"
        )
    return None


def check_parameters(schema: object, where: str = "parameters") -> str | None:
    """None when ``schema`` is a JSON Schema object the Live API can take, else the problem
    (with the path inside the schema)."""
    if not isinstance(schema, Mapping):
        return f"{where}: expected a JSON Schema object, got {type(schema).__name__}"
    if schema.get("type") != "object":
        return f'{where}.type: expected "object", got {schema.get("type")!r}'
    return _check_schema(schema, where, depth=0)


def _check_schema(schema: Mapping[str, Any], where: str, depth: int) -> str | None:
    if depth > 8:
        return f"{where}: nested deeper than 8 levels"
    kind = schema.get("type")
    if kind is not None and kind not in _SCHEMA_TYPES and not isinstance(kind, list):
        return f"{where}.type: unknown type {kind!r} (known: {', '.join(sorted(_SCHEMA_TYPES))})"
    description = schema.get("description")
    if description is not None and not isinstance(description, str):
        return f"{where}.description: expected a string"
    properties = schema.get("properties", {})
    if not isinstance(properties, Mapping):
        return f"{where}.properties: expected an object"
    for key, sub in properties.items():
        if not isinstance(sub, Mapping):
            return f"{where}.properties.{key}: expected a JSON Schema object"
        problem = _check_schema(sub, f"{where}.properties.{key}", depth + 1)
        if problem:
            return problem
    required = schema.get("required", [])
    if not isinstance(required, list) or not all(isinstance(r, str) for r in required):
        return f"{where}.required: expected a list of property names"
    missing = [r for r in required if r not in properties]
    if missing:
        return f"{where}.required: {', '.join(missing)} not among the properties"
    items = schema.get("items")
    if items is not None:
        if not isinstance(items, Mapping):
            return f"{where}.items: expected a JSON Schema object"
        return _check_schema(items, f"{where}.items", depth + 1)
    return None
