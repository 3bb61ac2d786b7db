"""One connected client's outgoing queue: bounded, never awaited by whoever fills it.

Two parts: a FIFO (snapshots, predictions, status and error messages: each must arrive) of at
most ``capacity`` messages, and one slot per channel for ``tick`` and ``bar`` messages (and
one for the heartbeat) where a newer message replaces an unsent older one. ``offer`` never
blocks: a full FIFO drops the message and marks the client full; a client that stays full
(or whose one send stays blocked) for ``slow_after_s`` is closed with 4408 by the hub's sweep
(or at once by the next offer that finds it so).
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from typing import NamedTuple

from services.api.core.security import Principal
from services.api.stream.protocol import CLOSE_SLOW

PING_SLOT = ""  # the heartbeat's coalescing slot


class Message(NamedTuple):
    seq: int
    kind: str  # snapshot | prediction | bar | tick | status | error | ping
    channel: str | None
    payload: str  # the envelope's JSON text
    born: float | None  # Kafka timestamp (epoch seconds) of what it carries, for latency


class Subscriber:
    __slots__ = (
        "_waiter",
        "busy_since",
        "capacity",
        "channels",
        "close_code",
        "close_reason",
        "closed",
        "dropped",
        "fifo",
        "full_since",
        "latest",
        "next_ping",
        "principal",
        "slow_after_s",
        "transport",
    )

    def __init__(
        self, principal: Principal, capacity: int, slow_after_s: float, transport: str
    ) -> None:
        self.principal = principal
        self.capacity = capacity
        self.slow_after_s = slow_after_s
        self.transport = transport  # "ws" | "sse"
        self.channels: set[str] = set()
        self.fifo: deque[Message] = deque()
        self.latest: dict[str, Message] = {}
        self.full_since: float | None = None
        self.busy_since: float | None = None
        self.next_ping = float("inf")  # when the hub queues its next heartbeat (monotonic)
        self.dropped = 0
        self.close_code: int | None = None
        self.close_reason = ""
        self.closed: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        self._waiter: asyncio.Future[None] | None = None

    # --- filling (the hub; synchronous, never waits) ------------------------------------------
    def offer(self, message: Message, coalesce: bool = False, now: float | None = None) -> bool:
        """Queue ``message``; False when it was dropped (the client is closed or full)."""
        if self.close_code is not None:
            return False
        if coalesce:
            slot = message.channel if message.channel is not None else PING_SLOT
            replaced = slot in self.latest
            self.latest[slot] = message
            self._wake()
            if replaced:
                self.dropped += 1
            return not replaced
        if len(self.fifo) >= self.capacity:
            self.dropped += 1
            now = time.monotonic() if now is None else now
            if self.full_since is None:
                self.full_since = now
            elif now - self.full_since >= self.slow_after_s:
                self.kick(CLOSE_SLOW, "client too slow to keep up")
            return False
        self.fifo.append(message)
        self._wake()
        return True

    def offer_first(self, message: Message) -> None:
        """Put ``message`` before everything queued (a snapshot read after subscribing)."""
        if self.close_code is None:
            self.fifo.appendleft(message)
            self._wake()

    def is_slow(self, now: float) -> bool:
        """Full, or stuck in one send, for ``slow_after_s`` or longer."""
        for since in (self.full_since, self.busy_since):
            if since is not None and now - since >= self.slow_after_s:
                return True
        return False

    def kick(self, code: int, reason: str) -> None:
        """End the connection with ``code``: whoever serves it closes and unregisters."""
        if self.close_code is not None:
            return
        self.close_code = code
        self.close_reason = reason
        self.fifo.clear()
        self.latest.clear()
        if not self.closed.done():
            self.closed.set_result(code)
        self._wake()

    # --- draining (the connection's sender) ---------------------------------------------------
    def pop(self) -> Message | None:
        if self.fifo:
            message = self.fifo.popleft()
            if len(self.fifo) < self.capacity:
                self.full_since = None
            return message
        if self.latest:
            slot = next(iter(self.latest))
            return self.latest.pop(slot)
        return None

    async def next(self) -> Message | None:
        """The next message to send, waiting for one; None once the client is kicked."""
        while True:
            if self.close_code is not None:
                return None
            message = self.pop()
            if message is not None:
                return message
            self._waiter = asyncio.get_running_loop().create_future()
            try:
                await self._waiter
            finally:
                self._waiter = None

    def queued(self) -> int:
        return len(self.fifo) + len(self.latest)

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)
