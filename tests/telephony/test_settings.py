"""Settings from the environment: defaults, persona, and one clear error per bad variable."""

from __future__ import annotations

from pathlib import Path

import pytest

from agent.config import DEFAULT_GREETING, DEFAULT_MODEL
from agent.env import EnvReader, Variable
from support import ROOT
from telephony.settings import VARIABLES, ConfigError, Settings


def settings(**env: str) -> Settings:
    return Settings.from_env(env)


def test_defaults_use_the_embedded_simulator_and_warn_about_signatures() -> None:
    s = settings()
    assert s.model.backend == "simulator"
    assert s.model.model == DEFAULT_MODEL
    assert s.persona.greeting == DEFAULT_GREETING
    assert s.persona.voice == "Puck"
    assert s.persona.language == "en-US"
    assert s.persona.tools == ("end_call",)  # no transfer number: no transfer tool
    assert s.max_concurrent_calls == 100
    assert not s.signatures_enforced
    assert any("TWILIO_AUTH_TOKEN" in w for w in s.warnings)


def test_api_key_selects_gemini_and_model_override() -> None:
    s = settings(GEMINI_API_KEY="k", GEMINI_MODEL="gemini-2.5-flash-native-audio-preview-12-2025")
    assert s.model.backend == "gemini"
    assert s.model.api_key == "k"
    assert s.model.model == "gemini-2.5-flash-native-audio-preview-12-2025"


def test_vertex_needs_a_project() -> None:
    with pytest.raises(ConfigError) as err:
        settings(GOOGLE_GENAI_USE_VERTEXAI="true")
    assert err.value.variable == "GOOGLE_CLOUD_PROJECT"
    s = settings(GOOGLE_GENAI_USE_VERTEXAI="true", GOOGLE_CLOUD_PROJECT="p")
    assert s.model.backend == "vertex"
    assert s.model.model == "gemini-live-2.5-flash-native-audio"


def test_simulator_off_without_credentials_is_an_error() -> None:
    with pytest.raises(ConfigError, match="GEMINI_API_KEY"):
        settings(LIVE_SIMULATOR="off")


def test_persona_from_env(tmp_path) -> None:  # type: ignore[no-untyped-def]
    f = tmp_path / "instructions.txt"
    f.write_text("You are Ada, the bakery's assistant.\n")
    s = settings(
        AGENT_INSTRUCTIONS_FILE=str(f),
        AGENT_VOICE="Kore",
        AGENT_LANGUAGE="de-DE",
        AGENT_GREETING="Guten Tag!",
        AGENT_TRANSFER_NUMBER="+14155550100",
        AGENT_VAD_START_SENSITIVITY="HIGH",
        AGENT_VAD_SILENCE_MS="800",
    )
    assert s.persona.instructions == "You are Ada, the bakery's assistant."
    assert s.persona.voice == "Kore"
    assert s.persona.language == "de-DE"
    assert s.persona.greeting == "Guten Tag!"
    assert s.persona.tools == ("end_call", "transfer_call")
    assert s.persona.vad.start_sensitivity == "high"
    assert s.persona.vad.silence_duration_ms == 800


def test_fast_path_can_be_turned_off() -> None:
    assert settings().model.fast_path is True
    assert settings(MODEL_FAST_PATH="false").model.fast_path is False


def test_empty_greeting_means_caller_speaks_first() -> None:
    assert settings(AGENT_GREETING="").persona.greeting is None


