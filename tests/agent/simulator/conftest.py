"""Fixtures of the Live API simulator's tests."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from agent.simulator import LiveSimulator
from support.sim import FAST


@pytest.fixture
async def sim() -> AsyncIterator[LiveSimulator]:
    async with LiveSimulator(behaviour=FAST) as simulator:
        yield simulator
