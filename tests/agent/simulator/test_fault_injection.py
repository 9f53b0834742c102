"""Random faults acted out on live connections (SimBehaviour.faults), seen through the SDK."""

from __future__ import annotations

import asyncio
from dataclasses import replace

import numpy as np
import pytest
from google import genai
from google.genai import errors, types
from websockets.exceptions import ConnectionClosed

from agent.simulator import LiveSimulator, SimSession
from agent.simulator.fault_injection import FaultActions, FaultInjector
from agent.simulator.faults import CLOSE_REASONS, FaultSchedule
from support.sim import (
    FAST,
    IN_RATE,
    MODEL,
    NO_FAULTS,
    live_config,
    make_client,
    one_turn,
    only,
    output_text,
    send_pcm,
    silence,
    voiced,
)

# --- Random faults (soak runs) -------------------------------------------------------------


async def talk_until_closed(live: genai.live.AsyncSession, s: SimSession, seconds: float) -> None:
    """Speak in real time (20 ms frames) until done or the simulator closed the connection."""
    pcm = voiced(seconds)
    step = IN_RATE // 50 * 2
    for i in range(0, len(pcm), step):
        if s.closed:
            return
        blob = types.Blob(data=pcm[i : i + step], mime_type="audio/pcm;rate=16000")
        try:
            await live.send_realtime_input(audio=blob)
        except (errors.APIError, ConnectionClosed):
            return
        await asyncio.sleep(0.02)


async def test_random_go_away_then_deadline_close() -> None:
    plan = only("go_away_weight", mean_interval_s=0.05, go_away_time_left_s=(0.2, 0.3))
    async with LiveSimulator(behaviour=replace(FAST, faults=plan)) as sim:
        async with make_client(sim).aio.live.connect(model=MODEL, config=live_config()) as live:
            async with asyncio.timeout(5):
                message = await anext(live.receive())
            assert message.go_away is not None and message.go_away.time_left
            assert 0.2 <= float(message.go_away.time_left.rstrip("s")) <= 0.3
            with pytest.raises(errors.APIError) as info:
                await one_turn(live)
        assert info.value.code == 1011 and "Deadline expired" in str(info.value)
        s = sim.sessions[0]
        assert [kind for _, kind in s.faults_injected] == ["go_away"]
        assert s.faults_injected[0][0] < 1.0
        assert sim.fault_counts == {"go_away": 1}


async def test_random_close_comes_mid_answer() -> None:
    plan = only("close_weight", mean_interval_s=0.01, align_s=10)
    # Paced at real time, so that the answer is still playing when the close comes.
    async with LiveSimulator(behaviour=replace(FAST, pace=1.0, faults=plan)) as sim:
        async with make_client(sim).aio.live.connect(model=MODEL, config=live_config()) as live:
            s = await sim.next_session()
            await asyncio.sleep(0.3)  # the fault is due, but nobody is speaking: it waits
            assert not s.closed and s.faults_injected == []
            await live.send_realtime_input(text='Say "this answer is cut off in the middle"')
            with pytest.raises(errors.APIError) as info:
                async with asyncio.timeout(5):
                    while True:
                        await one_turn(live)
        assert info.value.code == 1011 and "Internal error" in str(info.value)
        assert [kind for _, kind in s.faults_injected] == ["close_1011"]
        assert s.faults_injected[0][0] >= 0.3
        assert 0 < s.audio_out_ms < 1000 and s.turns_completed == 0


async def test_random_protocol_close_comes_mid_caller_speech() -> None:
    plan = only("protocol_close_weight", mean_interval_s=0.01, align_s=10)
    async with LiveSimulator(behaviour=replace(FAST, faults=plan)) as sim:
        async with make_client(sim).aio.live.connect(model=MODEL, config=live_config()) as live:
            s = await sim.next_session()
            await send_pcm(live, silence(0.3))
            await asyncio.sleep(0.2)  # due, but the caller is quiet: it waits
            assert not s.closed
            await talk_until_closed(live, s, 3.0)
            code = await s.wait_closed()
    assert code in (1007, 1008)
    assert [kind for _, kind in s.faults_injected] == [f"close_{code}"]
    assert s.close_reason == CLOSE_REASONS[f"close_{code}"][1]
    assert s.utterances == []  # cut off while the caller was still talking
    assert 300 < s.audio_in_ms < 1500