@pytest.mark.parametrize(
    ("env", "variable"),
    [
        ({"MAX_CONCURRENT_CALLS": "lots"}, "MAX_CONCURRENT_CALLS"),
        ({"MAX_CONCURRENT_CALLS": "0"}, "MAX_CONCURRENT_CALLS"),
        ({"AGENT_LANGUAGE": "english please"}, "AGENT_LANGUAGE"),
        ({"AGENT_VOICE": "Kore; rm -rf"}, "AGENT_VOICE"),
        ({"AGENT_TRANSFER_NUMBER": "0800 123"}, "AGENT_TRANSFER_NUMBER"),
        ({"AGENT_VAD_END_SENSITIVITY": "medium"}, "AGENT_VAD_END_SENSITIVITY"),
        ({"AGENT_TOOLS": "end_call,launch_rocket"}, "AGENT_TOOLS"),
        ({"AGENT_INSTRUCTIONS": "a", "AGENT_INSTRUCTIONS_FILE": "/x"}, "AGENT_INSTRUCTIONS_FILE"),
        ({"AGENT_INSTRUCTIONS_FILE": "/nonexistent/file"}, "AGENT_INSTRUCTIONS_FILE"),
        ({"TWILIO_AUTH_TOKEN": "t"}, "PUBLIC_URL"),
        ({"PUBLIC_URL": "agent.example.com"}, "PUBLIC_URL"),
        ({"PUBLIC_URL": "https://a.example.com/?x=1"}, "PUBLIC_URL"),
        ({"TWILIO_ACCOUNT_SID": "nope"}, "TWILIO_ACCOUNT_SID"),
        ({"DRAIN_TIMEOUT_S": "-1"}, "DRAIN_TIMEOUT_S"),
        ({"LOG_FORMAT": "xml"}, "LOG_FORMAT"),
        ({"LIVE_SIMULATOR": "maybe"}, "LIVE_SIMULATOR"),
        ({"GOOGLE_GENAI_USE_VERTEXAI": "perhaps"}, "GOOGLE_GENAI_USE_VERTEXAI"),
        ({"DATABASE_URL": "calls.db"}, "DATABASE_URL"),
        ({"API_TOKEN": "short"}, "API_TOKEN"),
        ({"REDACT_PHONE_NUMBERS": "sometimes"}, "REDACT_PHONE_NUMBERS"),
        ({"OUTBOUND_CALLER_ID": "555-0100"}, "OUTBOUND_CALLER_ID"),
        ({"OUTBOUND_ANSWER_TIMEOUT_S": "0"}, "OUTBOUND_ANSWER_TIMEOUT_S"),
        ({"TWILIO_API_BASE_URL": "api.twilio.com"}, "TWILIO_API_BASE_URL"),
        ({"TWILIO_API_BASE_URL": "https://proxy.example.com/twilio"}, "TWILIO_API_BASE_URL"),
        ({"INSTANCE_ID": "-leading-dash"}, "INSTANCE_ID"),
        ({"INSTANCE_ID": "web_1"}, "INSTANCE_ID"),
        ({"INSTANCE_ID": "a" * 64}, "INSTANCE_ID"),
        ({"INSTANCE_HEARTBEAT_S": "0"}, "INSTANCE_HEARTBEAT_S"),
        ({"RECORDS_SNAPSHOT_S": "-5"}, "RECORDS_SNAPSHOT_S"),
        ({"RECORDS_SPOOL_MAX_MB": "0"}, "RECORDS_SPOOL_MAX_MB"),
        ({"AGENT_KNOWLEDGE": "/nonexistent/folder"}, "AGENT_KNOWLEDGE"),
        ({"AGENT_KNOWLEDGE": " , "}, "AGENT_KNOWLEDGE"),
        ({"AGENT_TOOLS": "end_call,search_knowledge"}, "AGENT_TOOLS"),
        ({"KNOWLEDGE_EMBEDDINGS": "openai"}, "KNOWLEDGE_EMBEDDINGS"),
        ({"KNOWLEDGE_SEARCH_TIMEOUT_S": "0"}, "KNOWLEDGE_SEARCH_TIMEOUT_S"),
        ({"KNOWLEDGE_EMBEDDING_MODEL": "two words"}, "KNOWLEDGE_EMBEDDING_MODEL"),
        ({"MODEL_AUDIO_SPEECH_CHUNK_MS": "50"}, "MODEL_AUDIO_SPEECH_CHUNK_MS"),
        ({"MODEL_AUDIO_SPEECH_CHUNK_MS": "220"}, "MODEL_AUDIO_SPEECH_CHUNK_MS"),
        (
            {"MODEL_AUDIO_CHUNK_MS": "40", "MODEL_AUDIO_SPEECH_CHUNK_MS": "20"},
            "MODEL_AUDIO_SPEECH_CHUNK_MS",
        ),
    ],
)
def test_invalid_values_name_the_variable(env: dict[str, str], variable: str) -> None:
    with pytest.raises(ConfigError) as err:
        Settings.from_env(env)
    assert err.value.variable == variable
    assert variable in str(err.value)


