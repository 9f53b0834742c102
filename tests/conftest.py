"""Test-wide fixtures: every test runs without the developer's or CI's model/Twilio settings."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from support import HERMETIC_VARIABLES


@pytest.fixture(autouse=True)
def hermetic_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[None]:
    for name in HERMETIC_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    # Call records of servers started by tests go to the test's own database, not to
    # ./calls.db (the default) in whatever directory the suite runs from.
    monkeypatch.setenv("DATABASE_URL", f"sqlite:///{tmp_path / 'calls.db'}")
    # Records the database refuses are spooled there (not in ./.voice-agent/spool).
    monkeypatch.setenv("RECORDS_SPOOL_DIR", str(tmp_path / "spool"))
    # End-of-call reports not delivered yet (CALL_WEBHOOK_URL) wait there.
    monkeypatch.setenv("CALL_WEBHOOK_QUEUE_DIR", str(tmp_path / "webhooks"))
    yield
