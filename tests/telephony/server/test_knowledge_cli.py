"""``voice-agent knowledge index|search|list``, and the server's check before it starts."""

from __future__ import annotations

import importlib
import json
from pathlib import Path
from typing import Any

import pytest

from agent.knowledge import EXTRA_HINT, MissingExtra
from support import HERMETIC_VARIABLES
from support.knowledge import FAQ
from telephony.cli import main
from telephony.server.serve import StartupError, preflight
from telephony.settings import Settings


@pytest.fixture
def env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> dict[str, str]:
    for name in HERMETIC_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.chdir(tmp_path)
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "faq.md").write_text(FAQ)
    values = {
        "AGENT_KNOWLEDGE": str(docs),
        "KNOWLEDGE_INDEX": str(tmp_path / "k.db"),
        "KNOWLEDGE_EMBEDDINGS": "local",
        "DATABASE_URL": "off",
    }
    for name, value in values.items():
        monkeypatch.setenv(name, value)
    return values


def test_index_search_and_list(env: dict[str, str], capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["knowledge", "index"]) == 0
    out = capsys.readouterr().out
    assert "1 files: 1 added" in out and "3 passages" in out
    assert main(["knowledge", "index"]) == 0
    assert "1 unchanged" in capsys.readouterr().out
    assert main(["knowledge", "search", "--json", "when", "are", "you", "open"]) == 0
    answer: dict[str, Any] = json.loads(capsys.readouterr().out)
    assert answer["result"] == "ok" and answer["mode"] == "hybrid"
    assert answer["passages"][0]["section"].endswith("Opening hours")
    assert main(["knowledge", "search", "Mastercard?"]) == 0
    printed = capsys.readouterr().out
    assert printed.startswith("ok in ") and "1. faq.md > Bright Smile Dental > Billing" in printed
    assert main(["knowledge", "list"]) == 0
    listing = capsys.readouterr().out
    assert "local:wordllama/l2_supercat (256 dimensions), 1 documents, 3 passages" in listing


def test_a_mismatch_is_one_line(
    env: dict[str, str], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["knowledge", "index"]) == 0
    capsys.readouterr()
    monkeypatch.setenv("KNOWLEDGE_EMBEDDINGS", "off")
    assert main(["knowledge", "search", "parking"]) == 2
    [line] = capsys.readouterr().err.strip().splitlines()
    assert "built with local:wordllama/l2_supercat" in line and "--rebuild" in line
    # The server says the same before it starts.
    with pytest.raises(StartupError, match="AGENT_KNOWLEDGE: the knowledge index"):
        preflight(Settings.from_env(dict(env, KNOWLEDGE_EMBEDDINGS="off")))
    assert main(["knowledge", "index", "--rebuild"]) == 0
    assert "3 passages in" in capsys.readouterr().out


def test_a_missing_extra_names_it(env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> None:
    real = importlib.import_module

    def without_wordllama(name: str, package: str | None = None) -> Any:
        if name == "wordllama":
            raise ModuleNotFoundError("No module named 'wordllama'", name="wordllama")
        return real(name, package)

    monkeypatch.setattr(importlib, "import_module", without_wordllama)
    with pytest.raises(StartupError) as err:
        preflight(Settings.from_env(env))
    assert str(err.value) == (
        f"AGENT_KNOWLEDGE: the knowledge base needs wordllama, which is not installed: {EXTRA_HINT}"
    )
    assert EXTRA_HINT == "pip install 'gemini-phone-agent[knowledge]'"
    assert isinstance(err.value.__context__, MissingExtra)


def test_nothing_to_index_and_no_index(
    env: dict[str, str], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delenv("AGENT_KNOWLEDGE")
    assert main(["knowledge", "index"]) == 2
    assert "set AGENT_KNOWLEDGE" in capsys.readouterr().err
    assert main(["knowledge", "list"]) == 2
    assert "no knowledge index" in capsys.readouterr().err
    assert main(["knowledge", "index", env["AGENT_KNOWLEDGE"]]) == 0
