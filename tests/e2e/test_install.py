"""The package as users install it: a wheel in a fresh venv, and the Dockerfile's own steps.

CI runs from a checkout with every extra installed, which would hide a missing dependency
(httpx reached users only through google-genai until the SDK dropped it). So the wheel is
built and installed, with no extras, into a venv of its own; then ``voice-agent serve`` runs
on its embedded defaults and a simulated call with the bundled sample gets answered, all from
that venv. The Dockerfile cannot be built here (no Docker engine), so its install steps are
run as written, stage by stage, with the image's paths mapped into a temporary directory.

Both use the lock (constraints.txt), as ``make`` and the Dockerfile do. They take a minute or
two: pip copies the wheels from its cache, but still installs about 60 packages twice.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import time
import tomllib
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import pytest

from support import (
    HERMETIC_VARIABLES,
    ROOT,
    canonical,
    dockerfile_instructions,
    free_port,
    locked_versions,
)

LOCK = ROOT / "constraints.txt"
PROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
INSTALL_TIMEOUT_S = 900
#: Not part of the source tree a wheel is built from.
_NOT_SOURCE = shutil.ignore_patterns(
    ".git",
    ".venv",
    "__pycache__",
    "build",
    "dist",
    "*.egg-info",
    ".pytest_cache",
    ".mypy_cache",
    ".ruff_cache",
    "calls.db*",
    ".env",
    "heard.wav",
)


def clean_env(**extra: str) -> dict[str, str]:
    """The environment of a user's shell: none of our variables, nothing from this venv."""
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in HERMETIC_VARIABLES and k not in {"VIRTUAL_ENV", "PYTHONPATH"}
    }
    env["PATH"] = os.pathsep.join(
        p for p in env.get("PATH", "").split(os.pathsep) if not p.startswith(sys.prefix)
    )
    return {**env, **extra}


