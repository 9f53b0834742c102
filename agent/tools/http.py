"""Operator tools served over HTTP (``AGENT_TOOLS_FILE``).

The file (YAML or JSON) says ``{"tools": [ … ]}``; each tool has ``name``, ``description``,
``parameters`` (a JSON Schema object), ``url``, and optionally ``method`` (POST, PUT or PATCH;
default POST), ``headers`` (values may contain ``${VAR}``, expanded from the environment when
the file is loaded), ``timeout_s`` (default 5), ``behavior`` (``blocking``/``non_blocking``)
and ``scheduling`` (``when_idle``/``silent``/``interrupt``, for non-blocking tools).

On a tool call the backend gets one JSON request::

    {"tool": "lookup_order", "function_call_id": "fc-1", "arguments": {"order": "A123"},
     "call": {"call_sid": "CA…", "from": "+1…", "to": "+1…", "direction": "inbound",
              "custom_parameters": {…}}}

with an ``Idempotency-Key`` header (``<call sid>:<function-call id>``) and, when
``TOOLS_SIGNING_SECRET`` is set, ``X-Agent-Timestamp`` (Unix seconds) and
``X-Agent-Signature: v1=<hex HMAC-SHA256 of "<timestamp>." + body>``. Its JSON object becomes
the function response; anything else becomes an error response (see ``agent.tools.toolbox``).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import re
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

import httpx
import orjson

from agent.tools.spec import (
    BEHAVIORS,
    MAX_DESCRIPTION_CHARS,
    MAX_RESPONSE_BYTES,
    SCHEDULINGS,
    CallIdentity,
    ToolFailure,
    ToolSpec,
    check_name,
    check_parameters,
)

__all__ = [
    "SIGNATURE_HEADER",
    "TIMESTAMP_HEADER",
    "HttpBackend",
    "HttpTool",
    "ToolsFileError",
    "load_tools_file",
    "sign",
]

SIGNATURE_HEADER: Final = "X-Agent-Signature"
TIMESTAMP_HEADER: Final = "X-Agent-Timestamp"
METHODS: Final = ("POST", "PUT", "PATCH")
#: A tools file larger than this is not a tools file.
MAX_FILE_BYTES: Final = 1024 * 1024
MAX_TOOLS: Final = 128
MAX_TIMEOUT_S: Final = 120.0
_KEYS: Final = frozenset(
    {
        "name",
        "description",
        "parameters",
        "url",
        "method",
        "headers",
        "timeout_s",
        "behavior",
        "scheduling",
    }
)
_REQUIRED: Final = ("name", "description", "parameters", "url")
_VAR: Final = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")
#: Error text a backend puts in a failed answer is passed on this long at most.
_ERROR_CHARS: Final = 200


class ToolsFileError(ValueError):
    """The tools file is unusable; the message points at the tool and field."""


def sign(secret: str, timestamp: str, body: bytes) -> str:
    """The signature header's value: ``v1=`` and the hex HMAC-SHA256 of ``timestamp.body``."""
    mac = hmac.new(secret.encode(), timestamp.encode() + b"." + body, hashlib.sha256)
    return "v1=" + mac.hexdigest()


