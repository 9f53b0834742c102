"""A protocol-accurate local Gemini Live API server. It is not a real model.

It speaks the Live API wire protocol over TLS WebSockets so that the real google-genai SDK can
talk to it, and answers like a simple conversational partner: caller speech is played back
(an echo), text cues are answered with a small synthetic voice, and barge-in, tool calls,
goAway, session resumption and faults can be scripted, or injected at random for soak runs
(:class:`FaultPlan`). Used in-process when no model credentials are configured, by end-to-end
and load tests, and standalone (``python -m agent.simulator``).
"""

from agent.simulator.behaviour import FaultPlan, SimBehaviour
from agent.simulator.player import AUDIO_TOKENS_PER_S
from agent.simulator.server import LiveSimulator
from agent.simulator.session import SimSession
from agent.simulator.standalone import main, run_standalone
from agent.simulator.utterances import Utterance

__all__ = [
    "AUDIO_TOKENS_PER_S",
    "FaultPlan",
    "LiveSimulator",
    "SimBehaviour",
    "SimSession",
    "Utterance",
    "main",
    "run_standalone",
]
