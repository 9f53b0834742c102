"""Locust integration: the load test's calls as a Locust ``User``, for load beyond one machine.

Run it like any locustfile (``-f`` takes this file's path); Locust's master/worker mode
spreads the users over machines (each worker needs the package and the recordings)::

    locust -f "$(python -c 'import telephony.loadtest.locust_user as m; print(m.__file__)')" \\
        --headless --master --expect-workers 4 -u 200 -r 5 -t 10m --csv stats \\
        --va-webhook https://agent.example.com/twilio/voice --va-recordings 'calls/*' \\
        --va-auth-token "$TWILIO_AUTH_TOKEN"
    # on each worker machine, the same -f, plus: --worker --master-host MASTER

Each user is one phone line placing calls back to back (``--va-pause`` seconds apart). A call
is exactly what ``voice-agent loadtest`` places: the same :class:`Scenario` (recordings,
replay mode, turn-taking), the same webhook flow and signing (:mod:`.target`), the same
Twilio wire format and playback emulation (:class:`telephony.caller.SimulatedCall`) and the
same measures (:func:`.metrics.record_call`), driven synchronously by
:mod:`telephony.caller.drive_sync` because Locust runs users as gevent greenlets (see there).
Measures reach Locust's statistics as ``request_type="call"`` entries, in milliseconds:

- ``greeting`` (one per call), ``response_latency`` (one per answered turn; an unanswered
  turn is a failure), ``barge_in_latency`` (a barge-in without ``clear`` is a failure),
  ``audio_gap`` (one per gap), ``connect`` (webhook + handshake);
- ``caller_send_lag``: the latest this worker sent a caller frame in the call, its own
  health: when it grows past ~20 ms the worker is overloaded and its latencies are inflated;
- ``call``: the whole call, failed with the failure kind when the call failed
  (``closed_abnormally: close code 1011``…), like a failed HTTP request.

Configuration: the ``--va-*`` options below (Locust passes them from the master to its
workers), or the same names as environment variables (``VA_RECORDINGS``…). Locust's ``--host``
works as the target too (``ws://…`` = Media Stream URL, anything else = webhook).

Importing this module imports Locust, which monkey-patches the whole process for gevent:
import it only in a Locust process.
"""

from __future__ import annotations

import functools
import itertools
import logging
import os
import random
import shlex
import time
from dataclasses import dataclass
from typing import Any

import httpx

try:
    from locust import User, constant, events, task
    from locust import argument_parser as locust_arguments
    from locust.env import Environment
except ModuleNotFoundError as exc:  # Locust comes with the loadtest extra only
    if exc.name != "locust" and not (exc.name or "").startswith("locust."):
        raise
    raise ModuleNotFoundError(
        "the Locust integration needs Locust: pip install 'gemini-phone-agent[loadtest]' "
        "(voice-agent loadtest itself does not)",
        name=exc.name,
    ) from exc

from telephony.caller import CallFailed, TurnTaking
from telephony.caller.drive_sync import run_call_sync
from telephony.errors import TelephonyError
from telephony.loadtest.metrics import CallRecord, failed_record, record_call
from telephony.loadtest.scenario import Scenario, expand_recordings, load_scripts
from telephony.loadtest.target import DialFailed, Target, dial_sync

__all__ = ["CallError", "VoiceCallUser", "fire_measures"]


_OPTIONS: list[str] = []

# Workaround for a Locust (2.x) cost that shows up as caller lag: on every spawn message a
# worker rebuilds Locust's whole argument parser once per option (runners.py:
# ``k not in argument_parser.default_args_dict()`` inside a comprehension), ~1.3 ms x ~70
# options = ~90 ms with the gevent hub blocked, so every call in progress sent its frames that
# late, once a second while users were being spawned. The defaults cannot change within a
# process and both of Locust's callers only read the dict: compute it once.
setattr(  # noqa: B010 - replacing a module function, not setting a known attribute
    locust_arguments,
    "default_args_dict",
    functools.cache(locust_arguments.default_args_dict),
)
# One INFO line per webhook POST would drown Locust's own output.
logging.getLogger("httpx").setLevel(logging.WARNING)


