"""What the agent said on a simulated call, read back from the server's call record, and
whether it said what was expected.

The caller side of a call hears only audio; the agent's words are in the server's record of
the call (the model's own output transcription, cut to what the caller heard when they
talked over it). :func:`fetch_record` reads it from the operator API (``GET /calls/{sid}``,
``Authorization: Bearer <API_TOKEN>``), waiting for the record to be final: the server
writes it once the call has ended, a moment after the stream closes.

An expectation is a phrase the agent must say: :func:`said` matches its words, in order, in
the agent's words, case, punctuation and spacing aside (``"9 am"`` matches ``"… at 9 a.m.
…"``; numbers are not spelled out, so ``"9"`` does not match ``"nine"``). A recording's own
expectations sit beside it (:func:`expectations_for`): ``call.wav`` → ``call.expect``, a
recorded call directory → its ``expect`` file; one phrase per line, ``#`` starts a comment.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Final
from urllib.parse import urlsplit, urlunsplit

import httpx

from telephony.errors import TelephonyError

__all__ = [
    "RecordUnavailable",
    "agent_words",
    "api_base",
    "expectations_for",
    "fetch_record",
    "missed",
    "said",
    "words",
]

#: The most of an expectations file read (it is a few phrases).
MAX_EXPECT_BYTES: Final = 64 * 1024
_WORD: Final = re.compile(r"[0-9a-z']+")


class RecordUnavailable(TelephonyError):
    """The server's record of a call could not be read (API off, token refused, not found
    in time, or the server unreachable)."""


def api_base(url: str) -> str:
    """The operator API's base URL on the server behind a webhook or Media Stream URL
    (``wss://host/twilio/media`` → ``https://host``)."""
    parts = urlsplit(url)
    scheme = {"ws": "http", "wss": "https"}.get(parts.scheme, parts.scheme)
    if scheme not in ("http", "https") or not parts.netloc:
        raise ValueError(f"cannot tell the server's address from {url!r}")
    return urlunsplit((scheme, parts.netloc, "", "", ""))


def words(text: str) -> list[str]:
    """Lower-case words with dots inside them dropped (``"a.m."`` → ``"am"``)."""
    return _WORD.findall(re.sub(r"(?<=\w)\.(?=\w)", "", text.lower()).replace("\u2019", "'"))


def said(expected: str, spoken: str) -> bool:
    """Whether ``expected``'s words occur, in order and together, in ``spoken``."""
    want, have = words(expected), words(spoken)
    if not want:
        return True
    n = len(want)
    return any(have[i : i + n] == want for i in range(len(have) - n + 1))


def missed(expected: Sequence[str], spoken: str) -> list[str]:
    """The expected phrases the agent did not say."""
    return [phrase for phrase in expected if not said(phrase, spoken)]


def agent_words(record: Mapping[str, Any]) -> str:
    """Everything the caller heard the agent say on a call (from its record's transcript)."""
    entries = record.get("transcript") or []
    return " ".join(
        str(e.get("text", "")).strip()
        for e in entries
        if isinstance(e, Mapping) and e.get("role") == "agent" and e.get("text")
    )


def expectations_for(recording: Path) -> tuple[str, ...]:
    """The phrases a recording's answer must contain, from the file beside it (none: ``()``)."""
    path = recording / "expect" if recording.is_dir() else recording.with_suffix(".expect")
    try:
        with path.open("rb") as f:
            raw = f.read(MAX_EXPECT_BYTES + 1)
    except FileNotFoundError:
        return ()
    if len(raw) > MAX_EXPECT_BYTES:
        raise ValueError(f"{path}: larger than {MAX_EXPECT_BYTES} bytes")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ValueError(f"{path}: not UTF-8 text ({exc})") from None
    lines = (line.split("#", 1)[0].strip() for line in text.splitlines())
    return tuple(line for line in lines if line)


async def fetch_record(
    client: httpx.AsyncClient,
    base_url: str,
    call_sid: str,
    token: str,
    *,
    timeout_s: float = 10.0,
    poll_s: float = 0.25,
) -> dict[str, Any]:
    """The server's final record of ``call_sid``, polled until it has ended.

    Raises :class:`RecordUnavailable` with the reason when the API is off, refuses the
    token, or has no final record within ``timeout_s``.
    """
    url = f"{base_url.rstrip('/')}/calls/{call_sid}"
    headers = {"Authorization": f"Bearer {token}"}
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    last = "no record yet"
    while True:
        left = deadline - loop.time()
        try:
            response = await client.get(url, headers=headers, timeout=max(0.5, min(5.0, left)))
        except httpx.HTTPError as exc:
            last = f"{type(exc).__name__}: {exc}"
        else:
            if response.status_code in (401, 403):
                raise RecordUnavailable(
                    f"the server refused the API token ({response.status_code}): pass the "
                    "server's API_TOKEN"
                )
            if response.status_code == 503:
                raise RecordUnavailable(
                    "the server's operator API is off (start it with API_TOKEN set)"
                )
            if response.status_code == 200:
                record: dict[str, Any] = response.json()
                if record.get("outcome") != "in_progress" and record.get("ended_at"):
                    return record
                last = "the call is still in progress"
            elif response.status_code != 404:
                last = f"HTTP {response.status_code}"
        if loop.time() + poll_s > deadline:
            raise RecordUnavailable(f"no final record of {call_sid} in {timeout_s:g} s ({last})")
        await asyncio.sleep(poll_s)
