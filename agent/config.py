"""Settings read from the environment, validated once at startup.

Every variable is documented in the README's configuration table. A bad value stops the
process with one message that names the variable (``ConfigError``), instead of a stack trace
at the first call. The SDK's own variables (``GOOGLE_GEMINI_BASE_URL``, ``SSL_CERT_FILE``,
``GOOGLE_GENAI_USE_VERTEXAI`` …) are left for the SDK to read; we only look at them to decide
whether real model credentials exist.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final, Literal, TypeVar
from urllib.parse import urlsplit

#: The GA Live audio model of the Gemini API (late 2026).
DEFAULT_MODEL: Final = "gemini-3.8-live"
#: The Live audio model on Vertex AI.
DEFAULT_VERTEX_MODEL: Final = "gemini-live-2.5-flash-native-audio"

DEFAULT_INSTRUCTIONS: Final = (
    "You are a friendly, concise voice assistant answering a phone call. Speak naturally and "
    "briefly, one or two sentences at a time, because the caller is listening on a phone. "
    "If the caller says goodbye or asks to hang up, say a short goodbye and then call the "
    "end_call tool."
)
DEFAULT_GREETING: Final = "Hello! Thanks for calling. How can I help you today?"
DEFAULT_UNAVAILABLE_MESSAGE: Final = (
    "Sorry, our assistant is unavailable right now. Please try again later. Goodbye."
)
DEFAULT_BUSY_MESSAGE: Final = (
    "Sorry, all of our lines are busy right now. Please call again in a few minutes. Goodbye."
)

#: Prebuilt Live API voices known at release. Unknown names are passed through with a warning:
#: Google adds voices, and refusing a new one would be worse than a typo reaching the API.
KNOWN_VOICES: Final = frozenset(
    [
        "Achernar",
        "Achird",
        "Algenib",
        "Algieba",
        "Alnilam",
        "Aoede",
        "Autonoe",
        "Callirrhoe",
        "Charon",
        "Despina",
        "Enceladus",
        "Erinome",
        "Fenrir",
        "Gacrux",
        "Iapetus",
        "Kore",
        "Laomedeia",
        "Leda",
        "Orus",
        "Puck",
        "Pulcherrima",
        "Rasalgethi",
        "Sadachbia",
        "Sadaltager",
        "Schedar",
        "Sulafat",
        "Umbriel",
        "Vindemiatrix",
        "Zephyr",
        "Zubenelgenubi",
    ]
)

BUILTIN_TOOLS: Final = ("end_call", "transfer_call")

#: Every environment variable that changes what the service does: its own, and the SDK's that
#: decide which model endpoint it reaches. Tests and benchmarks clear them all to be hermetic;
#: a test checks that each one the settings read is listed here and in the README.
SERVICE_VARIABLES: Final = (
    # model access (some read by the google-genai SDK itself)
    "GEMINI_API_KEY",
    "GOOGLE_API_KEY",
    "GOOGLE_GENAI_USE_VERTEXAI",
    "GOOGLE_CLOUD_PROJECT",
    "GOOGLE_CLOUD_LOCATION",
    "GOOGLE_GEMINI_BASE_URL",
    "SSL_CERT_FILE",
    "GEMINI_MODEL",
    "LIVE_SIMULATOR",
    "MODEL_SETUP_TIMEOUT_S",
    "MODEL_PING_INTERVAL_S",
    "MODEL_PING_TIMEOUT_S",
    "MODEL_FAST_PATH",
    "MODEL_RECONNECT_ATTEMPTS",
    "MODEL_STALL_TIMEOUT_S",
    # persona
    "AGENT_INSTRUCTIONS",
    "AGENT_INSTRUCTIONS_FILE",
    "AGENT_VOICE",
    "AGENT_LANGUAGE",
    "AGENT_GREETING",
    "AGENT_TOOLS",
    "AGENT_TRANSFER_NUMBER",
    "AGENT_VAD_START_SENSITIVITY",
    "AGENT_VAD_END_SENSITIVITY",
    "AGENT_VAD_SILENCE_MS",
    "AGENT_VAD_PREFIX_PADDING_MS",
    "AGENT_UNAVAILABLE_MESSAGE",
    "AGENT_BUSY_MESSAGE",
    # Twilio and the server
    "PUBLIC_URL",
    "TWILIO_AUTH_TOKEN",
    "TWILIO_ACCOUNT_SID",
    "MAX_CONCURRENT_CALLS",
    "DRAIN_TIMEOUT_S",
    "STREAM_START_TIMEOUT_S",
    "MAX_CALL_SECONDS",
    "CALLER_SILENCE_TIMEOUT_S",
    "RECORD_CALLS",
    "RECORD_CALLS_MAX_S",
    "LOG_LEVEL",
    "LOG_FORMAT",
    # call records, the operator API, outbound calls
    "DATABASE_URL",
    "API_TOKEN",
    "REDACT_PHONE_NUMBERS",
    "TWILIO_API_BASE_URL",
    "OUTBOUND_CALLER_ID",
    "OUTBOUND_ANSWER_TIMEOUT_S",
    "AGENT_OUTBOUND_GREETING",
)

#: Call records go here unless DATABASE_URL says otherwise (relative to the working directory).
DEFAULT_DATABASE_URL: Final = "sqlite:///calls.db"
DEFAULT_OUTBOUND_GREETING: Final = (
    "Hello! This is an automated assistant calling. Is now a good time to talk?"
)
#: API_TOKEN must be at least this long: it guards call transcripts and placing calls.
MIN_API_TOKEN_CHARS: Final = 16

_BCP47 = re.compile(r"^[A-Za-z]{2,3}(-[A-Za-z]{4})?(-([A-Za-z]{2}|[0-9]{3}))?$")
_E164 = re.compile(r"^\+[1-9][0-9]{6,14}$")
_TRUE = frozenset({"1", "true", "yes", "on"})
_FALSE = frozenset({"0", "false", "no", "off", ""})

Sensitivity = Literal["high", "low"]
T = TypeVar("T")


class ConfigError(ValueError):
    """A configuration variable has an invalid value. The message names the variable."""

    def __init__(self, variable: str, problem: str) -> None:
        super().__init__(f"configuration error: {variable}: {problem}")
        self.variable = variable


@dataclass(frozen=True)
class VadSettings:
    """The Live API's automatic activity detection, tuned for phone audio.

    Defaults: start sensitivity *low* so line noise and the agent's own echo on speakerphones
    don't cut the agent off; end sensitivity *high* with 500 ms of silence so the agent answers
    promptly once the caller stops; 100 ms of prefix padding so a turn's first syllable counts.
    """

    start_sensitivity: Sensitivity = "low"
    end_sensitivity: Sensitivity = "high"
    silence_duration_ms: int = 500
    prefix_padding_ms: int = 100


@dataclass(frozen=True)
class Persona:
    """Who the agent is: everything the model is told at session setup."""

    instructions: str = DEFAULT_INSTRUCTIONS
    voice: str = "Puck"
    language: str = "en-US"
    greeting: str | None = DEFAULT_GREETING
    tools: tuple[str, ...] = ("end_call",)
    vad: VadSettings = field(default_factory=VadSettings)


@dataclass(frozen=True)
class ModelAccess:
    """How to reach the Live API.

    ``backend`` is ``"gemini"`` (API key), ``"vertex"`` (Google Cloud credentials) or
    ``"simulator"`` (the embedded local Live API simulator: not a real model).
    """

    backend: Literal["gemini", "vertex", "simulator"]
    model: str
    api_key: str | None = None
    setup_timeout_s: float = 10.0
    #: websockets keepalive towards the model. Gemini's pongs have been measured at 8-30 s,
    #: so the websockets default (20 s timeout) kills healthy sessions; we ping every 20 s
    #: and allow 60 s for the answer.
    ping_interval_s: float = 20.0
    ping_timeout_s: float = 60.0
    #: Read and write the per-frame audio messages as raw JSON on the SDK's socket instead of
    #: through its pydantic models (same wire format; ~30-40 µs less CPU per message).
    fast_path: bool = True


@dataclass(frozen=True)
class Settings:
    """Everything the service reads from its environment."""

    model: ModelAccess
    persona: Persona = field(default_factory=Persona)
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
    def from_env(cls, env: Mapping[str, str]) -> Settings:
        """Read and validate the settings; raise ``ConfigError`` naming the first bad variable."""
        return _Reader(env).settings()


class _Reader:
    def __init__(self, env: Mapping[str, str]) -> None:
        self.env = env
        self.warnings: list[str] = []

    def raw(self, name: str) -> str | None:
        value = self.env.get(name)
        if value is None:
            return None
        value = value.strip()
        return value if value else None

    def parse(self, name: str, default: T, convert: Callable[[str], T], what: str) -> T:
        raw = self.raw(name)
        if raw is None:
            return default
        try:
            return convert(raw)
        except ValueError:
            raise ConfigError(name, f"expected {what}, got {raw!r}") from None

    def positive_int(self, name: str, default: int, upper: int = 1_000_000) -> int:
        value = self.parse(name, default, int, "a whole number")
        if not 1 <= value <= upper:
            raise ConfigError(name, f"must be between 1 and {upper}, got {value}")
        return value

    def seconds(self, name: str, default: float, upper: float = 86_400.0) -> float:
        value = self.parse(name, default, float, "a number of seconds")
        if not 0 < value <= upper:
            raise ConfigError(name, f"must be > 0 and <= {upper:g} seconds, got {value:g}")
        return value

    def seconds_or_off(self, name: str, default: float) -> float:
        """Seconds, where 0 turns the feature off."""
        value = self.parse(name, default, float, "a number of seconds (0: off)")
        if not 0 <= value <= 86_400:
            raise ConfigError(name, f"must be between 0 and 86400 seconds, got {value:g}")
        return value

    def flag(self, name: str, default: bool) -> bool:
        raw = self.env.get(name)
        if raw is None:
            return default
        low = raw.strip().lower()
        if low in _TRUE:
            return True
        if low in _FALSE:
            return False
        raise ConfigError(name, f"expected true/false, got {raw!r}")

    def sensitivity(self, name: str, default: Sensitivity) -> Sensitivity:
        raw = self.raw(name)
        if raw is None:
            return default
        low = raw.lower()
        if low == "high":
            return "high"
        if low == "low":
            return "low"
        raise ConfigError(name, f"expected 'high' or 'low', got {raw!r}")

    def model_access(self) -> ModelAccess:
        api_key = self.raw("GEMINI_API_KEY") or self.raw("GOOGLE_API_KEY")
        vertex = self.flag("GOOGLE_GENAI_USE_VERTEXAI", False)
        mode = (self.raw("LIVE_SIMULATOR") or "auto").lower()
        if mode not in {"auto", "on", "off"}:
            raise ConfigError("LIVE_SIMULATOR", f"expected auto, on or off, got {mode!r}")
        backend: Literal["gemini", "vertex", "simulator"]
        if mode == "on":
            backend = "simulator"
        elif vertex:
            backend = "vertex"
            if not self.raw("GOOGLE_CLOUD_PROJECT") and not api_key:
                raise ConfigError(
                    "GOOGLE_CLOUD_PROJECT",
                    "required with GOOGLE_GENAI_USE_VERTEXAI=true (or set an API key)",
                )
        elif api_key:
            backend = "gemini"
        elif mode == "off":
            raise ConfigError(
                "GEMINI_API_KEY",
                "no model credentials (set GEMINI_API_KEY, or GOOGLE_GENAI_USE_VERTEXAI with "
                "GOOGLE_CLOUD_PROJECT/GOOGLE_CLOUD_LOCATION) and LIVE_SIMULATOR=off",
            )
        else:
            backend = "simulator"
        default_model = DEFAULT_VERTEX_MODEL if backend == "vertex" else DEFAULT_MODEL
        model = self.raw("GEMINI_MODEL") or default_model
        if any(c.isspace() for c in model):
            raise ConfigError("GEMINI_MODEL", f"not a model name: {model!r}")
        return ModelAccess(
            backend=backend,
            model=model,
            api_key=api_key,
            setup_timeout_s=self.seconds("MODEL_SETUP_TIMEOUT_S", 10.0, 120.0),
            ping_interval_s=self.seconds("MODEL_PING_INTERVAL_S", 20.0, 600.0),
            ping_timeout_s=self.seconds("MODEL_PING_TIMEOUT_S", 60.0, 600.0),
            fast_path=self.flag("MODEL_FAST_PATH", True),
        )

    def persona(self, transfer_number: str | None) -> Persona:
        text = self.raw("AGENT_INSTRUCTIONS")
        path = self.raw("AGENT_INSTRUCTIONS_FILE")
        if text and path:
            raise ConfigError(
                "AGENT_INSTRUCTIONS_FILE", "set either AGENT_INSTRUCTIONS or this, not both"
            )
        if path:
            try:
                text = Path(path).read_text(encoding="utf-8").strip()
            except OSError as exc:
                raise ConfigError("AGENT_INSTRUCTIONS_FILE", f"cannot read {path}: {exc}") from None
            if not text:
                raise ConfigError("AGENT_INSTRUCTIONS_FILE", f"{path} is empty")
        voice = self.raw("AGENT_VOICE") or "Puck"
        if not voice.isalpha():
            raise ConfigError("AGENT_VOICE", f"not a prebuilt voice name: {voice!r}")
        if voice not in KNOWN_VOICES:
            self.warnings.append(f"AGENT_VOICE={voice!r} is not a voice we know; passing it on")
        language = self.raw("AGENT_LANGUAGE") or "en-US"
        if not _BCP47.match(language):
            raise ConfigError(
                "AGENT_LANGUAGE", f"expected a BCP-47 code like en-US, got {language!r}"
            )
        # An explicitly empty AGENT_GREETING means "let the caller speak first".
        greeting = self.env.get("AGENT_GREETING", DEFAULT_GREETING).strip() or None
        if greeting and len(greeting) > 1000:
            raise ConfigError("AGENT_GREETING", "longer than 1000 characters")
        tools_raw = self.raw("AGENT_TOOLS")
        tools = (
            tuple(t.strip() for t in tools_raw.split(",") if t.strip())
            if tools_raw is not None
            else ("end_call", "transfer_call")
        )
        for tool in tools:
            if tool not in BUILTIN_TOOLS:
                raise ConfigError(
                    "AGENT_TOOLS", f"unknown tool {tool!r} (known: {', '.join(BUILTIN_TOOLS)})"
                )
        if "transfer_call" in tools and not transfer_number:
            # The transfer tool exists only when there is somewhere to transfer to.
            tools = tuple(t for t in tools if t != "transfer_call")
        vad = VadSettings(
            start_sensitivity=self.sensitivity("AGENT_VAD_START_SENSITIVITY", "low"),
            end_sensitivity=self.sensitivity("AGENT_VAD_END_SENSITIVITY", "high"),
            silence_duration_ms=self.positive_int("AGENT_VAD_SILENCE_MS", 500, 10_000),
            prefix_padding_ms=self.parse("AGENT_VAD_PREFIX_PADDING_MS", 100, int, "milliseconds"),
        )
        if not 0 <= vad.prefix_padding_ms <= 5_000:
            raise ConfigError("AGENT_VAD_PREFIX_PADDING_MS", "must be between 0 and 5000")
        return Persona(
            instructions=text or DEFAULT_INSTRUCTIONS,
            voice=voice,
            language=language,
            greeting=greeting,
            tools=tools,
            vad=vad,
        )

    def record_calls(self) -> Path | None:
        raw = self.raw("RECORD_CALLS")
        if raw is None:
            return None
        path = Path(raw).expanduser()
        # Checked now so that a typo fails at startup, not as a logged error after every call.
        if path.exists() and not path.is_dir():
            raise ConfigError("RECORD_CALLS", f"{path} exists and is not a directory")
        if path.is_dir() and not os.access(path, os.W_OK | os.X_OK):
            raise ConfigError("RECORD_CALLS", f"{path} is not writable")
        return path

    def database_url(self) -> str | None:
        raw = self.raw("DATABASE_URL") or DEFAULT_DATABASE_URL
        if raw.lower() == "off":
            self.warnings.append("DATABASE_URL=off: calls leave no record")
            return None
        from sqlalchemy.engine import make_url
        from sqlalchemy.exc import ArgumentError

        try:
            make_url(raw)
        except ArgumentError:
            raise ConfigError(
                "DATABASE_URL",
                "expected an SQLAlchemy URL like sqlite:///calls.db or "
                "postgresql+psycopg://user:pass@host/db",
            ) from None
        return raw

    def api_token(self) -> str | None:
        token = self.raw("API_TOKEN")
        if token is not None and len(token) < MIN_API_TOKEN_CHARS:
            raise ConfigError(
                "API_TOKEN",
                f"must be at least {MIN_API_TOKEN_CHARS} characters (it guards "
                "call transcripts and placing calls)",
            )
        return token

    def settings(self) -> Settings:
        public_url = self.raw("PUBLIC_URL")
        if public_url:
            parts = urlsplit(public_url)
            if parts.scheme not in {"https", "http"} or not parts.netloc:
                raise ConfigError("PUBLIC_URL", f"expected https://host[/path], got {public_url!r}")
            if parts.query or parts.fragment:
                raise ConfigError("PUBLIC_URL", "must not carry a query string or fragment")
            if parts.scheme == "http":
                self.warnings.append(
                    "PUBLIC_URL uses http://; Twilio needs https/wss in production"
                )
        token = self.raw("TWILIO_AUTH_TOKEN")
        if token and not public_url:
            raise ConfigError(
                "PUBLIC_URL",
                "required when TWILIO_AUTH_TOKEN is set: signatures are checked against it",
            )
        if not token:
            self.warnings.append(
                "TWILIO_AUTH_TOKEN is not set: requests are NOT checked for Twilio signatures; "
                "anyone who finds this URL can place calls into the agent"
            )
        sid = self.raw("TWILIO_ACCOUNT_SID")
        if sid and not (sid.startswith("AC") and len(sid) == 34):
            raise ConfigError("TWILIO_ACCOUNT_SID", "expected AC followed by 32 characters")
        transfer = self.raw("AGENT_TRANSFER_NUMBER")
        if transfer and not _E164.match(transfer):
            raise ConfigError(
                "AGENT_TRANSFER_NUMBER", f"expected E.164 like +14155550100, got {transfer!r}"
            )
        log_format = (self.raw("LOG_FORMAT") or "auto").lower()
        if log_format not in {"json", "text", "auto"}:
            raise ConfigError("LOG_FORMAT", f"expected json, text or auto, got {log_format!r}")
        log_level = (self.raw("LOG_LEVEL") or "INFO").upper()
        if log_level not in {"DEBUG", "INFO", "WARNING", "ERROR"}:
            raise ConfigError(
                "LOG_LEVEL", f"expected DEBUG, INFO, WARNING or ERROR, got {log_level!r}"
            )
        caller_id = self.raw("OUTBOUND_CALLER_ID")
        if caller_id and not _E164.match(caller_id):
            raise ConfigError(
                "OUTBOUND_CALLER_ID", f"expected E.164 like +14155550100, got {caller_id!r}"
            )
        api_base = self.raw("TWILIO_API_BASE_URL")
        if api_base:
            parts = urlsplit(api_base)
            if parts.scheme not in {"https", "http"} or not parts.netloc or parts.path.strip("/"):
                raise ConfigError(
                    "TWILIO_API_BASE_URL", f"expected https://host[:port], got {api_base!r}"
                )
            self.warnings.append(f"TWILIO_API_BASE_URL={api_base}: Twilio REST goes there")
        model = self.model_access()
        persona = self.persona(transfer)
        return Settings(
            model=model,
            persona=persona,
            public_url=public_url.rstrip("/") if public_url else None,
            twilio_auth_token=token,
            twilio_account_sid=sid,
            transfer_number=transfer,
            max_concurrent_calls=self.positive_int("MAX_CONCURRENT_CALLS", 100, 100_000),
            drain_timeout_s=self.seconds("DRAIN_TIMEOUT_S", 600.0),
            stream_start_timeout_s=self.seconds("STREAM_START_TIMEOUT_S", 10.0, 300.0),
            max_call_s=self.seconds("MAX_CALL_SECONDS", 3600.0),
            caller_silence_s=self.seconds_or_off("CALLER_SILENCE_TIMEOUT_S", 30.0),
            stall_timeout_s=self.seconds_or_off("MODEL_STALL_TIMEOUT_S", 4.0),
            reconnect_attempts=self.positive_int("MODEL_RECONNECT_ATTEMPTS", 4, 20),
            unavailable_message=self.raw("AGENT_UNAVAILABLE_MESSAGE")
            or DEFAULT_UNAVAILABLE_MESSAGE,
            busy_message=self.raw("AGENT_BUSY_MESSAGE") or DEFAULT_BUSY_MESSAGE,
            log_level=log_level,
            log_format=log_format,  # type: ignore[arg-type]
            record_calls=self.record_calls(),
            record_calls_max_s=self.seconds("RECORD_CALLS_MAX_S", 7200.0),
            database_url=self.database_url(),
            api_token=self.api_token(),
            redact_phone_numbers=self.flag("REDACT_PHONE_NUMBERS", False),
            twilio_api_base_url=api_base.rstrip("/") if api_base else None,
            outbound_caller_id=caller_id,
            outbound_answer_timeout_s=self.seconds("OUTBOUND_ANSWER_TIMEOUT_S", 5.0, 60.0),
            outbound_greeting=self.raw("AGENT_OUTBOUND_GREETING") or DEFAULT_OUTBOUND_GREETING,
            warnings=tuple(self.warnings),
        )
