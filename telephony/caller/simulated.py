"""The sans-I/O caller: :class:`SimulatedCall` is Twilio's side of one Media Stream (frames
in, frames out, every method takes ``now``, no sockets and no event loop), and
:func:`simulated_call` builds one that replays a :class:`~telephony.caller.recordings.RecordedCall`
in a replay mode. The drivers (:mod:`telephony.caller.drive`, asyncio, and
:mod:`telephony.caller.drive_sync`, blocking) only move its frames.
"""

from __future__ import annotations

import bisect
import math
import uuid
from collections import deque
from collections.abc import Mapping, Sequence
from dataclasses import replace
from typing import Any, Final

from agent.vad import speech_segments
from telephony.audio import ulaw_8k_to_pcm16
from telephony.caller.recordings import RecordedCall
from telephony.caller.result import (
    SPURT_GAP_S,
    CallResult,
    ClearRecord,
    EchoRecord,
    EndReason,
    Note,
    assemble_heard,
    find_gaps,
    match_interruptions,
    merge_runs,
    response_turns,
    talk_spurts,
)
from telephony.caller.script import (
    EPS,
    GREETING_GAP_S,
    BargeIn,
    CallerTurn,
    ReplayMode,
    TurnTaking,
)
from telephony.twilio.media_stream import (
    DTMF_DIGITS,
    FRAME_BYTES,
    FRAME_MS,
    SAMPLE_RATE,
    ULAW_SILENCE,
    InboundBuilder,
    OutboundClear,
    OutboundMark,
    OutboundMedia,
    ProtocolError,
    UnknownEvent,
    parse_outbound,
)
from telephony.twilio.playback import MarkEcho, Playback, Played

__all__ = ["FRAME_S", "SimulatedCall", "simulated_call"]

FRAME_S: Final = FRAME_MS / 1000


def _new_sid(prefix: str) -> str:
    return prefix + uuid.uuid4().hex