class HttpBackend:
    """The HTTP client every HTTP tool of a process shares (one connection pool)."""

    def __init__(
        self,
        signing_secret: str | None = None,
        *,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.signing_secret = signing_secret
        self._transport = transport  # tests: an in-process fake
        self._client: httpx.AsyncClient | None = None

    @property
    def client(self) -> httpx.AsyncClient:
        if self._client is None:
            # Timeouts are per tool (Toolbox.run bounds the whole request); redirects are
            # not followed: a tool's URL is the operator's, not the backend's to change.
            self._client = httpx.AsyncClient(
                timeout=httpx.Timeout(MAX_TIMEOUT_S),
                follow_redirects=False,
                limits=httpx.Limits(max_connections=200, max_keepalive_connections=50),
                headers={"User-Agent": "gemini-phone-agent-tools"},
                transport=self._transport,
            )
        return self._client

    async def aclose(self) -> None:
        if self._client is not None:
            await self._client.aclose()
            self._client = None


@dataclass(frozen=True)
class HttpTool:
    """One tool answered by the operator's HTTP endpoint."""

    spec: ToolSpec
    url: str
    backend: HttpBackend
    method: str = "POST"
    headers: Mapping[str, str] = field(default_factory=dict)

    def request_body(self, args: Mapping[str, Any], call_id: str, call: CallIdentity) -> bytes:
        return orjson.dumps(
            {
                "tool": self.spec.name,
                "function_call_id": call_id,
                "arguments": dict(args),
                "call": call.as_json(),
            }
        )

    async def invoke(
        self, args: Mapping[str, Any], call_id: str, call: CallIdentity
    ) -> Mapping[str, Any]:
        body = self.request_body(args, call_id, call)
        headers = {
            **self.headers,
            "Content-Type": "application/json",
            "Idempotency-Key": f"{call.call_sid}:{call_id}",
        }
        secret = self.backend.signing_secret
        if secret:
            timestamp = str(int(time.time()))
            headers[TIMESTAMP_HEADER] = timestamp
            headers[SIGNATURE_HEADER] = sign(secret, timestamp, body)
        try:
            async with self.backend.client.stream(
                self.method, self.url, content=body, headers=headers
            ) as response:
                raw = await _read_capped(response)
                status = response.status_code
        except httpx.TransportError as exc:
            raise ToolFailure(
                "connection_error",
                f"could not reach the {self.spec.name} service ({type(exc).__name__})",
                retryable=True,
            ) from None
        if not 200 <= status < 300:
            detail = _error_detail(raw)
            raise ToolFailure(
                "http_error",
                f"the {self.spec.name} service answered HTTP {status}"
                + (f": {detail}" if detail else ""),
                retryable=status in (408, 425, 429) or status >= 500,
            )
        if not raw.strip():
            return {"status": "ok"}
        try:
            answer = orjson.loads(raw)
        except orjson.JSONDecodeError:
            raise ToolFailure(
                "invalid_json",
                f"the {self.spec.name} service answered with something that is not JSON",
                retryable=False,
            ) from None
        return answer if isinstance(answer, dict) else {"result": answer}


async def _read_capped(response: httpx.Response) -> bytes:
    chunks: list[bytes] = []
    size = 0
    async for chunk in response.aiter_bytes():
        size += len(chunk)
        if size > MAX_RESPONSE_BYTES:
            raise ToolFailure(
                "too_large",
                f"the answer is larger than {MAX_RESPONSE_BYTES // 1024} KiB",
                retryable=False,
            )
        chunks.append(chunk)
    return b"".join(chunks)


def _error_detail(raw: bytes) -> str:
    """A short, printable reason from a failed answer's body (its ``error`` if JSON)."""
    try:
        doc = orjson.loads(raw)
    except orjson.JSONDecodeError:
        text = raw.decode("utf-8", "replace")
    else:
        text = str(doc.get("error", "")) if isinstance(doc, dict) else ""
    text = " ".join(text.split())
    return text[:_ERROR_CHARS]


# -- the tools file ---------------------------------------------------------------------------


def load_tools_file(path: Path, environ: Mapping[str, str], backend: HttpBackend) -> list[HttpTool]:
    """The tools a file defines. Raises ``ToolsFileError`` naming the tool and field."""
    try:
        size = path.stat().st_size
        if size > MAX_FILE_BYTES:
            raise ToolsFileError(f"{path}: larger than {MAX_FILE_BYTES // 1024} KiB")
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ToolsFileError(f"cannot read {path}: {exc}") from None
    doc = _parse(path, text)
    if not isinstance(doc, dict) or not isinstance(doc.get("tools"), list):
        raise ToolsFileError(f'{path}: expected {{"tools": [ … ]}} at the top')
    entries = doc["tools"]
    if len(entries) > MAX_TOOLS:
        raise ToolsFileError(f"{path}: {len(entries)} tools; at most {MAX_TOOLS}")
    tools = [_tool(path, i, entry, environ, backend) for i, entry in enumerate(entries)]
    seen: dict[str, int] = {}
    for i, tool in enumerate(tools):
        if tool.spec.name in seen:
            first = seen[tool.spec.name]
            raise ToolsFileError(
                f"{path}: tools[{i}] ({tool.spec.name}): the same name as tools[{first}]"
            )
        seen[tool.spec.name] = i
    return tools


def _parse(path: Path, text: str) -> Any:
    if path.suffix.lower() == ".json":
        try:
            return json.loads(text)
        except json.JSONDecodeError as exc:
            raise ToolsFileError(f"{path}: not valid JSON ({exc})") from None
    import yaml  # YAML is a superset of JSON: .yaml, .yml and anything else

    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ToolsFileError(f"{path}: not valid YAML ({' '.join(str(exc).split())})") from None


def _tool(
    path: Path, index: int, entry: Any, environ: Mapping[str, str], backend: HttpBackend
) -> HttpTool:
    where = f"{path}: tools[{index}]"
    if not isinstance(entry, dict):
        raise ToolsFileError(f"{where}: expected an object with name, description, …")
    if isinstance(entry.get("name"), str):
        where += f" ({entry['name']})"

    def bad(key: str, problem: str) -> ToolsFileError:
        return ToolsFileError(f"{where}.{key}: {problem}")

    unknown = sorted(set(entry) - _KEYS)
    if unknown:
        raise bad(unknown[0], f"unknown field (known: {', '.join(sorted(_KEYS))})")
    for key in _REQUIRED:
        if key not in entry:
            raise bad(key, "missing")
    name = entry["name"]
    if problem := check_name(name):
        raise bad("name", problem)
    description = entry["description"]
    if not isinstance(description, str) or not description.strip():
        raise bad("description", "expected a non-empty string (the model decides by it)")
    if len(description) > MAX_DESCRIPTION_CHARS:
        raise bad("description", f"longer than {MAX_DESCRIPTION_CHARS} characters")
    if problem := check_parameters(entry["parameters"]):
        raise ToolsFileError(f"{where}.{problem}")
    url = entry["url"]
    if not isinstance(url, str):
        raise bad("url", "expected a string")
    url = _expand(url, environ, lambda p: bad("url", p))
    parsed = httpx.URL(url)
    if parsed.scheme not in ("http", "https") or not parsed.host:
        raise bad("url", f"expected an http:// or https:// URL, got {url!r}")
    method = entry.get("method", "POST")
    if not isinstance(method, str) or method.upper() not in METHODS:
        raise bad("method", f"expected one of {', '.join(METHODS)} (the request has a JSON body)")
    headers_raw = entry.get("headers", {})
    if not isinstance(headers_raw, dict):
        raise bad("headers", "expected an object of header names to values")
    headers = {}
    for key, value in headers_raw.items():
        if not isinstance(value, (str, int)):
            raise bad(f"headers.{key}", "expected a string")
        headers[str(key)] = _expand(str(value), environ, lambda p, k=key: bad(f"headers.{k}", p))
    timeout = entry.get("timeout_s", 5)
    if isinstance(timeout, bool) or not isinstance(timeout, (int, float)):
        raise bad("timeout_s", f"expected a number of seconds, got {timeout!r}")
    if not 0 < timeout <= MAX_TIMEOUT_S:
        raise bad("timeout_s", f"expected more than 0 and at most {MAX_TIMEOUT_S:g}, got {timeout}")
    behavior = entry.get("behavior", "blocking")
    if behavior not in BEHAVIORS:
        raise bad("behavior", f"expected one of {', '.join(BEHAVIORS)}, got {behavior!r}")
    scheduling = entry.get("scheduling", "when_idle")
    if scheduling not in SCHEDULINGS:
        raise bad("scheduling", f"expected one of {', '.join(SCHEDULINGS)}, got {scheduling!r}")
    spec = ToolSpec(
        name=name,
        description=description.strip(),
        parameters=entry["parameters"],
        timeout_s=float(timeout),
        behavior=behavior,
        scheduling=scheduling,
        source=f"{path.name}: tools[{index}]",
    )
    return HttpTool(spec, url, backend, method.upper(), headers)


def _expand(value: str, environ: Mapping[str, str], bad: Any) -> str:
    def one(match: re.Match[str]) -> str:
        name = match.group(1)
        if name not in environ:
            raise bad(f"${{{name}}} is not set in the environment")
        return environ[name]

    return _VAR.sub(one, value)
