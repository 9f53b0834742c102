"""Real servers from Debian for the tests that are about them: PostgreSQL and HAProxy.

`make test` installs the packages (`make system`); each test starts its own instance in a
temporary directory on loopback, on free ports, and stops it afterwards. PostgreSQL refuses to
run as root, so as root (CI) the server runs as Debian's ``postgres`` user.
"""

from __future__ import annotations

import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from telephony.server.runner import free_port

__all__ = ["haproxy", "postgres"]

POSTGRES_ROOT = Path("/usr/lib/postgresql")
HAPROXY = "/usr/sbin/haproxy"


def _postgres_bin() -> Path:
    versions = sorted(
        (p for p in POSTGRES_ROOT.glob("*/bin") if (p / "postgres").exists()),
        key=lambda p: int(p.parent.name) if p.parent.name.isdigit() else 0,
    )
    if not versions:
        raise RuntimeError(f"no PostgreSQL server under {POSTGRES_ROOT} (make test installs it)")
    return versions[-1]


def _as_postgres() -> dict[str, Any]:
    """``subprocess`` options that run a command as ``postgres`` when we are root: the
    process itself changes user (a ``runuser`` in between would not pass our signals on)."""
    if os.geteuid() != 0:
        return {}
    return {"user": "postgres", "group": "postgres", "extra_groups": []}


def _wait_for_port(port: int, proc: subprocess.Popen[bytes], what: str, log: Path) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{what} exited ({proc.returncode}):\n{log.read_text()}")
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise RuntimeError(f"{what} did not listen on {port}:\n{log.read_text()}")


def _stop(proc: subprocess.Popen[bytes], sig: int = signal.SIGTERM) -> None:
    if proc.poll() is None:
        proc.send_signal(sig)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)


@contextmanager
def postgres(workdir: Path, database: str = "calls") -> Iterator[str]:
    """A PostgreSQL server with an empty ``database``; yields its SQLAlchemy URL."""
    bin_dir = _postgres_bin()
    workdir.mkdir(parents=True, exist_ok=True)
    if os.geteuid() == 0:
        # The server runs as `postgres`, which cannot enter pytest's private (0700) temporary
        # directories: its data directory is a fresh one of its own under the system's.
        data = Path(tempfile.mkdtemp(prefix="voice-agent-pgdata-"))
        user = pwd.getpwnam("postgres")
        os.chown(data, user.pw_uid, user.pw_gid)
    else:
        data = workdir / "pgdata"
        data.mkdir()
    log = workdir / "postgres.log"
    init = subprocess.run(
        [
            str(bin_dir / "initdb"),
            "-D",
            str(data),
            "-A",
            "trust",
            "-U",
            "postgres",
            "--no-sync",
            "-E",
            "UTF8",
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        **_as_postgres(),
    )
    if init.returncode != 0:
        raise RuntimeError(f"initdb failed:\n{init.stdout}\n{init.stderr}")
    port = free_port()
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [
                str(bin_dir / "postgres"),
                "-D",
                str(data),
                "-p",
                str(port),
                "-k",
                str(data),
                "-c",
                "listen_addresses=127.0.0.1",
                "-c",
                "fsync=off",
                "-c",
                "max_connections=100",
            ],
            stdout=out,
            stderr=out,
            **_as_postgres(),
        )
    try:
        _wait_for_port(port, proc, "postgres", log)
        created = _createdb(bin_dir, port, database)
        if created.returncode != 0:
            raise RuntimeError(f"createdb failed: {created.stderr}")
        yield f"postgresql+psycopg://postgres@127.0.0.1:{port}/{database}"
    finally:
        _stop(proc, signal.SIGINT)  # fast shutdown
        shutil.rmtree(data, ignore_errors=True)


def _createdb(bin_dir: Path, port: int, database: str) -> subprocess.CompletedProcess[str]:
    deadline = time.monotonic() + 20
    while True:
        result = subprocess.run(
            [
                str(bin_dir / "createdb"),
                "-h",
                "127.0.0.1",
                "-p",
                str(port),
                "-U",
                "postgres",
                database,
            ],
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
        # The server may still be starting up ("the database system is starting up").
        if result.returncode == 0 or time.monotonic() > deadline:
            return result
        time.sleep(0.1)


@contextmanager
def haproxy(workdir: Path, config: str, port: int) -> Iterator[subprocess.Popen[bytes]]:
    """HAProxy in the foreground with ``config`` (which must bind 127.0.0.1:``port``)."""
    path = workdir / "haproxy.cfg"
    path.write_text(config)
    check = subprocess.run(
        [HAPROXY, "-c", "-f", str(path)], capture_output=True, text=True, check=False
    )
    if check.returncode != 0:
        raise RuntimeError(f"haproxy config:\n{check.stdout}\n{check.stderr}")
    log = workdir / "haproxy.log"
    with log.open("wb") as out:
        proc = subprocess.Popen([HAPROXY, "-db", "-f", str(path)], stdout=out, stderr=out)
    try:
        _wait_for_port(port, proc, "haproxy", log)
        yield proc
    finally:
        _stop(proc, signal.SIGUSR1)  # soft stop


def haproxy_config(port: int, instances: Mapping[str, int]) -> str:
    """Round-robin over the instances for webhooks and the API, with active health checks on
    ``/readyz`` (a draining or full instance gets no new calls); a Media Stream whose path
    names an instance (``/twilio/media/<id>``) goes to that instance."""
    lines = [
        "global",
        "    maxconn 2000",
        "defaults",
        "    mode http",
        "    timeout connect 5s",
        "    timeout client 1h",
        "    timeout server 1h",
        "    timeout tunnel 1h",
        "frontend calls",
        f"    bind 127.0.0.1:{port}",
    ]
    for name in instances:
        lines.append(f"    use_backend instance_{name} if {{ path /twilio/media/{name} }}")
    lines += [
        "    default_backend pool",
        "backend pool",
        "    balance roundrobin",
        "    option httpchk GET /readyz",
        "    http-check expect status 200",
        "    default-server inter 300ms fall 1 rise 2",
    ]
    lines += [f"    server {name} 127.0.0.1:{p} check" for name, p in instances.items()]
    for name, p in instances.items():
        lines += [f"backend instance_{name}", f"    server {name} 127.0.0.1:{p}"]
    return "\n".join(lines) + "\n"
