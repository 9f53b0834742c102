"""Python tools: the declaration comes from the signature and the docstring."""

from __future__ import annotations

from typing import Literal

import pytest

from agent.tools import CallIdentity, tool
from agent.tools.python import ToolDefinitionError, from_function, load_module


@tool(timeout_s=3, behavior="non_blocking", scheduling="interrupt")
async def book_table(
    people: int,
    time: str,
    call: CallIdentity,
    seating: Literal["inside", "terrace"] = "inside",
    notes: list[str] | None = None,
    deposit: float | None = None,
) -> dict[str, object]:
    """Book a table at the restaurant.

    Only for parties of up to eight.

    Args:
        people: How many guests.
        time: When, like 19:30.
        seating: Where they want to sit;
            the terrace closes in winter.
        notes: Anything the kitchen should know.

    Returns:
        The booking.
    """
    return {"people": people, "seating": seating, "caller": call.caller}


@pytest.mark.asyncio
async def test_the_schema_follows_the_signature_and_docstring() -> None:
    t = from_function(book_table)
    spec = t.spec
    assert spec.name == "book_table"
    assert spec.description == "Book a table at the restaurant. Only for parties of up to eight."
    assert (spec.timeout_s, spec.behavior, spec.scheduling) == (3.0, "non_blocking", "interrupt")
    props = spec.parameters["properties"]
    assert props["people"] == {"type": "integer", "description": "How many guests."}
    assert props["seating"]["enum"] == ["inside", "terrace"]
    assert props["seating"]["description"] == (
        "Where they want to sit; the terrace closes in winter."
    )
    assert props["notes"]["items"] == {"type": "string"}
    assert props["deposit"] == {"type": "number"}
    assert "call" not in props
    assert spec.parameters["required"] == ["people", "time"]
    answer = await t.invoke(
        {"people": 2, "time": "19:30", "surprise": "ignored"}, "fc", CallIdentity("CA", "+1555")
    )
    assert answer == {"people": 2, "seating": "inside", "caller": "+1555"}


def test_functions_that_cannot_be_declared_are_refused_with_their_name() -> None:
    def sync(x: int) -> None:
        """Not async."""

    async def undocumented(x: int) -> None:
        pass

    async def odd(x: complex) -> None:
        """Odd type."""

    with pytest.raises(ToolDefinitionError, match="sync: a tool must be an async function"):
        from_function(sync)  # type: ignore[arg-type]
    with pytest.raises(ToolDefinitionError, match="undocumented: needs a docstring"):
        from_function(undocumented)
    with pytest.raises(
        ToolDefinitionError, match=r"parameter x: type .*complex.* cannot be declared"
    ):
        from_function(odd)
    with pytest.raises(ToolDefinitionError, match="behavior"):
        tool(behavior="sometimes")  # type: ignore[arg-type]


def test_a_module_gives_its_decorated_functions_only() -> None:
    [only] = load_module("support.sample_tools")
    assert only.spec.name == "opening_hours"
    with pytest.raises(ToolDefinitionError, match=r"cannot import .support\.nothing_here."):
        load_module("support.nothing_here")
    with pytest.raises(ToolDefinitionError, match="defines no function marked with @tool"):
        load_module("support.fakes")
