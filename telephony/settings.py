"""The service's settings: the model side's (``agent.config``) plus the phone side's.

Read once at startup from the environment (and ``.env``, see ``telephony.dotenv``) by
``Settings.from_env``; a bad value raises ``ConfigError`` naming the variable. ``VARIABLES``
is the one list of every variable the service reads, in documentation order: ``.env.example``
is generated from it, and the tests check the README against it.
"""

from __future__ import annotations

import functools
import os
import re
import secrets
import socket
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final, Literal
from urllib.parse import urlsplit

from agent.config import (
    KNOWLEDGE_VARIABLES,
    MODEL_VARIABLES,
    PERSONA_VARIABLES,
    KnowledgeSettings,
    ModelAccess,
    Persona,
    read_knowledge,
    read_model_access,
    read_persona,
)
from agent.env import ConfigError, EnvReader, Variable, env_example

__all__ = [
    "DEFAULT_DATABASE_URL",
    "VARIABLES",
    "VARIABLE_NAMES",
    "ConfigError",
    "Settings",
    "env_example_text",
]

DEFAULT_UNAVAILABLE_MESSAGE: Final = (
    "Sorry, our assistant is unavailable right now. Please try again later. Goodbye."
)
DEFAULT_BUSY_MESSAGE: Final = (
    "Sorry, all of our lines are busy right now. Please call again in a few minutes. Goodbye."
)
DEFAULT_OUTBOUND_GREETING: Final = (
    "Hello! This is an automated assistant calling. Is now a good time to talk?"
)
#: Call records go here unless DATABASE_URL says otherwise (relative to the working directory).
DEFAULT_DATABASE_URL: Final = "sqlite:///calls.db"
#: API_TOKEN must be at least this long: it guards call transcripts and placing calls.
MIN_API_TOKEN_CHARS: Final = 16
DEFAULT_SERVER: Final = "http://127.0.0.1:8080"
#: Where Twilio opens Media Streams (``/<instance id>`` follows with STREAM_ROUTING=instance).
MEDIA_PATH: Final = "/twilio/media"
#: Call records the database refuses wait here (relative to the working directory).
DEFAULT_SPOOL_DIR: Final = ".voice-agent/spool"
DEFAULT_SPOOL_MAX_MB: Final = 64
#: End-of-call reports not delivered yet wait here (relative to the working directory).
DEFAULT_WEBHOOK_DIR: Final = ".voice-agent/webhooks"
DEFAULT_HEARTBEAT_S: Final = 15.0
DEFAULT_SNAPSHOT_S: Final = 30.0
#: An instance id: a DNS label (a pod name, a host name's first label).
_INSTANCE_ID: Final = re.compile(r"^[A-Za-z0-9][A-Za-z0-9-]{0,62}$")

_E164: Final = re.compile(r"^\+[1-9][0-9]{6,14}$")

_PHONE = "Persona: on the phone"
_SERVER = "Twilio and the server"
_OPS = "Call records, the operator API and outbound calls"
_CLI = "Command line"

