"""``.env``: applied under the process environment, parse errors and typos reported."""

from __future__ import annotations

from pathlib import Path

import pytest

from telephony.envfile import EnvFileError, load_env_file


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / ".env"
    path.write_text(text)
    return path


def test_values_apply_where_the_environment_is_silent(tmp_path: Path) -> None:
    path = write(
        tmp_path, 'AGENT_VOICE=Kore\nPORT=9000\n# a comment\nexport AGENT_GREETING="Hi there"\n'
    )
    environ = {"PORT": "8081"}
    loaded = load_env_file(path, known={"AGENT_VOICE", "PORT", "AGENT_GREETING"}, environ=environ)
    assert environ == {"PORT": "8081", "AGENT_VOICE": "Kore", "AGENT_GREETING": "Hi there"}
    assert loaded.applied == {"AGENT_VOICE": "Kore", "AGENT_GREETING": "Hi there"}
    assert loaded.sources == {"AGENT_VOICE": str(path), "AGENT_GREETING": str(path)}
    assert loaded.warnings == ()


def test_no_file_is_fine(tmp_path: Path) -> None:
    environ: dict[str, str] = {}
    loaded = load_env_file(tmp_path / ".env", environ=environ)
    assert loaded.path is None and loaded.applied == {} and environ == {}


def test_a_line_that_cannot_be_parsed_names_the_file_and_line(tmp_path: Path) -> None:
    path = write(tmp_path, "AGENT_VOICE=Kore\nthis is not an assignment\n")
    with pytest.raises(EnvFileError) as err:
        load_env_file(path, environ={})
    assert str(err.value) == (
        f"{path}, line 2: cannot parse 'this is not an assignment' (expected NAME=value)"
    )


def test_unknown_names_are_reported_as_likely_typos(tmp_path: Path) -> None:
    path = write(tmp_path, "GEMINI_APIKEY=abc\nAGENT_VOICE=Kore\n")
    loaded = load_env_file(path, known={"AGENT_VOICE", "GEMINI_API_KEY"}, environ={})
    assert loaded.warnings == (
        f"{path} sets GEMINI_APIKEY, which voice-agent does not read (a typo?)",
    )


def test_references_to_other_variables_are_expanded(tmp_path: Path) -> None:
    path = write(tmp_path, "BASE=https://agent.example.com\nPUBLIC_URL=${BASE}/phone\n")
    environ: dict[str, str] = {}
    load_env_file(path, environ=environ)
    assert environ["PUBLIC_URL"] == "https://agent.example.com/phone"