class CallError(TelephonyError):
    """How a call (or one of its measures) failed, as Locust shows it."""


def _add_options(parser: Any) -> None:
    group = parser.add_argument_group("voice-agent load test")

    def option(name: str, default: str | None, help_: str) -> None:
        _OPTIONS.append(name)
        env = "VA_" + name.upper().replace("-", "_")
        group.add_argument(f"--va-{name}", default=os.environ.get(env, default), help=help_)

    # Every option goes through option(), so _OPTIONS lists them all.
    option("url", None, "Media Stream URL (ws://…/twilio/media)")
    option("webhook", None, "voice webhook URL (https://…/twilio/voice)")
    option("recordings", None, "recordings: paths, directories, globs (space separated)")
    option("mode", "turns", "turns | realtime | barge-in")
    option("auth-token", None, "sign requests like Twilio")
    option("public-url", None, "the server's PUBLIC_URL, when it differs from the target")
    option("think-time", "0.6", "seconds of agent silence before the caller talks")
    option("answer-timeout", "8", "seconds to wait for an answer")
    option("greeting-timeout", "5", "seconds to wait for a greeting")
    option("barge-in-after", "0.5", "barge-in mode: seconds into the answer")
    option("linger", "1", "hang up after this much quiet at the end")
    option("max-call-s", "120", "hard bound of one call")
    option("connect-timeout", "10", "webhook and handshake timeout")
    option("pause", "0", "seconds between one user's calls")
    option("no-greeting", "", "non-empty: the agent lets the caller speak first")


# Locust's event hooks are untyped.
events.init_command_line_parser.add_listener(_add_options)  # type: ignore[no-untyped-call]


@dataclass(frozen=True)
class _Setup:
    scenario: Scenario
    target: Target
    connect_timeout_s: float
    pause_s: float


_setups: dict[tuple[Any, ...], _Setup] = {}
_indices = itertools.count()
_http: httpx.Client | None = None


def _http_client() -> httpx.Client:
    """One pool for every user of this worker; gevent makes its sockets cooperative.

    Not one per user: making a client builds an SSL context (~25 ms of CPU, the event loop
    blocked), and Locust starts a batch of users at once: 15 of them stalled every call of
    the worker by ~380 ms, which showed up as caller lag and false audio gaps.
    """
    global _http
    if _http is None:
        _http = httpx.Client(limits=httpx.Limits(max_connections=None))
    return _http


def _setup(environment: Environment) -> _Setup:
    """The scenario and target, from the options; loaded once per process."""
    opts = environment.parsed_options
    if opts is None:
        raise RuntimeError("run this User with the locust command (it needs --va-* options)")

    def get(name: str) -> Any:
        return getattr(opts, "va_" + name.replace("-", "_"))

    key = (*(get(n) for n in _OPTIONS), environment.host)
    if key in _setups:
        return _setups[key]
    if not get("recordings"):
        raise RuntimeError("--va-recordings (or VA_RECORDINGS) is required")
    url, webhook = get("url"), get("webhook")
    if url is None and webhook is None and environment.host:
        host = environment.host
        url, webhook = (host, None) if host.startswith(("ws://", "wss://")) else (None, host)
    mode = get("mode")
    if mode not in ("turns", "realtime", "barge-in"):
        raise RuntimeError(f"--va-mode: expected turns, realtime or barge-in, got {mode!r}")
    scenario = Scenario(
        tuple(load_scripts(expand_recordings(shlex.split(get("recordings"))))),
        mode=mode,
        turn_taking=TurnTaking(
            think_s=float(get("think-time")),
            answer_timeout_s=float(get("answer-timeout")),
            greeting_timeout_s=float(get("greeting-timeout")),
            barge_in_after_s=float(get("barge-in-after")) if mode == "barge-in" else None,
        ),
        linger_s=float(get("linger")),
        max_call_s=float(get("max-call-s")),
        expect_greeting=not get("no-greeting"),
    )
    target = Target(
        media_url=url,
        webhook_url=webhook,
        auth_token=get("auth-token"),
        public_url=get("public-url"),
        timeout_s=float(get("connect-timeout")),
    )
    setup = _Setup(scenario, target, float(get("connect-timeout")), float(get("pause")))
    _setups[key] = setup
    return setup


