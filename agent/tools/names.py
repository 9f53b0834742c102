"""The built-in tools' names: light enough for anything to import (no SDK)."""

from __future__ import annotations

from typing import Final

__all__ = ["BUILTIN_TOOLS", "END_CALL", "GOOGLE_SEARCH", "SEARCH_KNOWLEDGE", "TRANSFER_CALL"]

END_CALL: Final = "end_call"
TRANSFER_CALL: Final = "transfer_call"
GOOGLE_SEARCH: Final = "google_search"
#: Offered whenever AGENT_KNOWLEDGE is set; answered by ``agent.knowledge.tool``.
SEARCH_KNOWLEDGE: Final = "search_knowledge"
#: The built-in tools AGENT_TOOLS may name (search_knowledge comes with AGENT_KNOWLEDGE).
BUILTIN_TOOLS: Final = (END_CALL, TRANSFER_CALL, GOOGLE_SEARCH)
