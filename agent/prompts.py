"""Every sentence we tell the model, in one place (the persona's own text is configuration).

The Live API has no "system event" message: the call tells the model what happened (the call
was answered, a key was pressed, the caller is silent, time is running out) as text. Keeping
the wording here makes it reviewable as a whole and lets the simulator recognise its cues.
"""

from __future__ import annotations

from typing import Final

__all__ = [
    "KNOWLEDGE_FAILED_NOTE",
    "KNOWLEDGE_FOUND_NOTE",
    "KNOWLEDGE_NONE_NOTE",
    "KNOWLEDGE_QUERY_DESCRIPTION",
    "KNOWLEDGE_TOOL_DESCRIPTION",
    "NUDGE",
    "SILENT_GOODBYE_PROMPT",
    "STILL_THERE_PROMPT",
    "dtmf_prompt",
    "greeting_prompt",
    "outbound_greeting_prompt",
    "primed_instructions",
    "wrap_up_prompt",
]

#: The stall watchdog's cue when the caller finished a turn and the model said nothing.
NUDGE: Final = "(The caller has finished speaking and is waiting for your answer. Please respond.)"
STILL_THERE_PROMPT: Final = (
    "The caller has not said anything for a while. Ask briefly whether they are still there."
)
SILENT_GOODBYE_PROMPT: Final = "The caller is not answering. Say a short, friendly goodbye."


#: How the wrap-up instruction begins (the simulator tells it from the caller's words).
WRAP_UP_LEAD: Final = "This call must end in about"


def wrap_up_prompt(seconds_left: int) -> str:
    return (
        f"{WRAP_UP_LEAD} {seconds_left} seconds. Wrap up politely now: tell the "
        "caller the call is ending, then say goodbye."
    )


def greeting_prompt(greeting: str) -> str:
    """The opening instruction that makes the agent speak first."""
    return f'The call has just been answered. Greet the caller now. Say exactly: "{greeting}"'


def outbound_greeting_prompt(greeting: str) -> str:
    """The cue for an outbound call, sent once the person who picked up has answered."""
    return (
        "You placed this phone call and the person has just answered. Introduce yourself "
        f'now. Say exactly: "{greeting}"'
    )


def primed_instructions(instructions: str, history: str) -> str:
    """The system instruction of a fresh session that continues an interrupted call."""
    return (
        f"{instructions}\n\n"
        "This phone call is already in progress: the connection to you was interrupted and "
        "has just been restored. Do not greet the caller again; continue the conversation "
        "naturally from where it stopped. The conversation so far:\n"
        f"{history}"
    )


def dtmf_prompt(digit: str) -> str:
    return f"The caller pressed {digit} on their keypad."


# --- search_knowledge (agent.knowledge.tool) -------------------------------------------------

KNOWLEDGE_TOOL_DESCRIPTION: Final = (
    "Search the business's own documents (FAQ, policies, prices, opening hours, procedures) "
    "for facts the caller asks about. Call it before answering any question about the "
    "business, with the caller's question in a few words. Answer only from the passages it "
    "returns, briefly and in your own words."
)
KNOWLEDGE_QUERY_DESCRIPTION: Final = "The caller's question, in a few words."
KNOWLEDGE_FOUND_NOTE: Final = (
    "Answer from these passages only, in a sentence or two. If they do not answer the "
    "question, say you don't have that information."
)
KNOWLEDGE_NONE_NOTE: Final = (
    "Nothing in the documents matches. Searching again with other words will not help: "
    "tell the caller you don't have that information."
)
KNOWLEDGE_FAILED_NOTE: Final = (
    "The documents cannot be searched right now. Tell the caller you cannot look that up "
    "at the moment."
)