def fire_measures(environment: Environment, record: CallRecord) -> None:
    """Report one call's measures as Locust requests (see the module docstring)."""
    fire = environment.events.request.fire

    def sample(name: str, ms: float, error: str | None = None) -> None:
        fire(  # type: ignore[no-untyped-call]
            request_type="call",
            name=name,
            response_time=ms,
            response_length=0,
            exception=CallError(error) if error else None,
            context={"call_sid": record.call_sid, "recording": record.recording},
        )

    if record.connect_ms is not None:
        sample("connect", record.connect_ms)
    if record.greeting_ms is not None:
        sample("greeting", record.greeting_ms)
    for _, ms in record.response_ms:
        sample("response_latency", ms)
    for _ in range(record.unanswered):
        sample("response_latency", 0.0, "turn not answered")
    for _, ms in record.barge_in_ms:
        sample("barge_in_latency", ms)
    for _ in range(record.barge_ins_without_clear):
        sample("barge_in_latency", 0.0, "no clear after the caller talked over the agent")
    for _, ms in record.gap_ms:
        sample("audio_gap", ms)
    if record.connected:
        # The worker's own health: how late it sent a frame (greenlets starved of CPU).
        sample("caller_send_lag", record.max_send_lag_ms)
    error = f"{record.failure}: {record.detail}" if not record.ok else None
    sample("call", record.duration_s * 1000, error)


class VoiceCallUser(User):
    """One phone line: places a replayed call, reports it, places the next."""

    wait_time = constant(0)

    def on_start(self) -> None:
        self._setup = _setup(self.environment)
        # Locust starts each second's worth of users at once; their calls' setup (a few ms of
        # CPU each, no yield) would stall the calls in progress by tens of ms. Spread them
        # over that second, as real calls arrive (gevent-patched sleep: yields).
        time.sleep(random.random())

    @task
    def place_call(self) -> None:
        setup = self._setup
        runner = self.environment.runner
        # Workers start at different recordings, so a small run still covers them all.
        index = next(_indices) + getattr(runner, "worker_index", 0)
        script = setup.scenario.script(index)
        call_sid = "CA" + os.urandom(16).hex()
        started = time.monotonic()
        try:
            plan = dial_sync(
                _http_client(),
                setup.target,
                call_sid,
                setup.scenario.account_sid,
                script.recording.custom_parameters,
            )
            call = setup.scenario.new_call(
                index, call_sid=call_sid, custom_parameters=plan.custom_parameters
            )
            result = run_call_sync(
                plan.connect_url,
                call,
                headers=plan.headers,
                connect_timeout_s=setup.connect_timeout_s,
            )
        except (DialFailed, CallFailed) as exc:
            fire_measures(
                self.environment,
                failed_record(
                    index,
                    script.name,
                    call_sid,
                    0.0,
                    time.monotonic() - started,
                    exc.kind,
                    str(exc),
                ),
            )
        else:
            opened = call.opened_at if call.opened_at is not None else started
            record = record_call(
                index,
                script.name,
                result,
                started_s=0.0,
                stream_started_s=opened - started,
                duration_s=time.monotonic() - started,
                connect_ms=(opened - started) * 1000,
                expect_greeting=setup.scenario.expect_greeting,
            )
            fire_measures(self.environment, record)
        if setup.pause_s:
            time.sleep(setup.pause_s)  # gevent-patched: yields to the other users
