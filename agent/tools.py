"""Built-in tools the agent can call, declared to the model.

The model only *asks*: what a tool does is decided by the transport that owns the call
(``telephony.call.bridge`` hangs up or transfers through Twilio, and runs the handlers it is
given, such as ``search_knowledge``'s in ``agent.knowledge.tool``). Keeping the declarations
here lets another transport offer the same tools.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Final

from google.genai import types

from agent.knowledge.tool import DECLARATION as SEARCH_KNOWLEDGE_DECLARATION
from agent.knowledge.tool import SEARCH_KNOWLEDGE

END_CALL: Final = "end_call"
TRANSFER_CALL: Final = "transfer_call"

_DECLARATIONS: Final = {
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
    SEARCH_KNOWLEDGE: SEARCH_KNOWLEDGE_DECLARATION,
}


def declarations(names: Iterable[str]) -> list[types.FunctionDeclaration]:
    """The function declarations for the enabled built-in tools, in a stable order."""
    return [_DECLARATIONS[name] for name in names]
