"""Built-in tools the agent can call, declared to the model.

The model only *asks*: what ``end_call`` and ``transfer_call`` do is decided by the transport
that owns the call (``telephony.call.bridge`` hangs up or transfers through Twilio). Keeping the
declarations here lets another transport offer the same tools. ``google_search`` is the Live
API's own grounding tool: the model runs it on Google's side, nothing here answers it.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, Final

from google.genai import types

from agent.prompts import KNOWLEDGE_QUERY_DESCRIPTION, KNOWLEDGE_TOOL_DESCRIPTION
from agent.tools.names import (
    BUILTIN_TOOLS,
    END_CALL,
    GOOGLE_SEARCH,
    SEARCH_KNOWLEDGE,
    TRANSFER_CALL,
)

__all__ = [
    "BUILTIN_TOOLS",
    "END_CALL",
    "GOOGLE_SEARCH",
    "SEARCH_KNOWLEDGE",
    "TRANSFER_CALL",
    "declaration_of",
    "declarations",
    "live_tools",
]


_DECLARATIONS: Final = {
    SEARCH_KNOWLEDGE: types.FunctionDeclaration(
        name=SEARCH_KNOWLEDGE,
        description=KNOWLEDGE_TOOL_DESCRIPTION,
        parameters=types.Schema(
            type=types.Type.OBJECT,
            properties={
                "query": types.Schema(
                    type=types.Type.STRING, description=KNOWLEDGE_QUERY_DESCRIPTION
                )
            },
            required=["query"],
        ),
    ),
    END_CALL: types.FunctionDeclaration(
        name=END_CALL,
        description=(
            "Hang up the phone call. Call this only after you have said goodbye and the "
            "conversation is over, or when the caller asks to end the call."
        ),
        parameters=types.Schema(
            type=types.Type.OBJECT,
            properties={
                "reason": types.Schema(
                    type=types.Type.STRING,
                    description="Why the call is ending, in a few words.",
                )
            },
        ),
    ),
    TRANSFER_CALL: types.FunctionDeclaration(
        name=TRANSFER_CALL,
        description=(
            "Transfer the caller to a human colleague. First tell the caller you are "
            "transferring them, then call this."
        ),
        parameters=types.Schema(
            type=types.Type.OBJECT,
            properties={
                "reason": types.Schema(
                    type=types.Type.STRING,
                    description="What the caller needs help with, in a few words.",
                )
            },
        ),
    ),
}


def declarations(names: Iterable[str]) -> list[types.FunctionDeclaration]:
    """The function declarations for the enabled built-in function tools, in a stable order
    (``google_search`` is not a function: see ``live_tools``)."""
    return [_DECLARATIONS[name] for name in names if name in _DECLARATIONS]


def declaration_of(name: str) -> types.FunctionDeclaration:
    return _DECLARATIONS[name]


def live_tools(
    names: Iterable[str],
    extra: Iterable[types.FunctionDeclaration] = (),
    *,
    with_behavior: bool = False,
) -> list[types.Tool | Any] | None:
    """The ``tools`` of a Live session's setup: the built-in functions named, the operator's
    declarations, and Google Search when named. None when there are none.

    ``with_behavior``: declare the built-in functions ``BLOCKING``. On ``gemini-3.8-live`` a
    function is non-blocking unless it says otherwise, and a model that hangs up or transfers
    while it goes on talking would cut its own goodbye short."""
    names = tuple(names)
    builtins = declarations(names)
    if with_behavior:
        builtins = [d.model_copy(update={"behavior": types.Behavior.BLOCKING}) for d in builtins]
    functions = builtins + list(extra)
    tools: list[types.Tool | Any] = (
        [types.Tool(function_declarations=functions)] if functions else []
    )
    if GOOGLE_SEARCH in names:
        tools.append(types.Tool(google_search=types.GoogleSearch()))
    return tools or None