def test_records_api_and_outbound_defaults_and_overrides() -> None:
    defaults = Settings.from_env({})
    assert defaults.database_url == "sqlite:///calls.db"
    assert defaults.api_token is None and not defaults.redact_phone_numbers
    assert defaults.outbound_caller_id is None and defaults.outbound_answer_timeout_s == 5.0
    assert defaults.twilio_api_base_url is None
    s = Settings.from_env(
        {
            "DATABASE_URL": "postgresql+psycopg://agent:pw@db/calls",
            "API_TOKEN": "x" * 16,
            "REDACT_PHONE_NUMBERS": "yes",
            "OUTBOUND_CALLER_ID": "+14155550100",
            "OUTBOUND_ANSWER_TIMEOUT_S": "2.5",
            "AGENT_OUTBOUND_GREETING": "Hi, it's the clinic calling.",
            "TWILIO_API_BASE_URL": "http://127.0.0.1:9999/",
        }
    )
    assert s.database_url == "postgresql+psycopg://agent:pw@db/calls"
    assert s.api_token == "x" * 16 and s.redact_phone_numbers
    assert (s.outbound_caller_id, s.outbound_answer_timeout_s) == ("+14155550100", 2.5)
    assert s.outbound_greeting == "Hi, it's the clinic calling."
    assert s.twilio_api_base_url == "http://127.0.0.1:9999"
    assert any("TWILIO_API_BASE_URL" in w for w in s.warnings)
    off = Settings.from_env({"DATABASE_URL": "off"})
    assert off.database_url is None and any("no record" in w for w in off.warnings)


def test_knowledge_offers_search_knowledge_and_picks_the_embedder(tmp_path) -> None:  # type: ignore[no-untyped-def]
    assert settings().knowledge is None
    docs = tmp_path / "docs"
    docs.mkdir()
    faq = tmp_path / "faq.md"
    faq.write_text("# FAQ")
    s = settings(AGENT_KNOWLEDGE=f"{docs}, {faq}")
    assert s.knowledge is not None
    assert s.knowledge.paths == (docs, faq)
    assert s.knowledge.index.name == "knowledge.db"
    assert s.knowledge.embeddings == "local"  # the simulator: offline embeddings
    assert s.knowledge.search_timeout_s == 2.0
    assert s.persona.tools == ("end_call", "search_knowledge")
    real = settings(AGENT_KNOWLEDGE=str(docs), GEMINI_API_KEY="k", AGENT_TOOLS="end_call")
    assert real.knowledge is not None and real.knowledge.embeddings == "gemini"
    assert real.persona.tools == ("end_call", "search_knowledge")
    off = settings(
        AGENT_KNOWLEDGE=str(docs),
        KNOWLEDGE_EMBEDDINGS="off",
        KNOWLEDGE_INDEX=str(tmp_path / "k.db"),
        KNOWLEDGE_SEARCH_TIMEOUT_S="0.5",
    )
    assert off.knowledge is not None
    assert (off.knowledge.embeddings, off.knowledge.index) == ("off", tmp_path / "k.db")
    assert off.knowledge.search_timeout_s == 0.5


def test_public_urls() -> None:
    s = settings(PUBLIC_URL="https://agent.example.com/base/", TWILIO_AUTH_TOKEN="t")
    assert s.signatures_enforced
    assert s.stream_url() == "wss://agent.example.com/base/twilio/media"
    assert s.public_http_url("/twilio/voice") == "https://agent.example.com/base/twilio/voice"
    dev = settings()
    assert dev.stream_url("abc.ngrok.app") == "wss://abc.ngrok.app/twilio/media"


def test_unknown_voice_is_passed_on_with_a_warning() -> None:
    s = settings(AGENT_VOICE="Newvoice")
    assert s.persona.voice == "Newvoice"
    assert any("Newvoice" in w for w in s.warnings)


class _Recording(dict[str, str]):
    """An environment that remembers every name looked up in it."""

    def __init__(self) -> None:
        super().__init__()
        self.asked: set[str] = set()

    def get(self, key: str, default: object = None) -> object:  # type: ignore[override]
        self.asked.add(key)
        return super().get(key, default)


