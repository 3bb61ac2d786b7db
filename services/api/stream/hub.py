"""The fan-out of one API process: channels, subscribers, sequence numbers, resume windows.

``publish`` is synchronous: it builds the envelope once and offers it to every subscriber's
bounded queue (:class:`~services.api.stream.subscriber.Subscriber`), so nothing upstream (the
Kafka reader, the REST path) ever waits for a client. A sweep task, every
``stream_sweep_interval_s``, ends connections whose token expired (4401) or was revoked (the
gate's deny-list, 4401), closes clients that stayed full (4408) and queues the heartbeat.

Sequence numbers are one counter per process, starting at the process start in microseconds
since the epoch: increasing, and (in practice) disjoint from another replica's, so an SSE
``Last-Event-ID`` from another replica is never mistaken for one of ours.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections import deque
from typing import Any

from services.api.core.bounded import BackgroundTask
from services.api.core.gate import RedisGate
from services.api.stream.protocol import (
    CLOSE_AUTH,
    CLOSE_GOING_AWAY,
    CLOSE_LIMIT,
    CLOSE_SLOW,
    Channel,
    envelope,
)
from services.api.stream.subscriber import Message, Subscriber
from services.common.config import Settings
from services.common.errors import StreamError
from services.common.metrics import (
    STREAM_CONNECTIONS,
    STREAM_MESSAGES_DROPPED,
    STREAM_SUBSCRIPTIONS,
)

log = logging.getLogger(__name__)

WINDOW_KEEP_S = 120.0  # a channel's resume window outlives its last subscriber this long


class Refused(StreamError):
    """A connection or request the stream does not serve: ``code`` is the close code."""

    def __init__(self, code: int, reason: str) -> None:
        super().__init__(reason)
        self.code = code
        self.reason = reason


class _Window:
    """The newest messages of one channel, for SSE resume."""

    __slots__ = ("created", "evicted", "messages")

    def __init__(self, created: int, size: int) -> None:
        self.created = created  # the hub's seq when the window began
        self.evicted = created  # seq of the newest message pushed out
        self.messages: deque[Message] = deque(maxlen=size)

    def add(self, message: Message) -> None:
        if len(self.messages) == self.messages.maxlen:
            self.evicted = self.messages[0].seq
        self.messages.append(message)


class Hub:
    def __init__(self, settings: Settings, gate: RedisGate) -> None:
        self.settings = settings
        self.gate = gate
        self._subs: set[Subscriber] = set()
        self._by_channel: dict[str, set[Subscriber]] = {}
        self._per_subject: dict[str, int] = {}
        self._windows: dict[str, _Window] = {}
        # Record keys (symbols) of ``prices`` that some tick or bar channel here wants: the
        # feed skips every other tick with one set lookup, before decoding anything.
        self.price_keys: frozenset[bytes] = frozenset()
        self._window_idle: dict[str, float] = {}
        self._seq = time.time_ns() // 1000
        self._task = BackgroundTask("stream-sweep", "stream sweep", 1.0)
        self._empty = asyncio.Event()
        self.closing = False
        self.slow_closes = 0
        self.published = 0

    # --- connections --------------------------------------------------------------------------
    def register(self, sub: Subscriber) -> None:
        if self.closing:
            raise Refused(CLOSE_GOING_AWAY, "server shutting down")
        settings = self.settings
        if len(self._subs) >= settings.stream_max_connections:
            raise Refused(CLOSE_LIMIT, "too many connections on this server")
        subject = sub.principal.subject
        if self._per_subject.get(subject, 0) >= settings.stream_max_connections_per_subject:
            raise Refused(CLOSE_LIMIT, "too many connections for this subject")
        # The first heartbeat at a random point of the second half of the interval, so that
        # connections opened together do not ping together forever after.
        sub.next_ping = time.monotonic() + settings.stream_heartbeat_s * (0.5 + random.random() / 2)
        self._subs.add(sub)
        self._per_subject[subject] = self._per_subject.get(subject, 0) + 1
        STREAM_CONNECTIONS.labels(sub.transport).inc()

    def unregister(self, sub: Subscriber) -> None:
        if sub not in self._subs:
            return
        self._subs.discard(sub)
        if not self._subs:
            self._empty.set()
        self.unsubscribe(sub, list(sub.channels))
        subject = sub.principal.subject
        left = self._per_subject.get(subject, 1) - 1
        if left > 0:
            self._per_subject[subject] = left
        else:
            self._per_subject.pop(subject, None)
        STREAM_CONNECTIONS.labels(sub.transport).dec()
        if sub.dropped:
            STREAM_MESSAGES_DROPPED.inc(sub.dropped)

    # --- subscriptions ------------------------------------------------------------------------
    def subscribe(self, sub: Subscriber, channels: list[Channel]) -> list[Channel]:
        """Add ``channels``; returns the ones that are new for ``sub``."""
        fresh = [channel for channel in dict.fromkeys(channels) if channel.name not in sub.channels]
        if len(sub.channels) + len(fresh) > self.settings.stream_max_subscriptions:
            raise ValueError(
                f"at most {self.settings.stream_max_subscriptions} channels per connection"
            )
        for channel in fresh:
            sub.channels.add(channel.name)
            self._by_channel.setdefault(channel.name, set()).add(sub)
            if channel.name not in self._windows:
                self._windows[channel.name] = _Window(self._seq, self.settings.stream_resume_window)
                self._refresh_price_keys()
            self._window_idle.pop(channel.name, None)
        STREAM_SUBSCRIPTIONS.inc(len(fresh))
        return fresh

    def unsubscribe(self, sub: Subscriber, names: list[str]) -> list[str]:
        gone = [name for name in dict.fromkeys(names) if name in sub.channels]
        for name in gone:
            sub.channels.discard(name)
            holders = self._by_channel.get(name)
            if holders is not None:
                holders.discard(sub)
                if not holders:
                    del self._by_channel[name]
                    self._window_idle[name] = time.monotonic()
        STREAM_SUBSCRIPTIONS.dec(len(gone))
        return gone

    def _refresh_price_keys(self) -> None:
        self.price_keys = frozenset(
            name.split(":")[1].encode() for name in self._windows if not name.startswith("pred")
        )

    def interested(self, channel: str) -> bool:
        """Someone here subscribes to ``channel`` (or may resume it): worth building."""
        return channel in self._windows

    # --- publishing ---------------------------------------------------------------------------
    @property
    def seq(self) -> int:
        return self._seq

    def message(
        self, kind: str, channel: str | None, data_json: str, born: float | None = None
    ) -> Message:
        self._seq += 1
        payload = envelope(kind, channel, self._seq, data_json)
        return Message(self._seq, kind, channel, payload, born)

    def publish(
        self, kind: str, channel: str, data_json: str, born: float | None, coalesce: bool
    ) -> int:
        """Offer one message to every subscriber of ``channel``; returns how many took it.
        Never awaits: a full or slow subscriber loses the message, not the others."""
        window = self._windows.get(channel)
        if window is None:
            return 0
        msg = self.message(kind, channel, data_json, born)
        window.add(msg)
        self.published += 1
        taken = 0
        now = time.monotonic()
        for sub in self._by_channel.get(channel, ()):
            taken += sub.offer(msg, coalesce, now)
        return taken

    def replay(self, channels: list[str], after: int) -> list[Message] | None:
        """Messages of ``channels`` after seq ``after`` from the resume windows, oldest first;
        None when a window does not reach back that far (then the client needs a snapshot)."""
        if after > self._seq:
            return None
        found: list[Message] = []
        for name in channels:
            window = self._windows.get(name)
            if window is None or after < window.created or after < window.evicted:
                return None
            found.extend(message for message in window.messages if message.seq > after)
        found.sort(key=lambda message: message.seq)
        return found

    # --- the sweep: expiry, revocation, slow clients, heartbeat -------------------------------
    def sweep(self) -> None:
        now_wall, now = time.time(), time.monotonic()
        ping: Message | None = None
        for sub in list(self._subs):
            if sub.close_code is not None:
                continue
            if sub.principal.expires_at <= now_wall:
                sub.kick(CLOSE_AUTH, "token expired")
            elif self.gate.is_denied(sub.principal.jti):
                sub.kick(CLOSE_AUTH, "token revoked")
            elif sub.is_slow(now):
                sub.kick(CLOSE_SLOW, "client too slow to keep up")
            elif sub.next_ping <= now:  # each on its own phase: no burst of 1,000 pings
                ping = ping or self.message("ping", None, "{}")
                sub.offer(ping, coalesce=True, now=now)
                sub.next_ping = now + self.settings.stream_heartbeat_s
        for name, since in list(self._window_idle.items()):
            if now - since >= WINDOW_KEEP_S and name not in self._by_channel:
                del self._window_idle[name]
                self._windows.pop(name, None)
                self._refresh_price_keys()

    async def _sweep_loop(self) -> None:
        while not self.closing:
            await asyncio.sleep(self.settings.stream_sweep_interval_s)
            try:
                self.sweep()
            except Exception:  # the loop must not die
                log.exception("stream sweep failed")

    def start(self) -> None:
        self._task.start(self._sweep_loop)

    async def close(self, timeout_s: float = 5.0) -> None:
        """Close every stream with 1001 and wait (bounded) until their handlers let go."""
        self.closing = True
        for sub in list(self._subs):
            sub.kick(CLOSE_GOING_AWAY, "server going away")
        if self._subs:
            self._empty.clear()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(timeout_s):
                    await self._empty.wait()
        await self._task.stop()

    # --- observability ------------------------------------------------------------------------
    def stream_stats(self) -> dict[str, Any]:
        by_transport: dict[str, int] = {}
        for sub in self._subs:
            by_transport[sub.transport] = by_transport.get(sub.transport, 0) + 1
        return {
            "connections": len(self._subs),
            "websocket": by_transport.get("ws", 0),
            "sse": by_transport.get("sse", 0),
            "subscriptions": sum(len(sub.channels) for sub in self._subs),
            "channels": len(self._by_channel),
            "subjects": len(self._per_subject),
            "queued": sum(sub.queued() for sub in self._subs),
            "published": self.published,
            "slow_client_closes": self.slow_closes,
            "seq": self._seq,
        }
