"""The simulator's small dialogue policy. NOT A REAL MODEL: a few deterministic rules.

With ``SimBehaviour(dialogue="converse")`` the simulator answers what it *recognised* the
caller say (:mod:`agent.simulator.recognizer`), or what was typed, by these rules, first match
wins:

1. a goodbye ("bye", "goodbye") → say goodbye, then call ``end_call`` if it is declared;
2. a word of a declared tool's name, or two words of its description → call that tool (its
   required string parameters get the caller's words) and speak what comes back;
3. ``search_knowledge`` is declared → call it with the caller's words; speak the first passage's
   first sentence(s) (bounded), or, with nothing found, fall through;
4. otherwise → "You said: …".

A tool declared ``NON_BLOCKING`` is called as the real model does: the conversation goes on
("Let me check that for you.") while it runs, and its response is spoken as its
``scheduling`` says: ``WHEN_IDLE`` once the agent has finished what it is saying,
``INTERRUPT`` at once (cutting that short), ``SILENT`` not at all.

Pure: :func:`decide` says what to do; the session runs it through the real tool-call protocol
and :func:`speakable` turns a function response into a sentence.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final

from agent.simulator.wire import JsonDict
from agent.simulator.wire import field as wfield
from agent.stopwords import STOPWORDS

__all__ = [
    "CHECKING",
    "GOODBYE",
    "NOTHING_HEARD",
    "Plan",
    "behavior",
    "content_words",
    "decide",
    "scheduling",
    "speakable",
    "you_said",
]

END_CALL: Final = "end_call"
SEARCH_KNOWLEDGE: Final = "search_knowledge"
_BUILTIN: Final = frozenset({END_CALL, SEARCH_KNOWLEDGE, "transfer_call"})

GOODBYE: Final = "Goodbye, and thank you for calling."
#: Said while a NON_BLOCKING tool runs (the conversation goes on meanwhile).
CHECKING: Final = "Let me check that for you."
NOTHING_HEARD: Final = "Sorry, I did not catch that."
#: Fields of a tool's response about the call itself, not worth reading out.
_IDENTITY: Final = frozenset({"caller", "callee", "call_sid", "stream_sid"})
#: The most of a function response spoken in one answer.
MAX_SPOKEN_CHARS: Final = 240

_GOODBYE: Final = re.compile(r"\b(good\s*-?\s*bye|bye(\s*bye)?|farewell)\b", re.IGNORECASE)
_WORDS: Final = re.compile(r"[a-z0-9']+")
_SENTENCE_END: Final = re.compile(r"(?<=[.!?])\s+")
#: Words too common to say which tool or passage the caller means: function words, and the
#: words every tool description and phone call shares.
_STOPWORDS: Final = STOPWORDS | {
    "call",
    "calls",
    "caller",
    "function",
    "get",
    "let",
    "like",
    "okay",
    "please",
    "return",
    "returns",
    "say",
    "tool",
    "use",
    "used",
    "using",
    "yes",
}


@dataclass(frozen=True, slots=True)
class Plan:
    """What to do about one caller turn: ``say`` first (may be empty), then call ``tool``
    with ``args``; ``then_say`` is spoken after a call that returns nothing speakable."""

    say: str = ""
    tool: str | None = None
    args: JsonDict = field(default_factory=dict)
    then_say: str = ""


def content_words(text: str) -> list[str]:
    """The words of ``text`` that carry meaning (lower case, function words dropped)."""
    return [w for w in _WORDS.findall(text.lower()) if w not in _STOPWORDS and len(w) > 1]


def you_said(text: str) -> str:
    text = " ".join(text.split()).rstrip(".!?")
    return f"You said: {text}." if text else NOTHING_HEARD


def _declarations(tools: Sequence[JsonDict]) -> list[JsonDict]:
    out: list[JsonDict] = []
    for tool in tools:
        for decl in wfield(tool, "function_declarations") or []:
            if isinstance(decl, dict) and isinstance(wfield(decl, "name"), str):
                out.append(decl)
    return out


def _name_words(name: str) -> set[str]:
    spaced = re.sub(r"(?<=[a-z0-9])(?=[A-Z])", " ", name).replace("_", " ").replace("-", " ")
    return set(content_words(spaced))


def _args_for(decl: JsonDict, text: str) -> JsonDict | None:
    """Arguments for a call: a required parameter with a set of values (an ``enum``) gets the
    one the caller said; any other required string parameter gets the caller's words.
    ``None`` when one cannot be filled honestly (no value said, or not a string)."""
    params = wfield(decl, "parameters") or wfield(decl, "parameters_json_schema") or {}
    props = wfield(params, "properties") or {}
    required = wfield(params, "required") or []
    said = set(_WORDS.findall(text.lower()))
    args: JsonDict = {}
    for name in required if isinstance(required, list) else []:
        prop = props.get(name, {}) if isinstance(props, dict) else {}
        kind = str(wfield(prop, "type") or "").lower()
        choices = wfield(prop, "enum")
        if isinstance(choices, list) and choices:
            picked = [c for c in choices if str(c).lower() in said]
            if len(picked) != 1:
                return None
            args[name] = picked[0]
        elif kind == "string":
            args[name] = text
        else:
            return None
    return args


def decide(text: str, tools: Sequence[JsonDict]) -> Plan:
    """The plan for a caller turn whose words were ``text``, given the declared tools."""
    text = " ".join(text.split())
    if not text:
        return Plan(say=NOTHING_HEARD)
    decls = _declarations(tools)
    names = {wfield(d, "name") for d in decls}
    if _GOODBYE.search(text):
        if END_CALL in names:
            return Plan(say=GOODBYE, tool=END_CALL, args={"reason": "the caller said goodbye"})
        return Plan(say=GOODBYE)
    heard = set(content_words(text))
    best: tuple[int, JsonDict] | None = None
    for decl in decls:
        name = wfield(decl, "name")
        if name in _BUILTIN:
            continue
        description = wfield(decl, "description")
        by_name = len(heard & _name_words(name))
        by_text = len(
            heard & set(content_words(description if isinstance(description, str) else ""))
        )
        score = 2 * by_name + by_text
        if (by_name or by_text >= 2) and (best is None or score > best[0]):
            best = (score, decl)
    if best is not None and (args := _args_for(best[1], text)) is not None:
        return Plan(tool=wfield(best[1], "name"), args=args, then_say="Done.")
    if SEARCH_KNOWLEDGE in names and heard:
        return Plan(tool=SEARCH_KNOWLEDGE, args={"query": text}, then_say=you_said(text))
    return Plan(say=you_said(text))


def behavior(name: str, tools: Sequence[JsonDict]) -> str:
    """The declared ``behavior`` of tool ``name``: ``"NON_BLOCKING"`` or ``"BLOCKING"``."""
    for decl in _declarations(tools):
        if wfield(decl, "name") == name:
            value = wfield(decl, "behavior")
            return "NON_BLOCKING" if str(value).upper().endswith("NON_BLOCKING") else "BLOCKING"
    return "BLOCKING"


def scheduling(response: Mapping[str, Any]) -> str:
    """How a NON_BLOCKING tool's response is to be used: ``"INTERRUPT"``, ``"WHEN_IDLE"``
    (the default) or ``"SILENT"``, as the function response says."""
    value = str(wfield(dict(response), "scheduling") or "WHEN_IDLE").upper()
    for known in ("INTERRUPT", "SILENT", "WHEN_IDLE"):
        if value.endswith(known):
            return known
    return "WHEN_IDLE"


def first_sentences(text: str, limit: int = MAX_SPOKEN_CHARS) -> str:
    """The first sentence(s) of ``text``, at most ``limit`` characters (cut at a word)."""
    text = " ".join(re.sub(r"[#*_`>|]+", " ", text).split())
    out = ""
    for sentence in _SENTENCE_END.split(text):
        if out and len(out) + 1 + len(sentence) > limit:
            break
        out = f"{out} {sentence}".strip()
        if len(out) >= limit // 2:
            break
    if len(out) > limit:
        out = out[:limit].rsplit(" ", 1)[0] + "…"
    return out


def speakable(response: Mapping[str, Any]) -> str:
    """A sentence from a function response: a knowledge passage, or the response's own words
    (``""`` when there is nothing worth saying: ``no_results``, errors, empty)."""
    body = response.get("response", response)
    if not isinstance(body, Mapping):
        return ""
    passages = body.get("passages")
    if isinstance(passages, list) and passages and isinstance(passages[0], Mapping):
        return first_sentences(str(passages[0].get("text", "")))
    if body.get("result") in ("no_results", "error") or "error" in body:
        return ""
    for key in ("answer", "message", "text", "output", "result", "status"):
        value = body.get(key)
        if isinstance(value, str) and value.strip() and value != "ok":
            return first_sentences(value)
    # Otherwise its plain values, named: "day saturday, hours 9 am to 1 pm".
    named = [
        f"{key.replace('_', ' ')} {value}"
        for key, value in body.items()
        if isinstance(key, str)
        and key not in _IDENTITY
        and isinstance(value, str | int | float)
        and not isinstance(value, bool)
        and str(value).strip()
    ]
    return first_sentences(", ".join(named) + ".") if named else ""