def test_every_variable_read_is_declared_and_documented() -> None:
    import re

    env = _Recording()
    Settings.from_env(env)
    assert len(env.asked) > 30
    names = {v.name for v in VARIABLES}
    assert env.asked <= names
    assert len(names) == len(VARIABLES), "a variable is declared twice"
    # The command line reads a few more straight from the environment.
    root = ROOT
    sources = " ".join(p.read_text() for p in (root / "telephony").rglob("*.py"))
    direct = set(re.findall(r'environ\.get\(\s*"([A-Z0-9_]+)"', sources))
    assert direct <= names
    readme = (root / "README.md").read_text()
    docs = readme + " ".join(p.read_text() for p in (root / "docs").glob("*.md"))
    undocumented = [name for name in names if f"`{name}`" not in docs]
    assert undocumented == []


def test_reading_an_undeclared_variable_is_a_bug() -> None:
    reader = EnvReader({"X": "1"}, [Variable("Y", "", "y", "s")])
    with pytest.raises(KeyError, match="not a declared variable"):
        reader.raw("X")


def test_errors_say_where_the_value_came_from() -> None:
    with pytest.raises(ConfigError) as err:
        Settings.from_env(
            {"MAX_CONCURRENT_CALLS": "lots"}, sources={"MAX_CONCURRENT_CALLS": ".env"}
        )
    assert str(err.value) == (
        "configuration error: MAX_CONCURRENT_CALLS (set in .env): expected a whole number, "
        "got 'lots'"
    )


def test_env_example_is_generated_from_the_declarations() -> None:

    from telephony.settings import env_example_text

    committed = (ROOT / ".env.example").read_text()
    assert committed == env_example_text(), "run: voice-agent config env-example > .env.example"


def test_env_example_shows_the_real_defaults() -> None:
    """Uncommenting every line of .env.example changes nothing: its values are the defaults."""
    import re

    from telephony.settings import env_example_text

    lines = re.findall(r"^# ([A-Z][A-Z0-9_]+)=(.*)$", env_example_text(), re.M)
    assert {name for name, _ in lines} == {v.name for v in VARIABLES}
    env = {name: value.strip('"') for name, value in lines}
    assert Settings.from_env(env) == Settings.from_env({})


def test_uplink_message_sizes_default_and_follow_the_prompt_chunk() -> None:
    s = settings()
    assert (s.model_audio_chunk_ms, s.model_audio_quiet_chunk_ms) == (20, 200)
    assert s.model_audio_speech_chunk_ms == 100
    assert settings(MODEL_AUDIO_SPEECH_CHUNK_MS="20").model_audio_speech_chunk_ms == 20  # off
    s = settings(MODEL_AUDIO_CHUNK_MS="60")
    assert (s.model_audio_quiet_chunk_ms, s.model_audio_speech_chunk_ms) == (200, 100)
    # Never below the prompt chunk: 60 ms prompt messages mean 60 ms quiet messages too.
    s = settings(MODEL_AUDIO_CHUNK_MS="60", MODEL_AUDIO_QUIET_CHUNK_MS="60")
    assert s.model_audio_quiet_chunk_ms == 60


def test_edge_defaults_and_what_they_derive_from() -> None:
    s = settings()
    assert s.stream_start_timeout_s == 5.0
    assert (s.preconnect_limit, s.preconnect_ttl_s) == (25, 8.0)  # max(4, 100 // 4)
    assert (s.pending_streams_limit, s.max_pending_streams_per_client) == (25, 8)
    assert s.connections_limit == 2 * 100 + 25 + 64
    assert (s.http_header_timeout_s, s.http_body_timeout_s) == (10.0, 10.0)
    assert (s.allow_unsigned, s.metrics_token, s.metrics_port) == (False, None, None)
    small = settings(MAX_CONCURRENT_CALLS="8")
    assert (small.preconnect_limit, small.pending_streams_limit) == (4, 16)
    explicit = settings(MAX_PRECONNECTS="0", MAX_PENDING_STREAMS="3", MAX_CONNECTIONS="500")
    assert (explicit.preconnect_limit, explicit.pending_streams_limit) == (0, 3)
    assert explicit.connections_limit == 500
    with pytest.raises(ConfigError, match="METRICS_TOKEN"):
        settings(METRICS_TOKEN="short")
    with pytest.raises(ConfigError, match="METRICS_PORT"):
        settings(METRICS_PORT="99999")


