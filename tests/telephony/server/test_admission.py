"""Who gets in: call slots, streams not started yet, pre-connect bookkeeping, and the
connection cap fitted to the open-file limit (pure bookkeeping; the sockets are in
tests/e2e/test_abuse.py)."""

from __future__ import annotations

from telephony.server.runner import FD_RESERVE, connection_cap
from telephony.server.service import CALL_SIDS_KEPT, Service, client_key
from telephony.settings import Settings


def service(**env: str) -> Service:
    return Service(Settings.from_env(env))


class Stream:
    """Stands in for a ``Call`` waiting for its ``start``."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.given_up = ""

    def give_up_start(self, reason: str) -> None:
        self.given_up = reason


def pending(s: Service, client: str, name: str = "") -> tuple[Stream, str | None]:
    stream = Stream(name or client)
    return stream, s.stream_pending(stream, client)


def test_streams_not_started_are_bounded_per_client_and_are_not_load() -> None:
    s = service(MAX_PENDING_STREAMS_PER_CLIENT="2")
    a1, a2, a3 = (pending(s, "a") for _ in range(3))
    assert [a1[1], a2[1], a3[1]] == [None, None, "client_limit"]
    assert pending(s, "b")[1] is None
    assert (s.pending, s.load) == (3, 0)
    s.stream_unpending(a1[0])
    s.stream_unpending(a1[0])  # a second time: no effect
    s.stream_unpending(a3[0])  # never admitted: no effect
    assert s.pending == 2 and s._pending_by_client == {"a": 1, "b": 1}
    assert pending(s, "a")[1] is None


def test_at_the_overall_limit_the_longest_waiting_stream_makes_room() -> None:
    s = service(MAX_PENDING_STREAMS="3", MAX_PENDING_STREAMS_PER_CLIENT="2")
    streams = [pending(s, client)[0] for client in ("a", "b", "c")]
    newest, refused = pending(s, "d")
    assert refused is None and s.pending == 3
    assert [bool(x.given_up) for x in streams] == [True, False, False]
    assert "MAX_PENDING_STREAMS" in streams[0].given_up
    assert s._pending_by_client == {"b": 1, "c": 1, "d": 1}
    value = s.metrics.streams_refused.labels(reason="evicted")._value.get()
    assert value == 1
    for stream in (*streams, newest):
        s.stream_unpending(stream)
    assert s.pending == 0 and s._pending_by_client == {}
    assert s._idle.is_set()


def test_client_keys_group_ipv6_by_its_64() -> None:
    assert client_key("203.0.113.7") == "203.0.113.7"
    assert client_key("2001:db8:1:2:aaaa::1") == client_key("2001:db8:1:2:bbbb::9")
    assert client_key("2001:db8:1:2::1") == "2001:db8:1:2::/64"
    assert client_key("2001:db8:1:3::1") != client_key("2001:db8:1:2::1")
    assert client_key("::ffff:203.0.113.7") == "203.0.113.7"
    assert client_key("testclient") == "testclient"


def test_a_started_stream_takes_a_slot_only_if_one_is_free() -> None:
    s = service(MAX_CONCURRENT_CALLS="2")
    assert [s.take_slot(), s.take_slot(), s.take_slot()] == [True, True, False]
    assert s.load == 2 and not s._idle.is_set()
    s.stream_closed()
    assert s.take_slot()
    s.stream_closed()
    s.stream_closed()
    assert s.load == 0 and s._idle.is_set()


def test_call_sids_are_remembered_boundedly() -> None:
    s = service()
    assert s.saw_call_sid("CA1", "webhook") is None
    assert s.saw_call_sid("CA1", "ended") == "webhook"
    for n in range(CALL_SIDS_KEPT):
        s.saw_call_sid(f"CB{n}", "webhook")
    assert len(s.call_sids) == CALL_SIDS_KEPT and "CA1" not in s.call_sids


def test_the_connection_cap_fits_the_open_file_limit() -> None:
    settings = Settings.from_env({"GEMINI_API_KEY": "k", "MAX_CONCURRENT_CALLS": "100"})
    # 2 x 100 calls + 25 pending streams + 64; fits easily in 1024 files.
    assert connection_cap(settings, open_files=1024) == (289, [])
    # Each call and pre-connect needs its model socket besides, and the reserve.
    wide = Settings.from_env({"GEMINI_API_KEY": "k", "MAX_CONNECTIONS": "1000"})
    cap, warnings = connection_cap(wide, open_files=1024)
    assert cap == 1024 - (100 + 25) - FD_RESERVE
    assert len(warnings) == 1 and "open-file limit 1024" in warnings[0]
    # The embedded simulator's end of each model connection counts too.
    simulated = Settings.from_env({"MAX_CONNECTIONS": "1000"})
    assert connection_cap(simulated, open_files=1024)[0] == 1024 - 2 * 125 - FD_RESERVE
    # Too few for the calls themselves: said loudly.
    cap, warnings = connection_cap(settings, open_files=256)
    assert cap == 256 - 125 - FD_RESERVE
    assert any("too little room" in w for w in warnings)
    tight = Settings.from_env({"GEMINI_API_KEY": "k", "MAX_CONNECTIONS": "50"})
    cap, warnings = connection_cap(tight, open_files=1_048_576)
    assert cap == 50 and any("MAX_CONCURRENT_CALLS=100" in w for w in warnings)
