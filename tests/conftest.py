"""Test-wide fixtures: every test runs without the developer's or CI's model/Twilio settings."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from support import HERMETIC_VARIABLES


@pytest.fixture(autouse=True)
def hermetic_env(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    for name in HERMETIC_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    yield
