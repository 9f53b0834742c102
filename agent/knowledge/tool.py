"""``search_knowledge``: its declaration to the model, and the answer to one call of it.

The transport that owns the call (``telephony.call.bridge``) runs ``KnowledgeTool.answer`` in a
task of its own and sends what it returns as the FunctionResponse. The answer is always a
dict the model can act on: passages, ``no_results``, or ``error``; it never raises.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Final

from agent.logs import fields
from agent.prompts import (
    KNOWLEDGE_FAILED_NOTE,
)
from agent.tools.builtin import SEARCH_KNOWLEDGE, declaration_of

if TYPE_CHECKING:
    from agent.knowledge.search import KnowledgeBase

__all__ = ["DECLARATION", "MAX_QUERY_CHARS", "SEARCH_KNOWLEDGE", "KnowledgeTool"]

log = logging.getLogger(__name__)

#: Longer queries are cut: the model sends a few words; more is a confused or hostile call.
MAX_QUERY_CHARS: Final = 300

#: The declaration the model gets (kept with the other built-in ones).
DECLARATION: Final = declaration_of(SEARCH_KNOWLEDGE)


def _failed(error: str) -> dict[str, Any]:
    return {"result": "error", "error": error, "note": KNOWLEDGE_FAILED_NOTE}


class KnowledgeTool:
    """Answers ``search_knowledge`` calls from one knowledge base (shared by every call)."""

    name: Final = SEARCH_KNOWLEDGE

    def __init__(self, base: KnowledgeBase) -> None:
        self.base = base

    async def answer(self, args: Mapping[str, Any]) -> dict[str, Any]:
        """The FunctionResponse for one call: never raises, always within the deadline."""
        query = args.get("query")
        if not isinstance(query, str) or not query.strip():
            return {"result": "error", "error": "the query must be a non-empty string"}
        query = " ".join(query.split())[:MAX_QUERY_CHARS]
        try:
            result = await self.base.search(query)
        except TimeoutError:
            log.warning(
                "knowledge.timeout", extra=fields(query=query, timeout_s=self.base.timeout_s)
            )
            return _failed(f"the search took longer than {self.base.timeout_s:g} s")
        except Exception:
            # The boundary of one tool call: a fault in the search (a damaged index file, a
            # bug) must cost this answer, never the call the caller is on.
            log.exception("knowledge.search_failed", extra=fields(query=query))
            return _failed("the search failed")
        response = result.response()
        log.info(
            "knowledge.search",
            extra=fields(
                query=query,
                result=response["result"],
                mode=result.mode,
                sources=[p.source for p in result.passages],
                ms=round(result.ms, 1),
            ),
        )
        return response
