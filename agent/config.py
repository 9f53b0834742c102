"""The model side's settings: how to reach the Live API and who the agent is.

Read from the environment once at startup (``read_model_access``, ``read_persona``) through
``agent.env.EnvReader``: a bad value stops the process with one message that names the
variable. The SDK's own variables (``GOOGLE_GEMINI_BASE_URL``, ``SSL_CERT_FILE``,
``GOOGLE_GENAI_USE_VERTEXAI`` …) are left for the SDK to read; we only look at them to decide
whether real model credentials exist. Nothing here knows about phones: the service's settings
(Twilio, limits, records) live in ``telephony.settings``.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final, Literal

from agent.env import ConfigError, EnvReader, Variable
from agent.tools.names import (
    BUILTIN_TOOLS,
    END_CALL,
    GOOGLE_SEARCH,
    SEARCH_KNOWLEDGE,
    TRANSFER_CALL,
)
from agent.tools.toolbox import Toolbox

__all__ = [
    "BUILTIN_TOOLS",
    "DEFAULT_GREETING",
    "DEFAULT_INSTRUCTIONS",
    "DEFAULT_MODEL",
    "DEFAULT_VERTEX_MODEL",
    "KNOWLEDGE_VARIABLES",
    "KNOWN_VOICES",
    "MODEL_VARIABLES",
    "PERSONA_VARIABLES",
    "ConfigError",
    "KnowledgeSettings",
    "ModelAccess",
    "Persona",
    "VadSettings",
    "read_knowledge",
    "read_model_access",
    "read_persona",
]

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

#: Prebuilt Live API voices known at release. Unknown names are passed through with a warning:
#: Google adds voices, and refusing a new one would be worse than a typo reaching the API.
KNOWN_VOICES: Final = frozenset(
    (
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
    )
)

#: Offered whenever AGENT_KNOWLEDGE is set (``agent.knowledge.tool``).
KNOWLEDGE_TOOL: Final = SEARCH_KNOWLEDGE
#: The Gemini embedding model, and the size we ask it for (768 of its 3072: a quarter of
#: the index and of the search time, for a small loss of quality in Google's figures).
DEFAULT_EMBEDDING_MODEL: Final = "gemini-embedding-001"

_MODEL = "Model access"
_PERSONA = "Persona"
_KNOWLEDGE = "Knowledge (search_knowledge)"

#: The variables read here, in the order the docs list them.
MODEL_VARIABLES: Final = (
    Variable(
        "GEMINI_API_KEY",
        "",
        "Gemini API key (or GOOGLE_API_KEY); selects the Gemini API backend",
        _MODEL,
        secret=True,
        sdk=True,
    ),
    Variable("GOOGLE_API_KEY", "", "the same as GEMINI_API_KEY", _MODEL, secret=True, sdk=True),
    Variable(
        "GOOGLE_GENAI_USE_VERTEXAI",
        "false",
        "true: Vertex AI with Application Default Credentials",
        _MODEL,
        sdk=True,
    ),
    Variable(
        "GOOGLE_CLOUD_PROJECT", "", "Vertex AI project (required with Vertex)", _MODEL, sdk=True
    ),
    Variable("GOOGLE_CLOUD_LOCATION", "", "Vertex AI region", _MODEL, sdk=True),
    Variable(
        "GEMINI_MODEL",
        DEFAULT_MODEL,
        f"Live audio model (Vertex AI default: {DEFAULT_VERTEX_MODEL})",
        _MODEL,
    ),
    Variable(
        "LIVE_SIMULATOR",
        "auto",
        "auto: the embedded simulator when no credentials are set; on: always; off: refuse "
        "to start without credentials (production)",
        _MODEL,
    ),
    Variable(
        "LIVE_SIMULATOR_DIALOGUE",
        "converse",
        "what the embedded simulator (NOT A REAL MODEL) does: converse (recognises the caller "
        "with pocketsphinx, answers by a few rules, calls tools, speaks with espeak-ng) or "
        "echo (plays the caller's audio back)",
        _MODEL,
    ),
    Variable(
        "GOOGLE_GEMINI_BASE_URL",
        "",
        "point the SDK at another Live API endpoint (a proxy, a standalone simulator)",
        _MODEL,
        sdk=True,
    ),
    Variable("SSL_CERT_FILE", "", "CA bundle the SDK trusts for that endpoint", _MODEL, sdk=True),
    Variable("MODEL_SETUP_TIMEOUT_S", "10", "longest wait for a Live session to be set up", _MODEL),
    Variable(
        "MODEL_FAST_PATH",
        "true",
        "send caller audio and read model messages as raw JSON on the SDK's socket (false: "
        "the SDK's public methods for everything; always off for Vertex AI)",
        _MODEL,
    ),
    Variable(
        "MODEL_AUDIO_CHUNK_MS",
        "20",
        "caller audio goes to the model in messages of 20, 40 or 60 ms (fewer, larger "
        "messages; the model hears the caller up to chunk - 20 ms later)",
        _MODEL,
    ),
    Variable(
        "MODEL_AUDIO_QUIET_CHUNK_MS",
        "200",
        "while the caller is silent, caller audio goes in messages of this many ms "
        "(MODEL_AUDIO_CHUNK_MS..200, a multiple of 20; equal to MODEL_AUDIO_CHUNK_MS: off); "
        "the first loud frame goes out at once, and so does every frame from 200 ms before to "
        "200 ms after AGENT_VAD_SILENCE_MS of silence (when the model ends the turn)",
        _MODEL,
    ),
    Variable(
        "MODEL_AUDIO_SPEECH_CHUNK_MS",
        "100",
        "once the caller has talked for 0.3 s, their loud frames go in messages of this many "
        "ms (MODEL_AUDIO_CHUNK_MS..200, a multiple of 20; equal to MODEL_AUDIO_CHUNK_MS: off); "
        "a pause goes out at once, and after 4 s of talk without one, frames do again",
        _MODEL,
    ),
    Variable(
        "MODEL_RECONNECT_ATTEMPTS",
        "4",
        "attempts to reach the model again after a connection is lost",
        _MODEL,
    ),
    Variable(
        "MODEL_STALL_TIMEOUT_S",
        "4",
        "caller done and the model silent this long: nudge it, then reconnect (0: off)",
        _MODEL,
    ),
    Variable("MODEL_PING_INTERVAL_S", "20", "WebSocket keepalive ping towards the model", _MODEL),
    Variable(
        "MODEL_PING_TIMEOUT_S",
        "60",
        "how long a keepalive pong may take (Gemini's take 8-30 s)",
        _MODEL,
    ),
)

PERSONA_VARIABLES: Final = (
    Variable(
        "AGENT_INSTRUCTIONS", "", "system instruction text (default: a phone assistant)", _PERSONA
    ),
    Variable(
        "AGENT_INSTRUCTIONS_FILE",
        "",
        "read the system instruction from this file instead",
        _PERSONA,
    ),
    Variable("AGENT_VOICE", "Puck", "prebuilt voice (Kore, Charon, Aoede, Fenrir, ...)", _PERSONA),
    Variable("AGENT_LANGUAGE", "en-US", "BCP-47 language of speech and <Say> messages", _PERSONA),
    Variable(
        "AGENT_GREETING",
        DEFAULT_GREETING,
        "the agent speaks first with exactly this text (empty: the caller speaks first)",
        _PERSONA,
    ),
    Variable(
        "AGENT_TOOLS",
        "end_call,transfer_call",
        "built-in tools offered to the model: end_call, transfer_call (needs "
        "AGENT_TRANSFER_NUMBER), google_search (the Live API's grounding tool)",
        _PERSONA,
    ),
    Variable(
        "AGENT_TOOLS_FILE",
        "",
        'a YAML or JSON file of the operator\'s HTTP tools ({"tools": [ … ]}; docs/tools.md)',
        _PERSONA,
    ),
    Variable(
        "AGENT_TOOLS_MODULE",
        "",
        "a Python module (package.module) whose @tool async functions the model may call",
        _PERSONA,
    ),
    Variable(
        "TOOLS_SIGNING_SECRET",
        "",
        "sign each HTTP tool request (HMAC-SHA256 over a timestamp and the body) with this",
        _PERSONA,
        secret=True,
    ),
    Variable(
        "AGENT_VAD_START_SENSITIVITY",
        "low",
        "Live API start-of-speech sensitivity (high/low)",
        _PERSONA,
    ),
    Variable("AGENT_VAD_END_SENSITIVITY", "high", "end-of-speech sensitivity (high/low)", _PERSONA),
    Variable("AGENT_VAD_SILENCE_MS", "500", "silence that ends the caller's turn", _PERSONA),
    Variable(
        "AGENT_VAD_PREFIX_PADDING_MS",
        "100",
        "speech needed before a turn starts counting",
        _PERSONA,
    ),
)

#: AGENT_TOOLS when unset.
DEFAULT_TOOLS: Final = (END_CALL, TRANSFER_CALL)

KNOWLEDGE_VARIABLES: Final = (
    Variable(
        "AGENT_KNOWLEDGE",
        "",
        "folders or files (comma-separated) of Markdown, text, HTML and PDF the agent can "
        "search (search_knowledge); unset: no knowledge tool",
        _KNOWLEDGE,
    ),
    Variable(
        "KNOWLEDGE_INDEX",
        "knowledge.db",
        "the search index (one SQLite file), updated at startup for what changed",
        _KNOWLEDGE,
    ),
    Variable(
        "KNOWLEDGE_EMBEDDINGS",
        "auto",
        "gemini, local (bundled wordllama, offline), off (keyword search only); auto: gemini "
        "with model credentials, local with the simulator",
        _KNOWLEDGE,
    ),
    Variable(
        "KNOWLEDGE_EMBEDDING_MODEL",
        DEFAULT_EMBEDDING_MODEL,
        "the Gemini embedding model (KNOWLEDGE_EMBEDDINGS=gemini)",
        _KNOWLEDGE,
    ),
    Variable(
        "KNOWLEDGE_SEARCH_TIMEOUT_S",
        "2",
        "longest a search may take during a call (embedding the question gets half of it, "
        "then keyword search alone)",
        _KNOWLEDGE,
    ),
)

Sensitivity = Literal["high", "low"]
Embeddings = Literal["gemini", "local", "off"]
Backend = Literal["gemini", "vertex", "simulator"]


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
    #: The operator's own tools (HTTP endpoints, Python functions, the knowledge base).
    toolbox: Toolbox = field(default_factory=Toolbox)


@dataclass(frozen=True)
class ModelAccess:
    """How to reach the Live API.

    ``backend`` is ``"gemini"`` (API key), ``"vertex"`` (Google Cloud credentials) or
    ``"simulator"`` (the embedded local Live API simulator: not a real model).
    """

    backend: Backend
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
    #: What the embedded simulator does (``SimBehaviour.dialogue``): "converse" or "echo".
    simulator_dialogue: str = "converse"


@dataclass(frozen=True)
class KnowledgeSettings:
    """What the agent can look up (``agent.knowledge``): where, and how it is searched."""

    paths: tuple[Path, ...]
    index: Path = Path("knowledge.db")
    embeddings: Embeddings = "local"
    embedding_model: str = DEFAULT_EMBEDDING_MODEL
    search_timeout_s: float = 2.0


def read_knowledge(
    env: EnvReader, *, backend: Backend, paths: Sequence[Path] | None = None
) -> KnowledgeSettings | None:
    """The knowledge settings (None when AGENT_KNOWLEDGE is unset). ``backend`` decides
    what ``KNOWLEDGE_EMBEDDINGS=auto`` means; ``paths`` stand for AGENT_KNOWLEDGE (the
    command line's; an empty list for commands that only read the index)."""
    raw = env.raw("AGENT_KNOWLEDGE")
    index = Path(env.raw("KNOWLEDGE_INDEX") or "knowledge.db").expanduser()
    mode = env.choice("KNOWLEDGE_EMBEDDINGS", "auto", ("auto", "gemini", "local", "off"))
    model = env.raw("KNOWLEDGE_EMBEDDING_MODEL") or DEFAULT_EMBEDDING_MODEL
    if any(c.isspace() for c in model):
        raise env.error("KNOWLEDGE_EMBEDDING_MODEL", f"not a model name: {model!r}")
    timeout = env.seconds("KNOWLEDGE_SEARCH_TIMEOUT_S", 2.0, 30.0)
    if paths is None:
        if raw is None:
            return None
        paths = [Path(p.strip()).expanduser() for p in raw.split(",") if p.strip()]
        if not paths:
            raise env.error("AGENT_KNOWLEDGE", "names no folder or file")
        for path in paths:
            if not path.exists():
                raise env.error("AGENT_KNOWLEDGE", f"{path} does not exist")
    if index.is_dir():
        raise env.error("KNOWLEDGE_INDEX", f"{index} is a directory (name the index file)")
    if mode == "auto":
        mode = "local" if backend == "simulator" else "gemini"
    embeddings: Embeddings = mode  # type: ignore[assignment]
    return KnowledgeSettings(
        paths=tuple(paths),
        index=index,
        embeddings=embeddings,
        embedding_model=model,
        search_timeout_s=timeout,
    )


def read_model_access(env: EnvReader) -> ModelAccess:
    """How to reach the model; ``ConfigError`` when credentials are inconsistent."""
    api_key = env.raw("GEMINI_API_KEY") or env.raw("GOOGLE_API_KEY")
    vertex = env.flag("GOOGLE_GENAI_USE_VERTEXAI", False)
    mode = env.choice("LIVE_SIMULATOR", "auto", ("auto", "on", "off"))
    backend: Backend
    if mode == "on":
        backend = "simulator"
    elif vertex:
        backend = "vertex"
        if not env.raw("GOOGLE_CLOUD_PROJECT") and not api_key:
            raise env.error(
                "GOOGLE_CLOUD_PROJECT",
                "required with GOOGLE_GENAI_USE_VERTEXAI=true (or set an API key)",
            )
    elif api_key:
        backend = "gemini"
    elif mode == "off":
        raise env.error(
            "GEMINI_API_KEY",
            "no model credentials (set GEMINI_API_KEY, or GOOGLE_GENAI_USE_VERTEXAI with "
            "GOOGLE_CLOUD_PROJECT/GOOGLE_CLOUD_LOCATION) and LIVE_SIMULATOR=off",
        )
    else:
        backend = "simulator"
    env.get("GOOGLE_CLOUD_LOCATION")  # the SDK's; declared so that it is documented
    env.get("GOOGLE_GEMINI_BASE_URL")
    env.get("SSL_CERT_FILE")
    default_model = DEFAULT_VERTEX_MODEL if backend == "vertex" else DEFAULT_MODEL
    model = env.raw("GEMINI_MODEL") or default_model
    if any(c.isspace() for c in model):
        raise env.error("GEMINI_MODEL", f"not a model name: {model!r}")
    return ModelAccess(
        backend=backend,
        model=model,
        api_key=api_key,
        setup_timeout_s=env.seconds("MODEL_SETUP_TIMEOUT_S", 10.0, 120.0),
        ping_interval_s=env.seconds("MODEL_PING_INTERVAL_S", 20.0, 600.0),
        ping_timeout_s=env.seconds("MODEL_PING_TIMEOUT_S", 60.0, 600.0),
        fast_path=env.flag("MODEL_FAST_PATH", True),
        simulator_dialogue=env.choice("LIVE_SIMULATOR_DIALOGUE", "converse", ("converse", "echo")),
    )


_BCP47: Final = re.compile(r"^[A-Za-z]{2,3}(-[A-Za-z]{4})?(-([A-Za-z]{2}|[0-9]{3}))?$")


def read_persona(
    env: EnvReader, *, transfer_available: bool, knowledge_available: bool = False
) -> Persona:
    """Who the agent is. ``transfer_available``: there is a number to transfer calls to;
    ``knowledge_available``: AGENT_KNOWLEDGE is set (search_knowledge is offered)."""
    text = env.raw("AGENT_INSTRUCTIONS")
    path = env.raw("AGENT_INSTRUCTIONS_FILE")
    if text and path:
        raise env.error(
            "AGENT_INSTRUCTIONS_FILE", "set either AGENT_INSTRUCTIONS or this, not both"
        )
    if path:
        try:
            text = Path(path).read_text(encoding="utf-8").strip()
        except OSError as exc:
            raise env.error("AGENT_INSTRUCTIONS_FILE", f"cannot read {path}: {exc}") from None
        if not text:
            raise env.error("AGENT_INSTRUCTIONS_FILE", f"{path} is empty")
    voice = env.raw("AGENT_VOICE") or "Puck"
    if not voice.isalpha():
        raise env.error("AGENT_VOICE", f"not a prebuilt voice name: {voice!r}")
    if voice not in KNOWN_VOICES:
        env.warnings.append(f"AGENT_VOICE={voice!r} is not a voice we know; passing it on")
    language = env.raw("AGENT_LANGUAGE") or "en-US"
    if not _BCP47.match(language):
        raise env.error("AGENT_LANGUAGE", f"expected a BCP-47 code like en-US, got {language!r}")
    # An explicitly empty AGENT_GREETING means "let the caller speak first".
    raw_greeting = env.get("AGENT_GREETING")
    greeting = (DEFAULT_GREETING if raw_greeting is None else raw_greeting).strip() or None
    if greeting and len(greeting) > 1000:
        raise env.error("AGENT_GREETING", "longer than 1000 characters")
    tools_raw = env.raw("AGENT_TOOLS")
    tools = (
        tuple(t.strip() for t in tools_raw.split(",") if t.strip())
        if tools_raw is not None
        else DEFAULT_TOOLS
    )
    known = (*BUILTIN_TOOLS, KNOWLEDGE_TOOL)
    for tool in tools:
        if tool not in known:
            raise env.error("AGENT_TOOLS", f"unknown tool {tool!r} (known: {', '.join(known)})")
    if KNOWLEDGE_TOOL in tools and not knowledge_available:
        raise env.error("AGENT_TOOLS", f"{KNOWLEDGE_TOOL} needs AGENT_KNOWLEDGE")
    if "transfer_call" in tools and not transfer_available:
        # The transfer tool exists only when there is somewhere to transfer to.
        tools = tuple(t for t in tools if t != "transfer_call")
    if knowledge_available and KNOWLEDGE_TOOL not in tools:
        # Knowledge configured means the model can search it.
        tools = (*tools, KNOWLEDGE_TOOL)
    toolbox = read_toolbox(env)
    sensitivity = ("high", "low")
    vad = VadSettings(
        start_sensitivity=env.choice(  # type: ignore[arg-type]
            "AGENT_VAD_START_SENSITIVITY", "low", sensitivity
        ),
        end_sensitivity=env.choice(  # type: ignore[arg-type]
            "AGENT_VAD_END_SENSITIVITY", "high", sensitivity
        ),
        silence_duration_ms=env.positive_int("AGENT_VAD_SILENCE_MS", 500, 10_000),
        prefix_padding_ms=env.int_between(
            "AGENT_VAD_PREFIX_PADDING_MS", 100, 0, 5_000, "milliseconds"
        ),
    )
    return Persona(
        instructions=text or DEFAULT_INSTRUCTIONS,
        voice=voice,
        language=language,
        greeting=greeting,
        tools=tools,
        vad=vad,
        toolbox=toolbox,
    )


def read_toolbox(env: EnvReader) -> Toolbox:
    """The operator's tools from ``AGENT_TOOLS_FILE`` and ``AGENT_TOOLS_MODULE``; a bad file or
    module stops startup with a message naming the tool and field."""
    from agent.tools.http import HttpBackend, ToolsFileError, load_tools_file
    from agent.tools.python import ToolDefinitionError, load_module

    toolbox = Toolbox()
    secret = env.get("TOOLS_SIGNING_SECRET") or None
    path = env.raw("AGENT_TOOLS_FILE")
    if path:
        try:
            for tool in load_tools_file(Path(path), env.env, HttpBackend(secret)):
                toolbox.add(tool)
        except ToolsFileError as exc:
            raise env.error("AGENT_TOOLS_FILE", str(exc)) from None
    module = env.raw("AGENT_TOOLS_MODULE")
    if module:
        try:
            for py_tool in load_module(module):
                toolbox.add(py_tool)
        except (ToolDefinitionError, ValueError) as exc:
            raise env.error("AGENT_TOOLS_MODULE", str(exc)) from None
    clash = sorted(set(toolbox.names) & {*BUILTIN_TOOLS, GOOGLE_SEARCH, KNOWLEDGE_TOOL})
    if clash:
        raise env.error(
            "AGENT_TOOLS_FILE" if path else "AGENT_TOOLS_MODULE",
            f"a tool named {clash[0]!r} would hide the built-in tool of that name",
        )
    return toolbox
