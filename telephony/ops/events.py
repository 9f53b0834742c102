"""Live call events for the operator page: a bounded fan-out to server-sent-event streams.

``CallEvents.publish()`` is called from a call's start and end hooks (never per frame): it
puts the event on each subscriber's queue without waiting. A subscriber whose queue is full
(a client that does not read) is dropped: its stream ends, and the page reconnects and
reloads. At most ``max_clients`` streams at once; ``close()`` ends them all (shutdown).

``sse()`` is the wire format (pure): ``event:``/``data:`` lines, and comments for heartbeats.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any, Final

import orjson

from telephony.errors import TelephonyError

__all__ = ["CallEvents", "Subscriber", "TooManyClients", "sse"]

#: Events waiting for one client, at most: beyond, it is too slow and is dropped.
QUEUE_EVENTS: Final = 256
DEFAULT_MAX_CLIENTS: Final = 32
#: A comment line this often keeps proxies from closing an idle stream.
HEARTBEAT_S: Final = 15.0
HEARTBEAT: Final = b": keepalive\n\n"


class TooManyClients(TelephonyError):
    """Every event-stream slot is taken."""


def sse(event: str, data: dict[str, Any], event_id: int | None = None) -> bytes:
    """One server-sent event (its data is one line of JSON)."""
    head = f"id: {event_id}\n" if event_id is not None else ""
    return (
        f"{head}event: {event}\n".encode() + b"data: " + orjson.dumps(data, default=str) + b"\n\n"
    )


class Subscriber:
    """One event stream's queue."""

    __slots__ = ("dropped", "queue")

    def __init__(self, size: int) -> None:
        self.queue: asyncio.Queue[bytes | None] = asyncio.Queue(size)
        self.dropped = False

    def offer(self, message: bytes | None) -> bool:
        """Queue a message (None: the end); False if the client was too slow (dropped)."""
        if self.dropped:
            return False
        try:
            self.queue.put_nowait(message)
        except asyncio.QueueFull:
            self.dropped = True
            # Make room for the end marker, so that the stream's reader wakes and stops.
            self.queue.get_nowait()
            self.queue.put_nowait(None)
            return False
        return True


class CallEvents:
    """The fan-out (one per server). Used from the event loop only."""

    def __init__(
        self, *, max_clients: int = DEFAULT_MAX_CLIENTS, queue_events: int = QUEUE_EVENTS
    ) -> None:
        self.max_clients = max_clients
        self.queue_events = queue_events
        self._subscribers: set[Subscriber] = set()
        self._next_id = 0
        self.closed = False
        #: Slow clients dropped so far (for the metrics).
        self.dropped = 0

    @property
    def clients(self) -> int:
        return len(self._subscribers)

    def subscribe(self) -> Subscriber:
        if self.closed:
            raise TooManyClients("the server is stopping")
        if len(self._subscribers) >= self.max_clients:
            raise TooManyClients(f"{self.max_clients} event streams are open already")
        subscriber = Subscriber(self.queue_events)
        self._subscribers.add(subscriber)
        return subscriber

    def unsubscribe(self, subscriber: Subscriber) -> None:
        self._subscribers.discard(subscriber)

    def publish(self, event: str, data: dict[str, Any]) -> None:
        """Send an event to every stream; never waits. Slow streams are dropped."""
        if not self._subscribers:
            return
        self._next_id += 1
        message = sse(event, data, self._next_id)
        for subscriber in list(self._subscribers):
            if not subscriber.offer(message):
                self._subscribers.discard(subscriber)
                self.dropped += 1

    def close(self) -> None:
        """End every stream (the server is stopping)."""
        self.closed = True
        for subscriber in self._subscribers:
            subscriber.offer(None)
        self._subscribers.clear()

    async def stream(
        self, subscriber: Subscriber, *, heartbeat_s: float = HEARTBEAT_S
    ) -> AsyncIterator[bytes]:
        """The bytes of one event stream, heartbeats between events, until it is ended."""
        try:
            yield b"retry: 2000\n" + sse("hello", {"clients": self.clients})
            while True:
                try:
                    async with asyncio.timeout(heartbeat_s):
                        message = await subscriber.queue.get()
                except TimeoutError:
                    yield HEARTBEAT
                    continue
                if message is None:
                    return
                yield message
        finally:
            self.unsubscribe(subscriber)