async def test_random_stall_goes_silent_then_recovers() -> None:
    plan = only("stall_weight", mean_interval_s=0.01, stall_s=(1.0, 1.0), max_per_session=1)
    async with LiveSimulator(behaviour=replace(FAST, faults=plan)) as sim:
        async with make_client(sim).aio.live.connect(model=MODEL, config=live_config()) as live:
            s = await sim.next_session()
            assert [kind for _, kind in await s.wait_faults(1)] == ["stall"]
            assert s.stalled
            await live.send_realtime_input(text='Say "lost in the stall"')
            await s.wait_text("lost in the stall")
            with pytest.raises(TimeoutError):
                await one_turn(live, within_s=0.3)
            async with asyncio.timeout(3):
                while s.stalled:  # noqa: ASYNC110 - polling a test-only view
                    await asyncio.sleep(0.02)
            await live.send_realtime_input(text='Say "back again"')
            assert output_text(await one_turn(live)) == "back again"
            assert not s.closed
    assert sim.fault_counts == {"stall": 1}


async def test_random_refused_resumption_forces_a_fresh_session() -> None:
    plan = only("refuse_resumption_weight", mean_interval_s=0.01, align_s=0)
    async with LiveSimulator(behaviour=replace(FAST, faults=plan)) as sim:
        client = make_client(sim)
        config = live_config(session_resumption=types.SessionResumptionConfig())
        with pytest.raises(errors.APIError) as info:
            async with client.aio.live.connect(model=MODEL, config=config) as live:
                await one_turn(live)
        assert info.value.code == 1011
        first = sim.sessions[0]
        assert [kind for _, kind in first.faults_injected] == ["refuse_resumption"]
        assert first.handles_issued

        sim.behaviour = FAST  # no faults on the next connections
        handle = first.handles_issued[-1]
        resume = live_config(session_resumption=types.SessionResumptionConfig(handle=handle))
        with pytest.raises(errors.APIError) as info:
            async with client.aio.live.connect(model=MODEL, config=resume):
                pass
        assert info.value.code == 1008
        assert sim.sessions[1].resumption_refused
        async with client.aio.live.connect(model=MODEL, config=config) as live:
            await live.send_realtime_input(text='Say "fresh start"')
            assert output_text(await one_turn(live)) == "fresh start"
        assert sim.fault_counts == {"refuse_resumption": 1}


async def test_setup_faults_hang_or_refuse_with_quota() -> None:
    hang = replace(NO_FAULTS, setup_hang_probability=1.0)
    async with LiveSimulator(behaviour=replace(FAST, faults=hang)) as sim:
        with pytest.raises(TimeoutError):
            async with asyncio.timeout(0.5):
                async with make_client(sim).aio.live.connect(model=MODEL, config=live_config()):
                    pytest.fail("connect() returned without setupComplete")
        s = await sim.next_session()
        assert not s.setup_completed
        assert [kind for _, kind in s.faults_injected] == ["setup_hang"]

        sim.behaviour = replace(FAST, faults=replace(NO_FAULTS, quota_probability=1.0))
        with pytest.raises(errors.APIError) as info:
            async with make_client(sim).aio.live.connect(model=MODEL, config=live_config()):
                pass
        assert info.value.code == 1008 and "Quota exceeded" in str(info.value)
        assert sim.fault_counts == {"quota": 1, "setup_hang": 1}


# --- The injector on its own ---------------------------------------------------------------


class _Connection:
    """Stand-ins for what a session lets a fault do, with a log of what was done."""

    def __init__(self) -> None:
        self.log: list[tuple[object, ...]] = []
        self.speech = asyncio.Event()
        self.changes = 0

    def stall(self, on: bool) -> None:
        self.log.append(("stall", on))

    async def go_away(self, time_left_s: float) -> bool:
        self.log.append(("go_away", time_left_s))
        return True

    async def close(self, code: int, reason: str) -> None:
        self.log.append(("close", code, reason))

    def revoke_handles(self) -> None:
        self.log.append(("revoke",))

    async def wait_for_speech(self, timeout: float) -> None:  # noqa: ASYNC109
        async with asyncio.timeout(timeout):
            await self.speech.wait()

    async def send(self, message: dict[str, object]) -> bool:
        self.log.append(("send", message))
        return True

    def degrade(self, kind: str) -> None:
        self.log.append(("degrade", kind))

    def injector(self) -> FaultInjector:
        actions = FaultActions(
            stall=self.stall,
            go_away=self.go_away,
            close=self.close,
            revoke_handles=self.revoke_handles,
            wait_for_speech=self.wait_for_speech,
            send=self.send,
            degrade_next_answer=self.degrade,
        )
        loop = asyncio.get_running_loop()
        return FaultInjector(
            actions, session_id="t", connected_at=loop.time(), on_change=self._changed
        )

    def _changed(self) -> None:
        self.changes += 1


