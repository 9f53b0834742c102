"""Python tools as an operator would write them (``AGENT_TOOLS_MODULE=support.sample_tools``)."""

from __future__ import annotations

from typing import Literal

from agent.tools import CallIdentity, tool

Day = Literal["monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday"]

HOURS = {"saturday": "9 am to 1 pm", "sunday": "closed"}


@tool(timeout_s=2)
async def opening_hours(day: Day, call: CallIdentity) -> dict[str, object]:
    """When the clinic is open on a given day of the week.

    Args:
        day: The day of the week, in lower case.
    """
    if day not in Day.__args__:  # type: ignore[attr-defined]
        return {"status": "no_results", "error": f"no such day: {day}", "retryable": False}
    return {"day": day, "hours": HOURS.get(day, "8 am to 6 pm"), "caller": call.caller}


def not_a_tool() -> None:
    """Undecorated: not offered to the model."""