PHONE_VARIABLES: Final = (
    Variable(
        "AGENT_TRANSFER_NUMBER",
        "",
        "E.164 number (+14155550100) that enables transfer_call; failed calls go there after "
        "the apology",
        _PHONE,
    ),
    Variable(
        "AGENT_UNAVAILABLE_MESSAGE",
        DEFAULT_UNAVAILABLE_MESSAGE,
        "spoken when the model cannot be reached or is lost",
        _PHONE,
    ),
    Variable(
        "AGENT_BUSY_MESSAGE",
        DEFAULT_BUSY_MESSAGE,
        "spoken when the server is full or draining",
        _PHONE,
    ),
    Variable(
        "TOOLS_FILLER_AFTER_MS",
        "700",
        "a blocking tool running longer than this gets a soft 'working on it' sound until the "
        "agent speaks (off: never)",
        _PHONE,
    ),
    Variable(
        "PUBLIC_URL",
        "",
        "public base URL Twilio uses (https://agent.example.com); required with TWILIO_AUTH_TOKEN",
        _SERVER,
    ),
    Variable(
        "TWILIO_AUTH_TOKEN",
        "",
        "enables X-Twilio-Signature validation of webhooks and the stream",
        _SERVER,
        secret=True,
    ),
    Variable(
        "ALLOW_UNSIGNED",
        "false",
        "true: serve a real model without TWILIO_AUTH_TOKEN (requests unauthenticated); else "
        "serve refuses to start (the embedded simulator always runs unsigned)",
        _SERVER,
    ),
    Variable(
        "TWILIO_ACCOUNT_SID", "", "with the token: REST hang-up/transfer on live calls", _SERVER
    ),
    Variable("MAX_CONCURRENT_CALLS", "100", "calls beyond this are turned away politely", _SERVER),
    Variable(
        "DRAIN_TIMEOUT_S",
        "600",
        "on SIGTERM, how long calls in progress may continue before exit",
        _SERVER,
    ),
    Variable("MAX_CALL_SECONDS", "3600", "longest call (the agent wraps up before it)", _SERVER),
    Variable(
        "CALLER_SILENCE_TIMEOUT_S",
        "30",
        "caller silent this long: the agent asks, then says goodbye (0: off)",
        _SERVER,
    ),
    Variable(
        "STREAM_START_TIMEOUT_S",
        "5",
        "a Media Stream that sends no start within this is closed",
        _SERVER,
    ),
    Variable(
        "MAX_PENDING_STREAMS",
        "",
        "Media Streams connected but not yet started, at most (they hold no call slot; at "
        "the limit the longest-waiting is closed for a new one); "
        "unset: max(16, MAX_CONCURRENT_CALLS / 4)",
        _SERVER,
    ),
    Variable(
        "MAX_PENDING_STREAMS_PER_CLIENT",
        "8",
        "the same, per client address (an IPv6 one by its /64; behind a proxy: from "
        "X-Forwarded-For); beyond it a stream is refused",
        _SERVER,
    ),
    Variable(
        "MAX_PRECONNECTS",
        "",
        "model sessions opened at the webhook ahead of their stream, at most (not call slots); "
        "unset: max(4, MAX_CONCURRENT_CALLS / 4); 0: off",
        _SERVER,
    ),
    Variable(
        "PRECONNECT_TTL_S",
        "8",
        "a pre-connected session its stream has not claimed within this is closed",
        _SERVER,
    ),
    Variable(
        "STREAM_ROUTING",
        "shared",
        "shared: the stream URL is /twilio/media; instance: /twilio/media/<INSTANCE_ID>, so a "
        "load balancer can route the stream to the instance that pre-connected its session",
        _SERVER,
    ),
    Variable(
        "HTTP_HEADER_TIMEOUT_S",
        "10",
        "a connection that has not sent a request's line and headers within this is closed",
        _SERVER,
    ),
    Variable(
        "HTTP_BODY_TIMEOUT_S",
        "10",
        "a request whose body has not arrived within this after its headers is closed",
        _SERVER,
    ),
    Variable(
        "MAX_CONNECTIONS",
        "",
        "open connections (WebSockets included) at most; at the cap idle ones are closed "
        "first; unset: 2 x MAX_CONCURRENT_CALLS + MAX_PENDING_STREAMS + 64, within the "
        "open-file limit",
        _SERVER,
    ),
    Variable(
        "FORWARDED_ALLOW_IPS",
        "127.0.0.1,::1",
        "peers (your proxy) whose X-Forwarded-For/-Proto are believed, comma-separated; *: any",
        _SERVER,
    ),
    Variable(
        "METRICS_TOKEN",
        "",
        "bearer token (16+ characters) GET /metrics requires; unset: /metrics is open",
        _SERVER,
        secret=True,
    ),
    Variable(
        "METRICS_PORT",
        "",
        "serve /metrics on this port only (a second listener on HOST); unset: on the main port",
        _SERVER,
    ),
    Variable("LOG_LEVEL", "INFO", "DEBUG, INFO, WARNING or ERROR", _SERVER),
    Variable(
        "LOG_FORMAT", "auto", "json, text, or auto (text on a terminal, JSON otherwise)", _SERVER
    ),
    Variable(
        "RECORD_CALLS",
        "",
        "record every call (both legs + events) under this directory (unset: off)",
        _SERVER,
    ),
    Variable("RECORD_CALLS_MAX_S", "7200", "audio recorded per leg of one call, at most", _SERVER),
    Variable(
        "DATABASE_URL",
        DEFAULT_DATABASE_URL,
        "where call records go: any SQLAlchemy URL (postgresql+psycopg://... needs the "
        "postgres extra); off: none",
        _OPS,
        secret=True,
    ),
    Variable(
        "API_TOKEN",
        "",
        "bearer token (16+ characters) of the operator API and /ui; unset: the API is off",
        _OPS,
        secret=True,
    ),
    Variable(
        "REDACT_PHONE_NUMBERS",
        "false",
        "mask phone numbers (all digits but the last 4) in logs and call records",
        _OPS,
    ),
    Variable(
        "INSTANCE_ID",
        "",
        "this server process's name in the call records (letters, digits, '-'; at most 63); "
        "unset: the host name (a pod's name)",
        _OPS,
    ),
    Variable(
        "INSTANCE_HEARTBEAT_S",
        "15",
        "how often an instance says it is alive; one silent for 4 of these is presumed gone "
        "and its calls in progress are recorded as interrupted",
        _OPS,
    ),
    Variable(
        "RECORDS_SNAPSHOT_S",
        "30",
        "how often the records of calls in progress are refreshed (what a crash leaves) (0: off)",
        _OPS,
    ),
    Variable(
        "RECORDS_SPOOL_DIR",
        DEFAULT_SPOOL_DIR,
        "records the database refuses wait here (on local disk) until it takes them again",
        _OPS,
    ),
    Variable(
        "RECORDS_SPOOL_MAX_MB",
        str(DEFAULT_SPOOL_MAX_MB),
        "the spool's size limit; beyond it the oldest spooled records are dropped",
        _OPS,
    ),
    Variable(
        "EVENT_STREAMS_MAX",
        "32",
        "live event streams (GET /calls/events, the page's live updates) open at once, at most",
        _OPS,
    ),
    Variable(
        "CALL_WEBHOOK_URL",
        "",
        "POST an end-of-call report (JSON, signed) here when each call ends; unset: off",
        _OPS,
    ),
    Variable(
        "CALL_WEBHOOK_SECRET",
        "",
        "signs the reports (X-Agent-Signature, like tool requests); unset: TOOLS_SIGNING_SECRET",
        _OPS,
        secret=True,
    ),
    Variable(
        "CALL_WEBHOOK_QUEUE_DIR",
        DEFAULT_WEBHOOK_DIR,
        "reports wait here (on local disk) until delivered, across restarts",
        _OPS,
    ),
    Variable(
        "CALL_WEBHOOK_QUEUE_MAX",
        "1000",
        "reports queued at most; beyond it the oldest is dropped",
        _OPS,
    ),
    Variable("OUTBOUND_CALLER_ID", "", "our Twilio number (E.164) outbound calls come from", _OPS),
    Variable(
        "OUTBOUND_ANSWER_TIMEOUT_S",
        "5",
        "outbound: the callee says nothing this long, the agent speaks anyway",
        _OPS,
    ),
    Variable(
        "AGENT_OUTBOUND_GREETING",
        DEFAULT_OUTBOUND_GREETING,
        "what the agent says first on an outbound call, once answered",
        _OPS,
    ),
    Variable(
        "TWILIO_API_BASE_URL",
        "",
        "send Twilio REST requests elsewhere than https://api.twilio.com (an egress proxy, a "
        "test stand-in)",
        _OPS,
    ),
    Variable("HOST", "0.0.0.0", "voice-agent serve: listening address (--host wins)", _CLI),
    Variable("PORT", "8080", "voice-agent serve: listening port (--port wins)", _CLI),
    Variable(
        "VOICE_AGENT_URL",
        DEFAULT_SERVER,
        "voice-agent dial and calls --api: the server to ask",
        _CLI,
    ),
)