class SimulatedCall:
    """Twilio's side of one Media Stream, without I/O.

    ``open(now)`` returns ``connected`` + ``start``; then call ``due(now)`` no later than
    ``next_wakeup()`` and ``receive(now, frame)`` for every server frame; each returns the
    frames to send. ``should_end(now)`` says when the caller hangs up; ``finish`` returns the
    ``stop``; ``server_closed`` records the server closing first. ``now`` is any monotonic
    clock in seconds.

    What the caller says: ``audio_ulaw`` after ``lead_silence_s``, at fixed times (realtime
    replay), with ``dtmf`` at their stream times; then ``turns``, each placed when
    ``turn_taking`` says (turn-aware replay); ``barge_in`` talks over the agent once.
    ``after_greeting_s`` is shorthand for ``turns=[CallerTurn(audio_ulaw)]`` with the greeting
    timeout it gives (and no wait for an answer at the end).
    """

    def __init__(
        self,
        audio_ulaw: bytes,
        *,
        stream_sid: str | None = None,
        call_sid: str | None = None,
        account_sid: str | None = None,
        custom_parameters: Mapping[str, str] | None = None,
        dtmf: Sequence[tuple[float, str]] = (),
        lead_silence_s: float = 0.0,
        linger_s: float = 3.0,
        max_duration_s: float = 120.0,
        barge_in: BargeIn | None = None,
        after_greeting_s: float | None = None,
        turns: Sequence[CallerTurn] = (),
        turn_taking: TurnTaking | None = None,
    ) -> None:
        if after_greeting_s is not None and turns:
            raise ValueError("after_greeting_s and turns are exclusive")
        for at, digit in [*dtmf, *((at, d) for turn in turns for at, d in turn.dtmf)]:
            if digit not in DTMF_DIGITS or at < 0:
                raise ValueError(f"bad DTMF entry {(at, digit)!r}")
        if lead_silence_s < 0 or linger_s < 0 or max_duration_s <= 0:
            raise ValueError("lead_silence_s and linger_s must be >= 0, max_duration_s > 0")
        self.stream_sid = stream_sid or _new_sid("MZ")
        self.call_sid = call_sid or _new_sid("CA")
        self._builder = InboundBuilder(
            self.stream_sid, self.call_sid, account_sid or _new_sid("AC")
        )
        self._params = dict(custom_parameters or {})
        self._track = bytearray(ULAW_SILENCE * round(lead_silence_s * SAMPLE_RATE))
        # Turns wait in _turns until turn-taking places them on the track; the caller holds
        # its words until the agent has spoken, like a person who listens first.
        self._turns: deque[CallerTurn] = deque(turns)
        self._taking = turn_taking or TurnTaking()
        if after_greeting_s is None:
            self._track += audio_ulaw
        else:
            self._turns.append(CallerTurn(audio_ulaw))
            self._taking = TurnTaking(
                think_s=GREETING_GAP_S, greeting_timeout_s=after_greeting_s, answer_timeout_s=0.0
            )
        self._turns_total = len(self._turns)
        self._answer_start: float | None = None  # of the answer the next turn waits for
        self._turn_start_s: float | None = None  # of the last turn placed
        self._turn_keys_done_s = 0.0
        self._dtmf = sorted(dtmf)
        self._last_dtmf_s = max((at for at, _ in dtmf), default=0.0)
        self._linger_s = linger_s
        self._max_duration_s = max_duration_s
        self._barge_in = barge_in
        self._playback = Playback()
        self._t0: float | None = None
        self._sent = bytearray()
        self._played: list[Played] = []
        self._spurt: tuple[float, float] | None = None
        self._last_media_s = -math.inf
        self._media_bytes = 0
        self._media_received: list[tuple[float, int]] = []
        self._max_lag_s = 0.0
        self._clears: list[ClearRecord] = []
        self._marks_received: list[tuple[float, str]] = []
        self._echoes: list[EchoRecord] = []
        self._dtmf_sent: list[tuple[float, str]] = []
        self._notes: list[Note] = []
        self._unknown = 0
        self._malformed = 0
        self._end_s: float | None = None
        self._ended_by: EndReason | None = None
        self._close_code: int | None = None
        self._close_reason = ""
        self._caller_done = False
        self._error = ""

    # -- state --------------------------------------------------------------------------------

    @property
    def started(self) -> bool:
        return self._t0 is not None

    @property
    def ended(self) -> bool:
        return self._ended_by is not None

    @property
    def frames_sent(self) -> int:
        return len(self._sent) // FRAME_BYTES

    @property
    def max_duration_s(self) -> float:
        return self._max_duration_s

    @property
    def opened_at(self) -> float | None:
        """The ``now`` given to :meth:`open` (stream start on the driver's clock)."""
        return self._t0

    def _t(self, now: float) -> float:
        if self._t0 is None:
            raise RuntimeError("call not opened")
        return now - self._t0

    def _note(self, t: float, text: str) -> None:
        self._notes.append(Note(t, text))

    # -- caller -> server ---------------------------------------------------------------------

    def open(self, now: float) -> list[str]:
        """Stream start: the ``connected`` and ``start`` frames."""
        if self._t0 is not None:
            raise RuntimeError("call already opened")
        self._t0 = now
        params = ", ".join(f"{k}={v}" for k, v in self._params.items())
        self._note(0.0, f"connected; start sent (callSid {self.call_sid}, params: {params or '-'})")
        return [self._builder.connected(), self._builder.start(self._params)]

    def next_wakeup(self) -> float:
        """Absolute time by which ``due`` must be called next (the next frame or DTMF)."""
        t0 = self._t0 if self._t0 is not None else 0.0
        at = (self.frames_sent + 1) * FRAME_S
        if self._dtmf:
            at = min(at, self._dtmf[0][0])
        return t0 + at

    def due(self, now: float) -> list[str]:
        """Frames due by ``now``: media (catching up if late, never drifting), DTMF, echoes."""
        t = self._t(now)
        out: list[str] = []
        if self.ended:
            return out
        # Playback first: turn-taking decides on what the caller has heard up to now.
        out += self._advance(t)
        self._release_turn(t)
        while True:
            frame_at = (self.frames_sent + 1) * FRAME_S
            dtmf_at = self._dtmf[0][0] if self._dtmf else math.inf
            if min(frame_at, dtmf_at) > t + EPS:
                break
            # How late this tick is: the load generator's own health (a late caller skews
            # every latency it measures).
            self._max_lag_s = max(self._max_lag_s, t - min(frame_at, dtmf_at))
            if dtmf_at <= frame_at:
                _, digit = self._dtmf.pop(0)
                out.append(self._builder.dtmf(digit))
                self._dtmf_sent.append((t, digit))
                self._note(t, f"dtmf {digit} sent")
            else:
                k = self.frames_sent
                frame = bytes(self._track[k * FRAME_BYTES : (k + 1) * FRAME_BYTES])
                frame += ULAW_SILENCE * (FRAME_BYTES - len(frame))
                # timestamp: when the frame's first sample was spoken, ms since stream start.
                out.append(self._builder.media(frame, k * FRAME_MS))
                self._sent += frame
        out += self._advance(t)
        return out

    def _answer_heard(self) -> bool:
        """The agent has answered the last turn: a talk spurt began after the turn began
        (before the first turn: any agent audio, the greeting). Audio of an earlier answer
        that goes on over the turn (no ``clear``) is not an answer to it."""
        if self._spurt is None:
            return False
        return self._turn_start_s is None or self._spurt[0] >= self._turn_start_s - EPS

    def _turn_done_s(self) -> float:
        """When the caller's last placed words (or keys of a turn) are out: turns wait for it.
        Fixed-time DTMF does not count, so ``--dtmf`` does not hold the caller's words back."""
        return max(len(self._track) / SAMPLE_RATE, self._turn_keys_done_s)

    def _awaiting_answer(self, t: float) -> bool:
        """The caller's last turn is out and its answer has neither started nor timed out."""
        if self._turns_total == 0 or self._turns or self._taking.answer_timeout_s <= 0:
            return False
        done = self._turn_done_s()
        return not self._answer_heard() and t < done + self._taking.answer_timeout_s - EPS

    def _release_turn(self, t: float) -> None:
        """Place the next turn on the track once turn-taking allows it (see TurnTaking)."""
        if not self._turns:
            return
        done = self._turn_done_s()
        if t < done - EPS:
            return  # still saying the previous turn
        taking = self._taking
        first = self._turn_start_s is None
        if not self._answer_heard():
            timeout = taking.greeting_timeout_s if first else taking.answer_timeout_s
            if t >= done + timeout - EPS:
                what = "greeting" if first else "answer"
                self._place_turn(t, f"no {what} after {timeout:g} s")
            return
        assert self._spurt is not None
        spurt_start, spurt_end = self._spurt
        if self._answer_start is None:
            self._answer_start = spurt_start
        if self._playback.idle and t >= spurt_end + taking.think_s - EPS:
            self._place_turn(spurt_end + taking.think_s, "")
        elif (
            taking.barge_in_after_s is not None
            and not first
            and spurt_end >= t - EPS  # the agent is audible right now
            and t >= self._answer_start + taking.barge_in_after_s - EPS
        ):
            self._place_turn(self._answer_start + taking.barge_in_after_s, "over the agent")

    def _place_turn(self, at_s: float, why: str) -> None:
        turn = self._turns.popleft()
        self._answer_start = None
        # Never before what was already said, and never in a frame that already left.
        floor = max(len(self._sent), len(self._track))
        words_at = max(floor, round(at_s * SAMPLE_RATE))
        lead = min(round(turn.lead_s * SAMPLE_RATE), len(turn.audio))
        at = max(floor, words_at - lead)
        self._track += ULAW_SILENCE * (at - len(self._track)) + turn.audio[lead - (words_at - at) :]
        start_s = self._turn_start_s = at / SAMPLE_RATE
        for offset, digit in turn.dtmf:
            bisect.insort(self._dtmf, (start_s + offset, digit))
            self._last_dtmf_s = max(self._last_dtmf_s, start_s + offset)
            self._turn_keys_done_s = max(self._turn_keys_done_s, start_s + offset)
        n = self._turns_total - len(self._turns)
        what = "caller starts talking" if turn.audio else "caller starts keying"
        turn_of = f"turn {n} of {self._turns_total}" if self._turns_total > 1 else ""
        detail = ", ".join(x for x in (turn_of, why) if x)
        self._note(start_s, what + (f" ({detail})" if detail else ""))

    def _advance(self, t: float) -> list[str]:
        played, echoes = self._playback.advance(t)
        self._on_played(played, t)
        return self._echo(t, echoes)

    def _on_played(self, played: list[Played], t: float) -> None:
        # Runs are merged once, in result(): merging per tick would copy the audio each time.
        self._played += played
        for run in played:
            if self._spurt is not None and run.start - self._spurt[1] < SPURT_GAP_S:
                self._spurt = (self._spurt[0], run.end)
            else:
                self._spurt = (run.start, run.end)
        barge = self._barge_in
        if (
            barge is not None
            and self._spurt is not None
            and t >= barge.not_before_s
            and self._spurt[1] >= t - EPS  # the agent is audible right now
            and t - self._spurt[0] >= barge.after_s
        ):
            self._barge_in = None
            at = max(len(self._sent), round(t * SAMPLE_RATE))
            end = at + len(barge.audio)
            if len(self._track) < end:
                self._track += ULAW_SILENCE * (end - len(self._track))
            self._track[at:end] = barge.audio
            self._note(at / SAMPLE_RATE, "caller barges in")

    def _echo(self, t: float, echoes: list[MarkEcho]) -> list[str]:
        out: list[str] = []
        for echo in echoes:
            out.append(self._builder.mark(echo.name))
            self._echoes.append(EchoRecord(echo.name, echo.time, t, echo.cleared))
            how = " (flushed by clear)" if echo.cleared else ""
            self._note(t, f"mark {echo.name!r} echoed{how}")
        return out

    # -- server -> caller ---------------------------------------------------------------------

    def receive(self, now: float, frame: str | bytes) -> list[str]:
        """Handle one server frame; return the mark echoes it caused."""
        t = self._t(now)
        if self.ended:
            return []
        # Bring playback up to now first, so new audio queues behind what really is left.
        out = self._advance(t)
        if isinstance(frame, bytes):
            self._malformed += 1
            self._note(t, f"binary frame ({len(frame)} bytes) ignored")
            return out
        try:
            event = parse_outbound(frame)
        except UnknownEvent as exc:
            self._unknown += 1
            self._note(t, f"unknown event {exc.event!r} ignored")
            return out
        except ProtocolError as exc:
            self._malformed += 1
            self._note(t, f"malformed frame ignored: {exc}")
            return out
        if event.stream_sid != self.stream_sid:
            self._malformed += 1
            self._note(t, f"frame for another stream {event.stream_sid!r} ignored")
            return out
        if isinstance(event, OutboundMedia):
            self._media_received.append((t, self._media_bytes))
            self._playback.push_media(t, event.payload)
            self._media_bytes += len(event.payload)
            if event.payload:
                self._last_media_s = t
        elif isinstance(event, OutboundMark):
            self._playback.push_mark(t, event.name)
            self._marks_received.append((t, event.name))
            self._note(t, f"mark {event.name!r} received")
        elif isinstance(event, OutboundClear):
            dropped = self._playback.queued_bytes / SAMPLE_RATE
            played, echoes = self._playback.clear(t)
            self._on_played(played, t)
            marks = tuple(e.name for e in echoes if e.cleared)
            self._clears.append(ClearRecord(t, dropped, marks))
            self._note(t, f"clear received: {dropped * 1000:.0f} ms of agent audio dropped")
            out += self._echo(t, echoes)
        return out + self._advance(t)

    # -- the end ------------------------------------------------------------------------------

    def caller_done_s(self) -> float:
        """Stream time when the caller's audio and DTMF are all out (grows on barge-in)."""
        return max(len(self._track) / SAMPLE_RATE, self._last_dtmf_s)

    def should_end(self, now: float) -> EndReason | None:
        """``caller`` once the caller is done and the agent has been quiet for ``linger_s``;
        ``max_duration`` at the limit; else None."""
        t = self._t(now)
        if self.ended:
            return None
        if t >= self._max_duration_s - EPS:
            return "max_duration"
        if (
            self._turns
            or len(self._sent) < len(self._track)
            or self._dtmf
            or not self._playback.idle
            or self._awaiting_answer(t)
        ):
            return None
        spurt_end = self._spurt[1] if self._spurt is not None else -math.inf
        quiet_since = max(self.caller_done_s(), spurt_end, self._last_media_s)
        return "caller" if t >= quiet_since + self._linger_s - EPS else None

    def finish(self, now: float, reason: EndReason = "caller") -> list[str]:
        """The caller ends the call: the ``stop`` frame (the socket is closed after it)."""
        t = self._t(now)
        if self.ended:
            return []
        self._advance(t)  # echoes due now would arrive after stop: Twilio drops them too
        self._end(t, reason)
        self._note(t, f"stop sent ({reason})")
        return [self._builder.stop()]

    def server_closed(self, now: float, code: int | None, reason: str) -> None:
        """The socket closed; when the caller had not ended the call, the server did."""
        t = self._t(now) if self._t0 is not None else 0.0
        self._close_code, self._close_reason = code, reason
        if not self.ended:
            if self._t0 is not None:
                self._advance(t)
            self._end(t, "server")
            self._note(
                t, f"server closed the socket (code {code}{', ' + reason if reason else ''})"
            )

    def abort(self, now: float, why: str) -> None:
        """The call broke off (I/O error, overall timeout)."""
        if not self.ended:
            t = self._t(now) if self._t0 is not None else 0.0
            self._end(t, "error")
            self._error = why
            self._note(t, f"call aborted: {why}")

    def _end(self, t: float, reason: EndReason) -> None:
        self._end_s = t
        self._ended_by = reason
        # Done when nothing the caller meant to say is left: unsent silence (the quiet end
        # of a recording, say) does not count.
        rest = ulaw_8k_to_pcm16(self._track[len(self._sent) :])
        self._caller_done = (
            not self._turns and not self._dtmf and not speech_segments(rest, SAMPLE_RATE)
        )

    def result(self) -> CallResult:
        """The call as the caller experienced it (call after it ended)."""
        end_s = self._end_s if self._end_s is not None else 0.0
        length = max(len(self._sent), round(end_s * SAMPLE_RATE))
        caller_audio = bytes(self._sent) + ULAW_SILENCE * (length - len(self._sent))
        segments = speech_segments(ulaw_8k_to_pcm16(caller_audio), SAMPLE_RATE)
        played = merge_runs(self._played)
        spurts = talk_spurts(played)
        gaps = find_gaps(
            played,
            segments,
            [c.time_s for c in self._clears],
            [at for at, _ in self._dtmf_sent],
        )
        return CallResult(
            call_sid=self.call_sid,
            stream_sid=self.stream_sid,
            duration_s=length / SAMPLE_RATE,
            ended_by=self._ended_by or "error",
            caller_audio=caller_audio,
            heard_audio=assemble_heard(played, length),
            played=played,
            time_to_first_audio_s=played[0].start if played else None,
            caller_segments=segments,
            agent_spurts=spurts,
            turns=response_turns(segments, spurts),
            interruptions=match_interruptions(segments, spurts, self._clears),
            clears=list(self._clears),
            marks_received=list(self._marks_received),
            marks_echoed=list(self._echoes),
            dtmf_sent=list(self._dtmf_sent),
            frames_sent=self.frames_sent,
            media_bytes_received=self._media_bytes,
            unknown_frames=self._unknown,
            malformed_frames=self._malformed,
            close_code=self._close_code,
            close_reason=self._close_reason,
            notes=list(self._notes),
            media_received=list(self._media_received),
            started_at=self._t0 if self._t0 is not None else 0.0,
            gaps=gaps,
            max_send_lag_s=self._max_lag_s,
            caller_done=self._caller_done,
            error=self._error,
        )