def test_signed_urls_keep_the_public_base_and_the_request_target() -> None:
    s = settings(PUBLIC_URL="https://agent.example.com/base/", TWILIO_AUTH_TOKEN="t")
    assert s.public_url_for("/twilio/voice?tenant=1&x=%20") == (
        "https://agent.example.com/base/twilio/voice?tenant=1&x=%20"
    )
    assert s.public_url_for("/twilio/media", websocket=True) == (
        "wss://agent.example.com/base/twilio/media"
    )
    assert s.stream_url() == "wss://agent.example.com/base/twilio/media"


def test_instance_identity_and_spool_defaults_and_overrides(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    from telephony import settings as settings_module

    defaults = Settings.from_env({})
    assert defaults.instance_id == settings_module.default_instance_id()
    assert defaults.instance_heartbeat_s == 15.0 and defaults.records_snapshot_s == 30.0
    assert defaults.records_spool_dir == Path(".voice-agent/spool")
    assert defaults.records_spool_max_bytes == 64 * 1024 * 1024
    s = Settings.from_env(
        {
            "INSTANCE_ID": "voice-agent-7d9f8b-x2k4q",
            "INSTANCE_HEARTBEAT_S": "5",
            "RECORDS_SNAPSHOT_S": "0",
            "RECORDS_SPOOL_DIR": str(tmp_path),
            "RECORDS_SPOOL_MAX_MB": "8",
        }
    )
    assert s.instance_id == "voice-agent-7d9f8b-x2k4q" and s.instance_heartbeat_s == 5.0
    assert s.records_snapshot_s == 0 and s.records_spool_dir == tmp_path
    assert s.records_spool_max_bytes == 8 * 1024 * 1024
    with pytest.raises(ConfigError, match="INSTANCE_ID: expected letters, digits and '-'"):
        Settings.from_env({"INSTANCE_ID": "has space"})
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(ConfigError, match="RECORDS_SPOOL_DIR"):
        Settings.from_env({"RECORDS_SPOOL_DIR": str(blocker)})


@pytest.mark.parametrize(
    ("hostname", "expected"),
    [
        ("voice-agent-7d9f8b-x2k4q", "voice-agent-7d9f8b-x2k4q"),
        ("web1.internal.example.com", "web1"),
        ("under_score", "under-score"),
        ("x" * 80, "x" * 63),
    ],
)
def test_the_default_instance_id_is_the_host_name_made_valid(
    monkeypatch: pytest.MonkeyPatch, hostname: str, expected: str
) -> None:
    from telephony import settings as settings_module

    monkeypatch.setattr("socket.gethostname", lambda: hostname)
    settings_module.default_instance_id.cache_clear()
    try:
        assert settings_module.default_instance_id() == expected
    finally:
        settings_module.default_instance_id.cache_clear()


def test_a_host_named_localhost_gets_a_unique_instance_id(monkeypatch: pytest.MonkeyPatch) -> None:
    """Cloud Run names every instance's host "localhost": they must not share an id."""
    from telephony import settings as settings_module

    monkeypatch.setattr("socket.gethostname", lambda: "localhost")
    settings_module.default_instance_id.cache_clear()
    try:
        first = settings_module.default_instance_id()
        assert first.startswith("localhost-") and len(first) == len("localhost-") + 8
        assert settings_module.default_instance_id() == first  # stable within a process
        settings_module.default_instance_id.cache_clear()
        assert settings_module.default_instance_id() != first
    finally:
        settings_module.default_instance_id.cache_clear()


def test_stream_routing_names_the_instance_in_the_stream_url() -> None:
    shared = settings(PUBLIC_URL="https://agent.example.com", INSTANCE_ID="pod-1")
    assert shared.stream_url() == "wss://agent.example.com/twilio/media"
    routed = settings(
        PUBLIC_URL="https://agent.example.com", INSTANCE_ID="pod-1", STREAM_ROUTING="instance"
    )
    assert routed.stream_url() == "wss://agent.example.com/twilio/media/pod-1"
    with pytest.raises(ConfigError, match="STREAM_ROUTING"):
        settings(STREAM_ROUTING="sticky")
