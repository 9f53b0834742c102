"""Caller simulator: places a call against a running server exactly as Twilio would.

It connects to the server's Media Streams WebSocket, sends ``connected`` and ``start``, then
one 160-byte μ-law frame every 20 ms on an absolute schedule (the caller's audio, silence when
the caller is not talking), DTMF at the scheduled times and ``stop`` at the end. What the
server sends back goes through Twilio's playback buffer (:mod:`telephony.twilio.playback`);
marks are echoed when the audio before them has played. The result says what the caller heard
and when.

Modules, one concept each, so that the load tester (:mod:`telephony.loadtest`) reuses the
middle ones (imports point down this list, never at the CLI):

- :mod:`~telephony.caller.script`: what the caller says and when (:class:`CallerTurn`,
  :func:`split_turns`, :class:`TurnTaking`, :class:`BargeIn`), pure;
- :mod:`~telephony.caller.recordings`: audio files and calls our server recorded, read as
  :class:`RecordedCall`;
- :mod:`~telephony.caller.result`: :class:`CallResult`; :func:`talk_spurts`,
  :func:`response_turns`, :func:`match_interruptions`, :func:`find_gaps` and
  :func:`assemble_heard` are the pure bookkeeping behind it;
- :mod:`~telephony.caller.simulated`: :class:`SimulatedCall` is sans-I/O: frames in, frames
  out, every method takes ``now``;
- :mod:`~telephony.caller.drive`: :func:`open_stream` + :func:`drive_call` (asyncio;
  :func:`run_call` and :func:`place_call` wrap them) only move frames between a WebSocket and
  a :class:`SimulatedCall`;
- :mod:`~telephony.caller.drive_sync`: the Locust integration drives the same object
  synchronously (``websockets.sync``, for gevent); not imported here, its users import it;
- :mod:`~telephony.caller.answers`: what the agent said, read back from the server's call
  record, and expected phrases checked against it (the CLI and the load tester); not
  imported here either;
- :mod:`~telephony.caller.cli`: ``voice-agent call``.

Time zero everywhere in a result is the moment ``start`` was sent (stream start). Caller
audio at byte ``i`` of the track is spoken at ``i / 8000`` s; the frame carrying it leaves
when the frame is complete, 20 ms after its first sample, as a phone would send it.

What the caller says comes from audio files or from calls our server recorded
(``RECORD_CALLS``): :func:`load_recording` reads either as a :class:`RecordedCall`. It is
replayed exactly as recorded (``realtime``), or turn by turn: :func:`split_turns` cuts it
into :class:`CallerTurn` objects and :class:`TurnTaking` says when each one starts (after
the agent's answer has played, or over it, for barge-in). :func:`simulated_call` builds
the call for a replay mode.

The public names of those modules are re-exported here (``from telephony.caller import
place_call``).
"""

from __future__ import annotations

from telephony.caller.cli import main
from telephony.caller.drive import (
    CallFailed,
    connect_failure,
    connect_headers,
    drive_call,
    open_stream,
    place_call,
    run_call,
    signature_url_for,
    websocket_url,
)
from telephony.caller.recordings import (
    RecordedCall,
    RecordingError,
    load_caller_audio,
    load_recorded_call,
    load_recording,
)
from telephony.caller.result import (
    AudioGap,
    CallResult,
    ClearRecord,
    EchoRecord,
    Interruption,
    Note,
    ResponseTurn,
    assemble_heard,
    find_gaps,
    match_interruptions,
    merge_runs,
    response_turns,
    talk_spurts,
    write_wav,
)
from telephony.caller.script import (
    SIMULATED_FROM,
    SIMULATED_TO,
    BargeIn,
    CallerTurn,
    ReplayMode,
    TurnTaking,
    caller_identity,
    split_turns,
)
from telephony.caller.simulated import SimulatedCall, simulated_call

__all__ = [
    "SIMULATED_FROM",
    "SIMULATED_TO",
    "AudioGap",
    "BargeIn",
    "CallFailed",
    "CallResult",
    "CallerTurn",
    "ClearRecord",
    "EchoRecord",
    "Interruption",
    "Note",
    "RecordedCall",
    "RecordingError",
    "ReplayMode",
    "ResponseTurn",
    "SimulatedCall",
    "TurnTaking",
    "assemble_heard",
    "caller_identity",
    "connect_failure",
    "connect_headers",
    "drive_call",
    "find_gaps",
    "load_caller_audio",
    "load_recorded_call",
    "load_recording",
    "main",
    "match_interruptions",
    "merge_runs",
    "open_stream",
    "place_call",
    "response_turns",
    "run_call",
    "signature_url_for",
    "simulated_call",
    "split_turns",
    "talk_spurts",
    "websocket_url",
    "write_wav",
]