def simulated_call(
    recording: RecordedCall,
    mode: ReplayMode,
    *,
    turn_taking: TurnTaking | None = None,
    turns: Sequence[CallerTurn] | None = None,
    custom_parameters: Mapping[str, str] | None = None,
    call_sid: str | None = None,
    stream_sid: str | None = None,
    account_sid: str | None = None,
    linger_s: float = 3.0,
    max_duration_s: float = 120.0,
) -> SimulatedCall:
    """A :class:`SimulatedCall` that replays ``recording`` in ``mode``.

    ``realtime``: the caller's track and key presses exactly as recorded, from stream start.
    ``turns``/``barge-in``: the recording's turns (``turns``, default
    :meth:`RecordedCall.turns`) placed by ``turn_taking``; ``barge-in`` talks over each
    answer after ``turn_taking.barge_in_after_s`` (0.5 s when unset), ``turns`` never does.
    The recording's ``custom_parameters`` go into ``start`` unless others are given.
    """
    common: dict[str, Any] = {
        "custom_parameters": (
            recording.custom_parameters if custom_parameters is None else custom_parameters
        ),
        "call_sid": call_sid,
        "stream_sid": stream_sid,
        "account_sid": account_sid,
        "linger_s": linger_s,
        "max_duration_s": max_duration_s,
    }
    if mode == "realtime":
        return SimulatedCall(recording.audio, dtmf=recording.dtmf, **common)
    taking = turn_taking or TurnTaking()
    if mode == "barge-in" and taking.barge_in_after_s is None:
        taking = replace(taking, barge_in_after_s=0.5)
    elif mode == "turns" and taking.barge_in_after_s is not None:
        taking = replace(taking, barge_in_after_s=None)
    script = recording.turns() if turns is None else turns
    return SimulatedCall(b"", turns=script, turn_taking=taking, **common)