async def test_injector_stalls_then_goes_away_and_records_each_fault() -> None:
    plan = only("stall_weight", mean_interval_s=0.01, stall_s=(0.05, 0.05), max_per_session=2)
    conn = _Connection()
    faults = conn.injector()
    await faults.run(FaultSchedule(plan, np.random.default_rng(1)))
    assert conn.log == [("stall", True), ("stall", False)] * 2
    assert [kind for _, kind in faults.injected] == ["stall", "stall"]
    assert 0 < faults.injected[0][0] < faults.injected[1][0] < 1.0
    assert conn.changes == 2

    conn.log.clear()
    plan = only("go_away_weight", mean_interval_s=0.01, go_away_time_left_s=(3.0, 3.0))
    await faults.run(FaultSchedule(plan, np.random.default_rng(2)))  # it ends the connection
    assert conn.log == [("go_away", 3.0)]
    assert [kind for _, kind in faults.injected][-1] == "go_away"


async def test_injector_close_waits_for_speech_at_most_align_s() -> None:
    conn = _Connection()
    faults = conn.injector()
    plan = only("refuse_resumption_weight", mean_interval_s=0.01, align_s=0.1)
    loop = asyncio.get_running_loop()
    start = loop.time()
    await faults.run(FaultSchedule(plan, np.random.default_rng(3)))  # nobody speaks
    assert loop.time() - start >= 0.1
    assert conn.log == [("revoke",), ("close", *CLOSE_REASONS["refuse_resumption"])]

    conn.log.clear()
    plan = only("close_weight", mean_interval_s=0.01, align_s=10)
    run = asyncio.create_task(faults.run(FaultSchedule(plan, np.random.default_rng(4))))
    await asyncio.sleep(0.2)
    assert conn.log == [] and not run.done()  # due, but waiting for speech
    conn.speech.set()
    await asyncio.wait_for(run, 1)
    assert conn.log == [("close", *CLOSE_REASONS["close_1011"])]
    assert [kind for _, kind in faults.injected] == ["refuse_resumption", "close_1011"]


async def test_injector_timers() -> None:
    conn = _Connection()
    faults = conn.injector()
    await faults.go_away_later(0.01, 50.0)
    await faults.close_later(0.01, 1011, "Deadline expired before operation could complete.")
    assert conn.log == [
        ("go_away", 50.0),
        ("close", 1011, "Deadline expired before operation could complete."),
    ]
    assert faults.injected == []  # timers are not faults
    faults.record("quota")
    assert [kind for _, kind in faults.injected] == ["quota"] and conn.changes == 1


async def test_hostile_model_faults_act_through_the_session() -> None:
    from agent.simulator.behaviour import FaultPlan
    from agent.simulator.faults import Fault, FaultSchedule

    class Scripted(FaultSchedule):
        def __init__(self, kinds: list[str]) -> None:
            super().__init__(FaultPlan(mean_interval_s=0.001), np.random.default_rng(0))
            self._script = kinds

        @property
        def exhausted(self) -> bool:
            return not self._script

        def next_delay_s(self) -> float:
            return 0.0

        def next_fault(self) -> Fault:
            return Fault(self._script.pop(0))

    conn = _Connection()
    await conn.injector().run(
        Scripted(["silent_answer", "rejected_answer", "damaged_audio", "oversized"])
    )
    kinds = [entry[0] for entry in conn.log]
    assert kinds == ["degrade", "degrade", "send", "send", "send"]
    assert conn.log[0][1] == "silent" and conn.log[1][1] == "rejected"
    parts = [
        entry[1]["serverContent"]["modelTurn"]["parts"][0]["inlineData"]["data"]
        for entry in conn.log[2:]
    ]  # type: ignore[index]
    assert parts[0] == "abcde" and parts[1] == "AAE=" and len(parts[2]) == 4 * 1024 * 1024
