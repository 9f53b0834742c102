"""A non-blocking Python tool for the simulator's converse dialogue
(``AGENT_TOOLS_MODULE=support.converse_tools``)."""

from __future__ import annotations

import asyncio

from agent.tools import tool


@tool(timeout_s=5, behavior="non_blocking", scheduling="when_idle")
async def order_status(order: str) -> dict[str, object]:
    """Where a customer's order is.

    Args:
        order: The order, in the customer's words.
    """
    await asyncio.sleep(0.5)  # a slow backend: the conversation goes on meanwhile
    return {"message": "Your order shipped on Monday and arrives on Thursday."}
