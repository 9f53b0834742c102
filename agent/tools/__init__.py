"""Tools the agent can call: the built-in ones and the operator's own.

- ``agent.tools.builtin``: ``end_call``, ``transfer_call`` (carried out by the transport that
  owns the call) and ``google_search`` (the Live API's own grounding tool);
- ``agent.tools.http``: tools answered by the operator's HTTP endpoints (``AGENT_TOOLS_FILE``);
- ``agent.tools.python``: tools written as decorated async functions (``AGENT_TOOLS_MODULE``);
- ``agent.tools.toolbox``: the rules every operator tool runs under (timeouts, size caps,
  error responses the model can act on).

Operators writing Python tools need only ``tool``, ``CallIdentity`` and ``ToolFailure``.
"""

from typing import Any

from agent.tools.names import END_CALL, GOOGLE_SEARCH, TRANSFER_CALL
from agent.tools.python import tool
from agent.tools.spec import CallIdentity, ToolFailure, ToolSpec
from agent.tools.toolbox import Toolbox, ToolResult

__all__ = [
    "END_CALL",
    "GOOGLE_SEARCH",
    "TRANSFER_CALL",
    "CallIdentity",
    "ToolFailure",
    "ToolResult",
    "ToolSpec",
    "Toolbox",
    "declarations",
    "tool",
]


def __getattr__(name: str) -> Any:
    # The declarations need the SDK: loaded only when asked for (``voice-agent calls`` reads
    # the settings, which name the tools, and must not load google-genai).
    if name == "declarations":
        from agent.tools.builtin import declarations

        return declarations
    raise AttributeError(name)
