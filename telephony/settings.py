"""The service's settings: the model side's (``agent.config``) plus the phone side's.

Read once at startup from the environment (and ``.env``, see ``telephony.dotenv``) by
``Settings.from_env``; a bad value raises ``ConfigError`` naming the variable. ``VARIABLES``
is the one list of every variable the service reads, in documentation order: ``.env.example``
is generated from it, and the tests check the README against it.
"""

from __future__ import annotations

import os
import re
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
        "10",
        "a Media Stream that sends no start within this is closed",
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
    stream_start_timeout_s: float = 10.0
    max_call_s: float = 3600.0
    caller_silence_s: float = 30.0  # 0: off
    stall_timeout_s: float = 4.0  # 0: off
    reconnect_attempts: int = 4
    unavailable_message: str = DEFAULT_UNAVAILABLE_MESSAGE
    busy_message: str = DEFAULT_BUSY_MESSAGE
    log_level: str = "INFO"
    log_format: Literal["json", "text", "auto"] = "auto"
    #: Record every call under this directory (``RECORD_CALLS``; None: no recording).
    record_calls: Path | None = None
    record_calls_max_s: float = 7200.0
    #: SQLAlchemy URL of the call-record database (None: records are off).
    database_url: str | None = DEFAULT_DATABASE_URL
    #: Bearer token of the operator API (``/calls``); None: that API is disabled.
    api_token: str | None = None
    redact_phone_numbers: bool = False
    #: Where the Twilio REST client sends requests (a local stand-in in tests).
    twilio_api_base_url: str | None = None
    outbound_caller_id: str | None = None
    outbound_answer_timeout_s: float = 5.0
    outbound_greeting: str = DEFAULT_OUTBOUND_GREETING
    warnings: tuple[str, ...] = ()

    @property
    def rest_enabled(self) -> bool:
        """Twilio REST actions (hang up, transfer) need both the account SID and the token."""
        return bool(self.twilio_account_sid and self.twilio_auth_token)

    @property
    def signatures_enforced(self) -> bool:
        return self.twilio_auth_token is not None

    def stream_url(self, host: str | None = None) -> str:
        """The ``wss://`` URL Twilio must open, from PUBLIC_URL or else the request's host."""
        base = self.public_url or f"https://{host or 'localhost'}"
        parts = urlsplit(base)
        path = parts.path.rstrip("/")
        return f"wss://{parts.netloc}{path}/twilio/media"

    def public_http_url(self, path: str, host: str | None = None) -> str:
        """``PUBLIC_URL`` + path (the URL Twilio calls and signs)."""
        base = (self.public_url or f"https://{host or 'localhost'}").rstrip("/")
        return base + path

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


def _api_token(env: EnvReader) -> str | None:
    token = env.raw("API_TOKEN")
    if token is not None and len(token) < MIN_API_TOKEN_CHARS:
        raise env.error(
            "API_TOKEN",
            f"must be at least {MIN_API_TOKEN_CHARS} characters (it guards "
            "call transcripts and placing calls)",
        )
    return token


def _api_base(env: EnvReader) -> str | None:
    api_base = env.raw("TWILIO_API_BASE_URL")
    if not api_base:
        return None
    parts = urlsplit(api_base)
    if parts.scheme not in {"https", "http"} or not parts.netloc or parts.path.strip("/"):
        raise env.error("TWILIO_API_BASE_URL", f"expected https://host[:port], got {api_base!r}")
    env.warnings.append(f"TWILIO_API_BASE_URL={api_base}: Twilio REST goes there")
    return api_base.rstrip("/")


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
    caller_id = _e164(env, "OUTBOUND_CALLER_ID")
    api_base = _api_base(env)
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
        stream_start_timeout_s=env.seconds("STREAM_START_TIMEOUT_S", 10.0, 300.0),
        max_call_s=env.seconds("MAX_CALL_SECONDS", 3600.0),
        caller_silence_s=env.seconds_or_off("CALLER_SILENCE_TIMEOUT_S", 30.0),
        stall_timeout_s=env.seconds_or_off("MODEL_STALL_TIMEOUT_S", 4.0),
        reconnect_attempts=env.positive_int("MODEL_RECONNECT_ATTEMPTS", 4, 20),
        unavailable_message=env.raw("AGENT_UNAVAILABLE_MESSAGE") or DEFAULT_UNAVAILABLE_MESSAGE,
        busy_message=env.raw("AGENT_BUSY_MESSAGE") or DEFAULT_BUSY_MESSAGE,
        log_level=log_level,
        log_format=log_format,  # type: ignore[arg-type]
        record_calls=_record_calls(env),
        record_calls_max_s=env.seconds("RECORD_CALLS_MAX_S", 7200.0),
        database_url=_database_url(env),
        api_token=_api_token(env),
        redact_phone_numbers=env.flag("REDACT_PHONE_NUMBERS", False),
        twilio_api_base_url=api_base,
        outbound_caller_id=caller_id,
        outbound_answer_timeout_s=env.seconds("OUTBOUND_ANSWER_TIMEOUT_S", 5.0, 60.0),
        outbound_greeting=env.raw("AGENT_OUTBOUND_GREETING") or DEFAULT_OUTBOUND_GREETING,
        warnings=tuple(env.warnings),
    )