#: Every environment variable the service reads, in documentation order.
VARIABLES: Final[tuple[Variable, ...]] = (
    *MODEL_VARIABLES,
    *PERSONA_VARIABLES,
    *PHONE_VARIABLES,
    *KNOWLEDGE_VARIABLES,
)
VARIABLE_NAMES: Final = frozenset(v.name for v in VARIABLES)

ENV_EXAMPLE_HEADER: Final = """\
# voice-agent configuration: copy to .env and uncomment what you change.
# Generated from telephony/settings.py (`voice-agent config env-example`); do not edit by hand.
# The process environment wins over .env. Every line shows the default."""


def env_example_text() -> str:
    """The text of ``.env.example``."""
    return env_example(VARIABLES, ENV_EXAMPLE_HEADER)


@dataclass(frozen=True)
class Settings:
    """Everything the service reads from its environment."""

    model: ModelAccess
    persona: Persona = field(default_factory=Persona)
    #: What the agent can search (``AGENT_KNOWLEDGE``); None: no knowledge tool.
    knowledge: KnowledgeSettings | None = None
    public_url: str | None = None
    twilio_auth_token: str | None = None
    twilio_account_sid: str | None = None
    transfer_number: str | None = None
    max_concurrent_calls: int = 100
    drain_timeout_s: float = 600.0
    stream_start_timeout_s: float = 5.0
    #: Serve a real model without TWILIO_AUTH_TOKEN (``ALLOW_UNSIGNED``).
    allow_unsigned: bool = False
    #: Media Streams accepted but not started, at most (None: derived from max_concurrent_calls).
    max_pending_streams: int | None = None
    max_pending_streams_per_client: int = 8
    #: Model sessions opened at the webhook, at most (None: derived; 0: pre-connect is off).
    max_preconnects: int | None = None
    preconnect_ttl_s: float = 8.0
    #: ``instance``: streams are sent to ``/twilio/media/<instance_id>`` (see STREAM_ROUTING).
    stream_routing: Literal["shared", "instance"] = "shared"
    http_header_timeout_s: float = 10.0
    http_body_timeout_s: float = 10.0
    #: Open connections at most (None: derived, then fitted to the open-file limit).
    max_connections: int | None = None
    forwarded_allow_ips: str = "127.0.0.1,::1"
    #: Bearer token of ``/metrics`` (None: open).
    metrics_token: str | None = None
    #: ``/metrics`` on its own listener on this port (None: on the main port).
    metrics_port: int | None = None
    max_call_s: float = 3600.0
    caller_silence_s: float = 30.0  # 0: off
    stall_timeout_s: float = 4.0  # 0: off
    reconnect_attempts: int = 4
    #: Caller audio is sent to the model in messages of this many ms (20, 40 or 60).
    model_audio_chunk_ms: int = 20
    #: ... and in messages of this many ms while the caller is silent (see call.uplink).
    model_audio_quiet_chunk_ms: int = 200
    #: ... and in messages of this many ms well into an utterance (see call.uplink).
    model_audio_speech_chunk_ms: int = 100
    unavailable_message: str = DEFAULT_UNAVAILABLE_MESSAGE
    busy_message: str = DEFAULT_BUSY_MESSAGE
    log_level: str = "INFO"
    log_format: Literal["json", "text", "auto"] = "auto"
    #: Record every call under this directory (``RECORD_CALLS``; None: no recording).
    record_calls: Path | None = None
    record_calls_max_s: float = 7200.0
    #: SQLAlchemy URL of the call-record database (None: records are off).
    database_url: str | None = DEFAULT_DATABASE_URL
    #: This process in the call records and the ``instances`` table (``INSTANCE_ID``).
    instance_id: str = "local"
    instance_heartbeat_s: float = DEFAULT_HEARTBEAT_S
    #: Refresh the records of calls in progress this often (0: only at start and end).
    records_snapshot_s: float = DEFAULT_SNAPSHOT_S
    records_spool_dir: Path = Path(DEFAULT_SPOOL_DIR)
    records_spool_max_bytes: int = DEFAULT_SPOOL_MAX_MB * 1024 * 1024
    #: Bearer token of the operator API (``/calls``); None: that API is disabled.
    api_token: str | None = None
    redact_phone_numbers: bool = False
    #: Live event streams of the operator page at most (``EVENT_STREAMS_MAX``).
    event_streams_max: int = 32
    #: Where end-of-call reports are POSTed (``CALL_WEBHOOK_URL``; None: off).
    call_webhook_url: str | None = None
    #: Signs them (``CALL_WEBHOOK_SECRET``, else ``TOOLS_SIGNING_SECRET``; None: unsigned).
    call_webhook_secret: str | None = None
    call_webhook_queue_dir: Path = Path(DEFAULT_WEBHOOK_DIR)
    call_webhook_queue_max: int = 1000
    #: Where the Twilio REST client sends requests (a local stand-in in tests).
    twilio_api_base_url: str | None = None
    outbound_caller_id: str | None = None
    outbound_answer_timeout_s: float = 5.0
    outbound_greeting: str = DEFAULT_OUTBOUND_GREETING
    #: The "working on it" sound starts after a blocking tool has run this long (None: off).
    tool_filler_after_s: float | None = 0.7
    warnings: tuple[str, ...] = ()

    @property
    def rest_enabled(self) -> bool:
        """Twilio REST actions (hang up, transfer) need both the account SID and the token."""
        return bool(self.twilio_account_sid and self.twilio_auth_token)

    @property
    def signatures_enforced(self) -> bool:
        return self.twilio_auth_token is not None

    @property
    def pending_streams_limit(self) -> int:
        if self.max_pending_streams is not None:
            return self.max_pending_streams
        return max(16, self.max_concurrent_calls // 4)

    @property
    def preconnect_limit(self) -> int:
        if self.max_preconnects is not None:
            return self.max_preconnects
        return max(4, self.max_concurrent_calls // 4)

    @property
    def connections_limit(self) -> int:
        """MAX_CONNECTIONS, or room for every call's WebSocket, as many webhooks, the
        pending streams and 64 more (health checks, the operator API)."""
        if self.max_connections is not None:
            return self.max_connections
        return 2 * self.max_concurrent_calls + self.pending_streams_limit + 64

    def stream_url(self, host: str | None = None) -> str:
        """The ``wss://`` URL Twilio must open, from PUBLIC_URL or else the request's host;
        with ``STREAM_ROUTING=instance`` it names this instance."""
        path = MEDIA_PATH
        if self.stream_routing == "instance":
            path += "/" + self.instance_id
        return self.public_url_for(path, host, websocket=True)

    def public_http_url(self, path: str, host: str | None = None) -> str:
        """``PUBLIC_URL`` + path (the URL Twilio calls and signs)."""
        return self.public_url_for(path, host)

    def public_url_for(
        self, target: str, host: str | None = None, *, websocket: bool = False
    ) -> str:
        """PUBLIC_URL's scheme, host and base path (else ``https://`` + the request's host)
        followed by ``target``, a path and query string as received: the URL Twilio called
        and signed. ``websocket``: the ``wss://`` form."""
        base = (self.public_url or f"https://{host or 'localhost'}").rstrip("/")
        if websocket:
            parts = urlsplit(base)
            base = f"wss://{parts.netloc}{parts.path}"
        return base + target

    @classmethod
    def from_env(
        cls, env: Mapping[str, str], *, sources: Mapping[str, str] | None = None
    ) -> Settings:
        """Read and validate the settings; raise ``ConfigError`` naming the first bad variable.

        ``sources``: where variables came from when not the process environment (``.env``),
        named in error messages.
        """
        return _read(EnvReader(env, VARIABLES, sources=sources))


def _e164(env: EnvReader, name: str) -> str | None:
    value = env.raw(name)
    if value and not _E164.match(value):
        raise env.error(name, f"expected E.164 like +14155550100, got {value!r}")
    return value


def _public_url(env: EnvReader) -> str | None:
    public_url = env.raw("PUBLIC_URL")
    if not public_url:
        return None
    parts = urlsplit(public_url)
    if parts.scheme not in {"https", "http"} or not parts.netloc:
        raise env.error("PUBLIC_URL", f"expected https://host[/path], got {public_url!r}")
    if parts.query or parts.fragment:
        raise env.error("PUBLIC_URL", "must not carry a query string or fragment")
    if parts.scheme == "http":
        env.warnings.append("PUBLIC_URL uses http://; Twilio needs https/wss in production")
    return public_url.rstrip("/")


def _record_calls(env: EnvReader) -> Path | None:
    raw = env.raw("RECORD_CALLS")
    if raw is None:
        return None
    path = Path(raw).expanduser()
    # Checked now so that a typo fails at startup, not as a logged error after every call.
    if path.exists() and not path.is_dir():
        raise env.error("RECORD_CALLS", f"{path} exists and is not a directory")
    if path.is_dir() and not os.access(path, os.W_OK | os.X_OK):
        raise env.error("RECORD_CALLS", f"{path} is not writable")
    return path


def _filler_after(env: EnvReader) -> float | None:
    raw = env.raw("TOOLS_FILLER_AFTER_MS")
    if raw is not None and raw.lower() in ("off", "false", "no", "none"):
        return None
    return env.int_between("TOOLS_FILLER_AFTER_MS", 700, 0, 60_000, "milliseconds or off") / 1000


def _database_url(env: EnvReader) -> str | None:
    raw = env.raw("DATABASE_URL") or DEFAULT_DATABASE_URL
    if raw.lower() == "off":
        env.warnings.append("DATABASE_URL=off: calls leave no record")
        return None
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    try:
        make_url(raw)
    except ArgumentError:
        raise env.error(
            "DATABASE_URL",
            "expected an SQLAlchemy URL like sqlite:///calls.db or "
            "postgresql+psycopg://user:pass@host/db",
        ) from None
    return raw


@functools.cache
def default_instance_id() -> str:
    """The host name's first label (a pod's name in Kubernetes), made a valid id. A sandbox
    that names every host ``localhost`` (Cloud Run) gets a random suffix, once per process:
    instances sharing a database must never share an id."""
    label = socket.gethostname().split(".")[0]
    label = re.sub(r"[^A-Za-z0-9-]", "-", label).strip("-")[:63].rstrip("-")
    if not label or label.lower() in {"localhost", "localhost-localdomain"}:
        return f"{label or 'instance'}-{secrets.token_hex(4)}"
    return label


def _instance_id(env: EnvReader) -> str:
    raw = env.raw("INSTANCE_ID")
    if raw is None:
        return default_instance_id()
    if not _INSTANCE_ID.match(raw):
        raise env.error(
            "INSTANCE_ID",
            "expected letters, digits and '-' (not first), at most 63 characters, like "
            f"voice-agent-7d9f-x2k4; got {raw[:80]!r}",
        )
    return raw


def _spool_dir(env: EnvReader) -> Path:
    path = Path(env.raw("RECORDS_SPOOL_DIR") or DEFAULT_SPOOL_DIR).expanduser()
    if path.exists() and not path.is_dir():
        raise env.error("RECORDS_SPOOL_DIR", f"{path} exists and is not a directory")
    return path


def _api_token(env: EnvReader) -> str | None:
    token = env.raw("API_TOKEN")
    if token is not None and len(token) < MIN_API_TOKEN_CHARS:
        raise env.error(
            "API_TOKEN",
            f"must be at least {MIN_API_TOKEN_CHARS} characters (it guards "
            "call transcripts and placing calls)",
        )
    return token


def _webhook_url(env: EnvReader) -> str | None:
    url = env.raw("CALL_WEBHOOK_URL")
    if not url:
        return None
    parts = urlsplit(url)
    if parts.scheme not in {"https", "http"} or not parts.netloc:
        raise env.error("CALL_WEBHOOK_URL", f"expected https://host/path, got {url!r}")
    return url


def _webhook_secret(env: EnvReader, url: str | None) -> str | None:
    secret = env.raw("CALL_WEBHOOK_SECRET") or env.raw("TOOLS_SIGNING_SECRET")
    if url and not secret:
        env.warnings.append(
            "CALL_WEBHOOK_URL is set without CALL_WEBHOOK_SECRET (or TOOLS_SIGNING_SECRET): "
            "end-of-call reports are sent unsigned"
        )
    return secret


def _webhook_dir(env: EnvReader) -> Path:
    path = Path(env.raw("CALL_WEBHOOK_QUEUE_DIR") or DEFAULT_WEBHOOK_DIR).expanduser()
    if path.exists() and not path.is_dir():
        raise env.error("CALL_WEBHOOK_QUEUE_DIR", f"{path} exists and is not a directory")
    return path


def _api_base(env: EnvReader) -> str | None:
    api_base = env.raw("TWILIO_API_BASE_URL")
    if not api_base:
        return None
    parts = urlsplit(api_base)
    if parts.scheme not in {"https", "http"} or not parts.netloc or parts.path.strip("/"):
        raise env.error("TWILIO_API_BASE_URL", f"expected https://host[:port], got {api_base!r}")
    env.warnings.append(f"TWILIO_API_BASE_URL={api_base}: Twilio REST goes there")
    return api_base.rstrip("/")


def _optional_count(env: EnvReader, name: str, lower: int, upper: int) -> int | None:
    """A whole number, or None when unset (the default is derived from other settings)."""
    if env.raw(name) is None:
        return None
    return env.int_between(name, lower, lower, upper, "a whole number")


def _block_ms(env: EnvReader, name: str, default: int, chunk_ms: int) -> int:
    """A message size for caller audio: whole Twilio frames, from ``chunk_ms`` to 200 ms."""
    value = env.int_between(name, max(default, chunk_ms), chunk_ms, 200, "milliseconds")
    if value % 20:
        raise env.error(name, f"must be a multiple of 20, got {value}")
    return value


def _metrics_token(env: EnvReader) -> str | None:
    token = env.raw("METRICS_TOKEN")
    if token is not None and len(token) < MIN_API_TOKEN_CHARS:
        raise env.error("METRICS_TOKEN", f"must be at least {MIN_API_TOKEN_CHARS} characters")
    return token


def _read(env: EnvReader) -> Settings:
    public_url = _public_url(env)
    token = env.raw("TWILIO_AUTH_TOKEN")
    if token and not public_url:
        raise env.error(
            "PUBLIC_URL",
            "required when TWILIO_AUTH_TOKEN is set: signatures are checked against it",
        )
    if not token:
        env.warnings.append(
            "TWILIO_AUTH_TOKEN is not set: requests are NOT checked for Twilio signatures; "
            "anyone who finds this URL can place calls into the agent"
        )
    sid = env.raw("TWILIO_ACCOUNT_SID")
    if sid and not (sid.startswith("AC") and len(sid) == 34):
        raise env.error("TWILIO_ACCOUNT_SID", "expected AC followed by 32 characters")
    transfer = _e164(env, "AGENT_TRANSFER_NUMBER")
    log_format = env.choice("LOG_FORMAT", "auto", ("json", "text", "auto"))
    log_level = env.choice("LOG_LEVEL", "INFO", ("DEBUG", "INFO", "WARNING", "ERROR"))
    chunk_ms = int(env.choice("MODEL_AUDIO_CHUNK_MS", "20", ("20", "40", "60")))
    caller_id = _e164(env, "OUTBOUND_CALLER_ID")
    api_base = _api_base(env)
    webhook_url = _webhook_url(env)
    model = read_model_access(env)
    knowledge = read_knowledge(env, backend=model.backend)
    persona = read_persona(
        env, transfer_available=bool(transfer), knowledge_available=knowledge is not None
    )
    return Settings(
        model=model,
        persona=persona,
        knowledge=knowledge,
        public_url=public_url,
        twilio_auth_token=token,
        twilio_account_sid=sid,
        transfer_number=transfer,
        max_concurrent_calls=env.positive_int("MAX_CONCURRENT_CALLS", 100, 100_000),
        drain_timeout_s=env.seconds("DRAIN_TIMEOUT_S", 600.0),
        stream_start_timeout_s=env.seconds("STREAM_START_TIMEOUT_S", 5.0, 300.0),
        allow_unsigned=env.flag("ALLOW_UNSIGNED", False),
        max_pending_streams=_optional_count(env, "MAX_PENDING_STREAMS", 1, 100_000),
        max_pending_streams_per_client=env.positive_int(
            "MAX_PENDING_STREAMS_PER_CLIENT", 8, 100_000
        ),
        max_preconnects=_optional_count(env, "MAX_PRECONNECTS", 0, 100_000),
        preconnect_ttl_s=env.seconds("PRECONNECT_TTL_S", 8.0, 300.0),
        stream_routing=env.choice(  # type: ignore[arg-type]
            "STREAM_ROUTING", "shared", ("shared", "instance")
        ),
        http_header_timeout_s=env.seconds("HTTP_HEADER_TIMEOUT_S", 10.0, 300.0),
        http_body_timeout_s=env.seconds("HTTP_BODY_TIMEOUT_S", 10.0, 300.0),
        max_connections=_optional_count(env, "MAX_CONNECTIONS", 8, 1_000_000),
        forwarded_allow_ips=env.raw("FORWARDED_ALLOW_IPS") or "127.0.0.1,::1",
        metrics_token=_metrics_token(env),
        metrics_port=_optional_count(env, "METRICS_PORT", 0, 65_535),
        max_call_s=env.seconds("MAX_CALL_SECONDS", 3600.0),
        caller_silence_s=env.seconds_or_off("CALLER_SILENCE_TIMEOUT_S", 30.0),
        stall_timeout_s=env.seconds_or_off("MODEL_STALL_TIMEOUT_S", 4.0),
        reconnect_attempts=env.positive_int("MODEL_RECONNECT_ATTEMPTS", 4, 20),
        model_audio_chunk_ms=chunk_ms,
        model_audio_quiet_chunk_ms=_block_ms(env, "MODEL_AUDIO_QUIET_CHUNK_MS", 200, chunk_ms),
        model_audio_speech_chunk_ms=_block_ms(env, "MODEL_AUDIO_SPEECH_CHUNK_MS", 100, chunk_ms),
        unavailable_message=env.raw("AGENT_UNAVAILABLE_MESSAGE") or DEFAULT_UNAVAILABLE_MESSAGE,
        busy_message=env.raw("AGENT_BUSY_MESSAGE") or DEFAULT_BUSY_MESSAGE,
        log_level=log_level,
        log_format=log_format,  # type: ignore[arg-type]
        record_calls=_record_calls(env),
        record_calls_max_s=env.seconds("RECORD_CALLS_MAX_S", 7200.0),
        database_url=_database_url(env),
        instance_id=_instance_id(env),
        instance_heartbeat_s=env.seconds("INSTANCE_HEARTBEAT_S", DEFAULT_HEARTBEAT_S, 600.0),
        records_snapshot_s=env.seconds_or_off("RECORDS_SNAPSHOT_S", DEFAULT_SNAPSHOT_S, 3600.0),
        records_spool_dir=_spool_dir(env),
        records_spool_max_bytes=env.positive_int(
            "RECORDS_SPOOL_MAX_MB", DEFAULT_SPOOL_MAX_MB, 1_000_000
        )
        * 1024
        * 1024,
        api_token=_api_token(env),
        redact_phone_numbers=env.flag("REDACT_PHONE_NUMBERS", False),
        event_streams_max=env.positive_int("EVENT_STREAMS_MAX", 32, 10_000),
        call_webhook_url=webhook_url,
        call_webhook_secret=_webhook_secret(env, webhook_url),
        call_webhook_queue_dir=_webhook_dir(env),
        call_webhook_queue_max=env.positive_int("CALL_WEBHOOK_QUEUE_MAX", 1000, 1_000_000),
        twilio_api_base_url=api_base,
        outbound_caller_id=caller_id,
        outbound_answer_timeout_s=env.seconds("OUTBOUND_ANSWER_TIMEOUT_S", 5.0, 60.0),
        outbound_greeting=env.raw("AGENT_OUTBOUND_GREETING") or DEFAULT_OUTBOUND_GREETING,
        tool_filler_after_s=_filler_after(env),
        warnings=tuple(env.warnings),
    )