def run(
    command: list[str], *, cwd: Path, timeout: float = 120, **env: str
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        command,
        cwd=cwd,
        env=clean_env(**env),
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def new_venv(path: Path) -> Path:
    """A fresh venv from the base interpreter (not a copy of the test venv)."""
    base = getattr(sys, "_base_executable", sys.executable)
    subprocess.run([base, "-m", "venv", str(path)], check=True, timeout=120)
    return path / "bin"


def source_tree(dest: Path) -> Path:
    shutil.copytree(ROOT, dest, ignore=_NOT_SOURCE)
    return dest


@dataclass
class Server:
    proc: subprocess.Popen[bytes]
    port: int
    log: Path

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            raise


def start_server(command: list[str], *, cwd: Path, port: int, **env: str) -> Server:
    log = cwd / f"serve-{port}.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(command, cwd=cwd, env=clean_env(**env), stdout=out, stderr=out)
    server = Server(proc, port, log)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"the server exited ({proc.returncode}):\n{log.read_text()}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=2) as r:
                if r.status == 200:
                    return server
        except OSError:
            pass
        time.sleep(0.2)
    server.stop()
    raise AssertionError(f"the server never became ready:\n{log.read_text()}")


# --- the wheel, as a user installs it ----------------------------------------------------------


@pytest.fixture(scope="module")
def user_venv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``pip install <wheel>`` (no extras) into a new venv; its bin directory."""
    work = tmp_path_factory.mktemp("wheel")
    src = source_tree(work / "src")
    dist = work / "dist"
    built = run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--quiet", "-w", str(dist), str(src)],
        cwd=work,
        timeout=INSTALL_TIMEOUT_S,
    )
    assert built.returncode == 0, built.stderr
    [wheel] = dist.glob("*.whl")
    bin_dir = new_venv(work / "venv")
    installed = run(
        [str(bin_dir / "python"), "-m", "pip", "install", "--quiet", "-c", str(LOCK), str(wheel)],
        cwd=work,
        timeout=INSTALL_TIMEOUT_S,
    )
    assert installed.returncode == 0, installed.stderr
    return bin_dir


def test_the_wheel_brings_no_test_tools(user_venv: Path, tmp_path: Path) -> None:
    for module in ("pytest", "mypy", "locust", "selenium", "psycopg"):
        proc = run([str(user_venv / "python"), "-c", f"import {module}"], cwd=tmp_path)
        assert proc.returncode != 0, f"{module} came with a plain install"


def test_version(user_venv: Path, tmp_path: Path) -> None:
    proc = run([str(user_venv / "voice-agent"), "--version"], cwd=tmp_path)
    assert (proc.returncode, proc.stdout.strip()) == (0, f"voice-agent {PROJECT['version']}")


def test_every_command_starts(user_venv: Path, tmp_path: Path) -> None:
    commands = ["serve", "call", "calls", "dial", "loadtest", "simulate-live", "config"]
    for command in commands:
        proc = run([str(user_venv / "voice-agent"), command, "--help"], cwd=tmp_path)
        assert proc.returncode == 0, f"{command}: {proc.stderr}"
        assert "usage: voice-agent" in proc.stdout


def test_calls_list_loads_neither_the_server_nor_the_sdk(user_venv: Path, tmp_path: Path) -> None:
    probe = (
        "import sys\n"
        "from telephony.cli import main\n"
        "code = main(['calls', 'list'])\n"
        "print(sorted(m for m in ('uvicorn', 'fastapi', 'google.genai', 'numpy') "
        "if m in sys.modules))\n"
    )
    proc = run([str(user_venv / "python"), "-c", probe], cwd=tmp_path)
    assert proc.stdout.strip().splitlines()[-1] == "[]", proc.stderr
    assert "no call records" in proc.stderr


def test_a_missing_extra_is_one_line_naming_it(user_venv: Path, tmp_path: Path) -> None:
    proc = run(
        [str(user_venv / "voice-agent"), "calls", "list"],
        cwd=tmp_path,
        DATABASE_URL="postgresql+psycopg://agent:secret@127.0.0.1:9/calls",
    )
    assert proc.returncode != 0
    [line] = proc.stderr.strip().splitlines()
    assert "pip install 'gemini-phone-agent[postgres]'" in line
    assert "secret" not in line


def test_knowledge_without_its_extra_is_one_line_naming_it(user_venv: Path, tmp_path: Path) -> None:
    (tmp_path / "faq.md").write_text("# Parking\nBehind the building.\n")
    proc = run(
        [str(user_venv / "voice-agent"), "serve", "--port", "0"],
        cwd=tmp_path,
        AGENT_KNOWLEDGE=str(tmp_path / "faq.md"),
    )
    assert proc.returncode == 2
    [line] = proc.stderr.strip().splitlines()
    assert line.startswith("voice-agent: AGENT_KNOWLEDGE: the knowledge base needs apsw")
    assert line.endswith("pip install 'gemini-phone-agent[knowledge]'")


def test_serve_and_answer_a_first_call_with_the_bundled_sample(
    user_venv: Path, tmp_path: Path
) -> None:
    port = free_port()
    server = start_server(
        [str(user_venv / "voice-agent"), "serve", "--host", "127.0.0.1", "--port", str(port)],
        cwd=tmp_path,
        port=port,
    )
    try:
        call = run(
            [
                str(user_venv / "voice-agent"),
                "call",
                "--url",
                f"ws://127.0.0.1:{port}/twilio/media",
            ],
            cwd=tmp_path,
            timeout=90,
        )
        assert call.returncode == 0, call.stdout + call.stderr
        assert "(bundled sample)" in call.stdout
        assert call.stdout.count("agent audio starts playing") >= 2  # greeting, then the answer
        assert re.search(r"^turn 1: caller [\d.]+-[\d.]+ s, agent at [\d.]+ s", call.stdout, re.M)
        assert (tmp_path / "heard.wav").stat().st_size > 8000
        listed = run([str(user_venv / "voice-agent"), "calls", "list", "--json"], cwd=tmp_path)
        assert listed.returncode == 0, listed.stderr
        [record] = json.loads(listed.stdout)
        assert record["outcome"] == "completed"
        assert (record["caller"], record["callee"]) == ("+15005550006", "+15005550001")
    finally:
        code = server.stop()
    log = server.log.read_text()
    assert code == 0, log
    ready = [json.loads(line) for line in log.splitlines() if '"server.ready"' in line]
    assert ready and ready[0]["model_path"] == "fast", log


# --- the Dockerfile's steps ------------------------------------------------------------------


@dataclass
class Stage:
    name: str
    root: Path  # stands for the image's /
    bin: Path  # the stage's Python (python:3.11-slim has one on PATH)
    workdir: Path
    env: dict[str, str]


def _map(path: str, stage: Stage) -> Path:
    """A path of the image, inside the stage's stand-in root."""
    return stage.root / path.lstrip("/") if path.startswith("/") else stage.workdir / path


def _dockerignore_admits(relative: str) -> bool:
    """infra/Dockerfile.dockerignore: everything is excluded, then the ``!`` lines admitted."""
    lines = [
        line.strip()
        for line in (ROOT / "infra" / "Dockerfile.dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    assert lines[0] == "*", "the context starts empty; the file admits what the image needs"
    admitted = [line[1:].rstrip("/") for line in lines if line.startswith("!")]
    return any(relative == a or relative.startswith(a + "/") for a in admitted)


#: An absolute path in a RUN command (after a space, an "=" or at the start).
_IMAGE_PATH = re.compile(r"(?:(?<=[\s=])|^)/[A-Za-z][\w./-]*")


def _run_instruction(arguments: str, stage: Stage, stages: dict[str, Stage]) -> None:
    mounts = dict.fromkeys(re.findall(r"--mount=(\S+)", arguments))
    command = re.sub(r"--mount=\S+\s*", "", arguments)
    bound: dict[str, Path] = {}
    for mount in mounts:
        spec = dict(item.split("=", 1) for item in mount.split(","))
        assert spec["type"] == "bind"
        bound[spec["target"]] = stages[spec["from"]].root / spec["source"].lstrip("/")

    def host_path(match: re.Match[str]) -> str:
        path = match.group(0)
        for target, source in bound.items():
            if path == target or path.startswith(target + "/"):
                return str(source) + path[len(target) :]
        return str(stage.root / path.lstrip("/"))

    # Every path of the image into the stage's stand-in root, so nothing here is touched;
    # no cache is an image-size concern only.
    command = _IMAGE_PATH.sub(host_path, command).replace("--no-cache-dir ", "")
    path = f"{stage.bin}{os.pathsep}{clean_env()['PATH']}"
    proc = subprocess.run(
        ["bash", "-euo", "pipefail", "-c", command],
        cwd=stage.workdir,
        env=clean_env(**stage.env, PATH=path, HOME=str(stage.root)),
        capture_output=True,
        text=True,
        timeout=INSTALL_TIMEOUT_S,
        check=False,
    )
    assert proc.returncode == 0, f"RUN {arguments}\n{proc.stdout}\n{proc.stderr}"


@pytest.fixture(scope="module")
def image(tmp_path_factory: pytest.TempPathFactory) -> Stage:
    """The Dockerfile's stages, run: what the final image would hold (its Python's bin)."""
    work = tmp_path_factory.mktemp("image")
    context = source_tree(work / "context")
    stages: dict[str, Stage] = {}
    stage: Stage | None = None
    for number, (name, arguments) in enumerate(dockerfile_instructions()):
        if name == "FROM":
            base, _, alias = arguments.partition(" AS ")
            assert base.startswith("python:3.11-slim"), "the stand-in venv is CPython 3.11"
            label = alias.strip() or f"stage{number}"
            root = work / label
            root.mkdir()
            stage = Stage(label, root, new_venv(root / "python"), root, {})
            stages[label] = stage
            continue
        assert stage is not None, f"{name} before FROM"
        if name == "WORKDIR":
            stage.workdir = _map(arguments, stage)
            stage.workdir.mkdir(parents=True, exist_ok=True)
        elif name == "COPY":
            *sources, dest = shlex.split(arguments)
            target = stage.workdir / dest
            for source in sources:
                assert _dockerignore_admits(source), f"the build context has no {source}"
                if (context / source).is_dir():
                    shutil.copytree(context / source, target)
                else:
                    target.mkdir(parents=True, exist_ok=True)
                    shutil.copy2(context / source, target / source)
        elif name == "ENV":
            for item in shlex.split(arguments):
                key, _, value = item.partition("=")
                stage.env[key] = value
        elif name == "RUN" and "pip" in arguments:
            _run_instruction(arguments, stage, stages)
        # RUN useradd, USER, EXPOSE, HEALTHCHECK, ENTRYPOINT: checked by test_infra.py and
        # exercised below.
    assert stage is not None
    (stage.root / "home" / "agent").mkdir(parents=True, exist_ok=True)
    return stage


def test_the_image_serves_and_passes_its_own_health_check(image: Stage) -> None:
    instructions = dict(dockerfile_instructions()[::-1])  # the last of each kind
    entrypoint = json.loads(instructions["ENTRYPOINT"])
    assert entrypoint[0] == "voice-agent"
    home = image.root / "home" / "agent"
    port = free_port()
    env = {**image.env, "PORT": str(port)}
    server = start_server(
        [str(image.bin / entrypoint[0]), *entrypoint[1:]], cwd=home, port=port, **env
    )
    try:
        check = json.loads(instructions["HEALTHCHECK"].split("CMD", 1)[1])
        assert check[0] == "python"
        proc = run([str(image.bin / "python"), *check[1:]], cwd=home, **env)
        assert proc.returncode == 0, proc.stderr
        # The image carries the PostgreSQL driver, as production needs.
        driver = run([str(image.bin / "python"), "-c", "import psycopg"], cwd=home)
        assert driver.returncode == 0, driver.stderr
    finally:
        code = server.stop()
    log = server.log.read_text()
    assert code == 0, log
    # LOG_FORMAT=json from the image's ENV: every line is a JSON object.
    assert all(line.startswith("{") for line in log.splitlines() if line.strip()), log


def test_the_image_holds_only_the_locked_versions(image: Stage, tmp_path: Path) -> None:
    pins = locked_versions()
    proc = run([str(image.bin / "python"), "-m", "pip", "list", "--format", "json"], cwd=tmp_path)
    installed = {canonical(p["name"]): p["version"] for p in json.loads(proc.stdout)}
    for name, version in installed.items():
        if name not in {"pip", "setuptools", "gemini-phone-agent"}:
            assert pins.get(name) == version, f"{name} {version} is not the locked version"
    for name in ("google-genai", "websockets", "fastapi", "uvicorn", "psycopg", "numpy"):
        assert name in installed
