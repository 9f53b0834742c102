"""The package's shape: one concept per module, imports pointing one way, every public name
re-exported by ``telephony.caller``."""

from __future__ import annotations

import ast
import importlib
from pathlib import Path

import telephony.caller

#: Lowest first: a module may import only from modules before it (the CLI from none after it).
LAYERS = [
    "script",
    "recordings",
    "result",
    "simulated",
    "drive",
    "drive_sync",
    "answers",
    "cli",
]
PACKAGE = Path(telephony.caller.__file__).parent


def caller_imports(module: str) -> set[str]:
    tree = ast.parse((PACKAGE / f"{module}.py").read_text())
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module:
            if node.module == "telephony.caller":
                found.update(f"telephony.caller.{a.name}" for a in node.names)
            elif node.module.startswith("telephony.caller."):
                found.add(node.module)
        elif isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.startswith("telephony.caller"))
    return found


def test_modules_import_only_lower_layers_and_never_the_cli() -> None:
    assert sorted(p.stem for p in PACKAGE.glob("*.py")) == sorted([*LAYERS, "__init__"])
    for i, module in enumerate(LAYERS):
        allowed = {f"telephony.caller.{m}" for m in LAYERS[:i]} - {"telephony.caller.cli"}
        allowed.add("telephony.caller.samples")  # data, imported lazily by the CLI
        assert caller_imports(module) <= allowed, module


def test_every_public_name_is_re_exported_from_its_module() -> None:
    exported: dict[str, str] = {}
    for module in LAYERS:
        mod = importlib.import_module(f"telephony.caller.{module}")
        for name in mod.__all__:
            exported.setdefault(name, module)
    for name in telephony.caller.__all__:
        module = importlib.import_module(f"telephony.caller.{exported[name]}")
        assert getattr(telephony.caller, name) is getattr(module, name), name
