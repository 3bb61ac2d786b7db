"""The live streams of one API process: hub, Kafka feed, tick coalescer, bar closer.

``create_app`` builds one :class:`StreamService` (``app.state.stream``); the lifespan starts
it and, on shutdown, closes every stream with 1001. uvicorn closes open WebSockets with 1012
when it shuts down, before the lifespan ends: :meth:`StreamService.install_signal_hook` wraps
its SIGTERM/SIGINT handler so that every stream is closed with 1001 first (bounded).

``stream_stats()`` is what ``/health/detailed`` and operators read.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import threading
from collections.abc import Callable
from types import FrameType
from typing import Any

from services.api.state import ApiState
from services.api.stream import auth
from services.api.stream.bars import BarCloser
from services.api.stream.feed import KafkaFeed
from services.api.stream.hub import Hub
from services.api.stream.protocol import BadChannel, Channel, dumps, parse_channel
from services.api.stream.snapshot import snapshot
from services.api.stream.subscriber import Message, Subscriber
from services.api.stream.ticks import TickCoalescer

log = logging.getLogger(__name__)

SHUTDOWN_CLOSE_S = 3.0


class StreamService:
    def __init__(self, state: ApiState) -> None:
        self.state = state
        settings = state.settings
        self.hub = Hub(settings, state.gate)
        self.ticks = TickCoalescer(self.hub, settings.stream_tick_interval_ms / 1000)
        self.bars = BarCloser(self.hub, state.engine)
        self.feed = KafkaFeed(settings, self.hub, self.ticks, self.bars)
        self.started = False
        self._previous: dict[int, Any] = {}

    # --- lifecycle ----------------------------------------------------------------------------
    def start(self) -> None:
        if self.started or not self.state.settings.stream_enabled:
            return
        self.started = True
        self.hub.start()
        self.ticks.start()
        self.bars.start()
        if self.state.settings.kafka_configured:
            self.feed.start()
        else:
            log.warning("KAFKA_BOOTSTRAP_SERVERS unset: streams carry snapshots only")

    async def close(self) -> None:
        await self.hub.close(SHUTDOWN_CLOSE_S)
        await self.feed.close()
        await self.ticks.close()
        await self.bars.close()

    def install_signal_hook(self) -> None:
        """Close every stream with 1001 before uvicorn's own shutdown (main thread only)."""
        if threading.current_thread() is not threading.main_thread():
            return
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            previous = signal.getsignal(sig)
            if not callable(previous):
                continue
            self._previous[sig] = previous
            signal.signal(sig, self._handler(loop, previous))

    def _handler(
        self, loop: asyncio.AbstractEventLoop, previous: Callable[[int, FrameType | None], Any]
    ) -> Callable[[int, FrameType | None], None]:
        def handle(sig: int, frame: FrameType | None) -> None:
            def begin() -> None:
                task = loop.create_task(self.hub.close(SHUTDOWN_CLOSE_S))
                task.add_done_callback(lambda _: previous(sig, frame))

            if self.hub.closing:
                previous(sig, frame)
            else:
                loop.call_soon_threadsafe(begin)

        return handle

    # --- subscriptions ------------------------------------------------------------------------
    def parse(self, names: list[str]) -> list[Channel]:
        """Channels from client names; raises BadChannel."""
        return [parse_channel(name) for name in names]

    async def subscribe(self, sub: Subscriber, names: list[str]) -> None:
        """Subscribe and queue a snapshot per new channel; a bad name answers an ``error``
        message, a channel outside the token's scopes closes with 4403 (Refused)."""
        try:
            channels = self.parse(names)
            auth.authorize(sub.principal, channels)
            fresh = self.hub.subscribe(sub, channels)
        except ValueError as exc:  # BadChannel, or too many subscriptions
            sub.offer(self.error(None, "ERR_VAL_001", str(exc)))
            return
        await self.snapshots(sub, fresh)
        self.status(sub, {"subscribed": sorted(sub.channels)})

    async def snapshots(self, sub: Subscriber, channels: list[Channel]) -> None:
        """Read every channel's snapshot and put them before whatever was queued meanwhile."""
        found: list[Message] = []
        for channel in channels:
            try:
                data = await snapshot(self.state, channel)
            except Exception as exc:  # noqa: BLE001 - answered as an error message
                log.warning("snapshot of %s failed: %s", channel.name, exc)
                found.append(self.error(channel.name, "ERR_DB_001", "snapshot unavailable"))
                continue
            found.append(self.hub.message("snapshot", channel.name, data))
        for message in reversed(found):
            sub.offer_first(message)

    def unsubscribe(self, sub: Subscriber, names: list[str]) -> None:
        wanted = []
        for name in names:
            try:
                wanted.append(parse_channel(name).name)
            except BadChannel:
                continue
        self.hub.unsubscribe(sub, wanted)
        self.status(sub, {"subscribed": sorted(sub.channels)})

    # --- connection-level messages ------------------------------------------------------------
    def status(self, sub: Subscriber, data: dict[str, Any]) -> None:
        sub.offer(self.hub.message("status", None, dumps(data)))

    def error(self, channel: str | None, code: str, message: str) -> Message:
        return self.hub.message("error", channel, dumps({"code": code, "message": message}))

    def authenticated(self, sub: Subscriber, event: str) -> None:
        principal = sub.principal
        self.status(
            sub,
            {
                "status": event,
                "expires_at": int(principal.expires_at),
                "scopes": sorted(principal.scopes),
            },
        )

    def stream_stats(self) -> dict[str, Any]:
        """Connections, subscriptions and feed state of this process (for health pages)."""
        return self.hub.stream_stats() | {
            "enabled": self.state.settings.stream_enabled,
            "feed": self.feed.stats(),
        }
