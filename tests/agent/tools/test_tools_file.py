"""AGENT_TOOLS_FILE: what a good file gives, and how a bad one is reported."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from agent.env import ConfigError
from agent.tools.http import HttpBackend, ToolsFileError, load_tools_file
from telephony.settings import Settings

GOOD = {
    "name": "lookup_order",
    "description": "Look up an order.",
    "parameters": {
        "type": "object",
        "properties": {"order": {"type": "string"}},
        "required": ["order"],
    },
    "url": "https://shop.example.com/tools/${SHOP_PATH}",
}


def write(tmp_path: Path, *tools: dict[str, Any], name: str = "tools.json") -> Path:
    path = tmp_path / name
    path.write_text(json.dumps({"tools": list(tools)}))
    return path


def load(path: Path, **environ: str) -> list[Any]:
    return load_tools_file(path, {"SHOP_PATH": "lookup", **environ}, HttpBackend())


def test_a_good_file_gives_its_tools_with_defaults(tmp_path: Path) -> None:
    [tool] = load(write(tmp_path, {**GOOD, "headers": {"X-Key": "k-${KEY}"}}), KEY="42")
    assert tool.url == "https://shop.example.com/tools/lookup"
    assert tool.method == "POST" and tool.headers == {"X-Key": "k-42"}
    spec = tool.spec
    assert (spec.timeout_s, spec.behavior, spec.scheduling) == (5.0, "blocking", "when_idle")
    assert spec.sdk_scheduling() is None  # blocking tools answer without one


def test_yaml_works_the_same(tmp_path: Path) -> None:
    path = tmp_path / "tools.yaml"
    path.write_text(
        "tools:\n"
        "  - name: book\n"
        "    description: Book a table.\n"
        "    parameters: {type: object, properties: {people: {type: integer}}}\n"
        "    url: http://127.0.0.1:9/book\n"
        "    method: put\n"
        "    behavior: non_blocking\n"
        "    scheduling: interrupt\n"
        "    timeout_s: 2.5\n"
    )
    [tool] = load(path)
    assert tool.method == "PUT" and tool.spec.timeout_s == 2.5
    assert tool.spec.behavior == "non_blocking"
    assert str(tool.spec.sdk_scheduling()).endswith("INTERRUPT")


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"timeout_s": "fast"}, r"tools\[0\] \(lookup_order\)\.timeout_s: expected a number"),
        ({"timeout_s": 0}, r"timeout_s: expected more than 0"),
        ({"name": "look up"}, r"tools\[0\] \(look up\)\.name: expected letters"),
        ({"url": "ftp://x/y"}, r"\.url: expected an http:// or https:// URL"),
        ({"method": "GET"}, r"\.method: expected one of POST, PUT, PATCH"),
        ({"behavior": "async"}, r"\.behavior: expected one of blocking, non_blocking"),
        ({"scheduling": "later"}, r"\.scheduling: expected one of when_idle"),
        ({"timeout": 3}, r"\.timeout: unknown field"),
        ({"description": ""}, r"\.description: expected a non-empty string"),
        ({"parameters": {"type": "array"}}, r"\.parameters\.type: expected \"object\""),
        (
            {"parameters": {"type": "object", "properties": {}, "required": ["x"]}},
            r"parameters\.required: x not among the properties",
        ),
        (
            {"parameters": {"type": "object", "properties": {"x": {"type": "date"}}}},
            r"parameters\.properties\.x\.type: unknown type 'date'",
        ),
        (
            {"headers": {"Authorization": "Bearer ${NOPE}"}},
            r"headers\.Authorization: \$\{NOPE\} is not set",
        ),
    ],
)
def test_a_bad_field_is_reported_with_the_tool_and_field(
    tmp_path: Path, change: dict[str, Any], message: str
) -> None:
    with pytest.raises(ToolsFileError, match=message):
        load(write(tmp_path, {**GOOD, **change}))


def test_a_missing_field_and_a_duplicate_name_are_reported(tmp_path: Path) -> None:
    without_url = {k: v for k, v in GOOD.items() if k != "url"}
    with pytest.raises(ToolsFileError, match=r"tools\[0\] \(lookup_order\)\.url: missing"):
        load(write(tmp_path, without_url))
    with pytest.raises(
        ToolsFileError, match=r"tools\[1\] \(lookup_order\): the same name as tools\[0\]"
    ):
        load(write(tmp_path, GOOD, GOOD))


def test_a_file_that_is_not_a_tools_file_is_reported(tmp_path: Path) -> None:
    path = tmp_path / "tools.json"
    path.write_text("{not json")
    with pytest.raises(ToolsFileError, match="not valid JSON"):
        load(path)
    path.write_text(json.dumps([GOOD]))
    with pytest.raises(ToolsFileError, match=r'expected \{"tools": \[ … \]\} at the top'):
        load(path)
    with pytest.raises(ToolsFileError, match="cannot read"):
        load(tmp_path / "missing.yaml")


def test_startup_stops_with_one_line_naming_the_variable(tmp_path: Path) -> None:
    path = write(tmp_path, {**GOOD, "timeout_s": "fast"})
    with pytest.raises(ConfigError, match=r"^configuration error: AGENT_TOOLS_FILE: .*timeout_s"):
        Settings.from_env({"AGENT_TOOLS_FILE": str(path), "SHOP_PATH": "x"})


def test_a_tool_may_not_hide_a_built_in_one(tmp_path: Path) -> None:
    path = write(tmp_path, {**GOOD, "name": "end_call"})
    with pytest.raises(ConfigError, match="would hide the built-in tool"):
        Settings.from_env({"AGENT_TOOLS_FILE": str(path), "SHOP_PATH": "x"})


def test_the_settings_carry_the_toolbox_and_google_search(tmp_path: Path) -> None:
    settings = Settings.from_env(
        {
            "AGENT_TOOLS_FILE": str(write(tmp_path, GOOD)),
            "SHOP_PATH": "x",
            "AGENT_TOOLS": "end_call,google_search",
        }
    )
    assert settings.persona.toolbox.names == ("lookup_order",)
    assert settings.persona.tools == ("end_call", "google_search")
    with pytest.raises(ConfigError, match="unknown tool 'web_search'"):
        Settings.from_env({"AGENT_TOOLS": "web_search"})
