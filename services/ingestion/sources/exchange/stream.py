"""What every exchange stream shares: one WebSocket connection at a time, kept alive.

:class:`ExchangeSource` is a :class:`~services.ingestion.sources.base.Source` whose ``fetch``
hands out what a background reader received since the last call (up to ``batch_max`` trades:
the faster trades come, the larger the batches the publisher sends). The reader:

* connects (``websockets``), sends the venue's subscribe messages, and parses every frame
  with the venue's :meth:`ExchangeSource.parse` into raw ticks (validated later, like every
  source's) and rejections (malformed frames: they go to the DLQ with their reason and the
  stream goes on);
* counts silence: no message (trade, heartbeat, ping message) for ``silence_s`` means the
  connection is dead; it is dropped and a new one opened. The library's own ping/pong
  (``ping_interval_s``) catches a peer that is gone at the TCP level;
* reconnects ahead of the venue's connection limit (``max_age_s``: Binance cuts at 24 h) at
  once, and after any other end with exponential backoff and full jitter (a fleet of
  replicas does not reconnect in lockstep);
* finds holes (:mod:`.gaps`) and has them repaired from the venue's REST trades endpoint
  (:meth:`ExchangeSource.rest_gap`) by a separate task (:mod:`.repair`); repaired trades take
  the same path (validation, ``prices``), and the store's key keeps each trade once.

The batch handed out by ``fetch`` is handed out again until ``published`` confirms it: a
broker outage loses no trade (the DLQ may see a malformed frame twice).
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import random
import time
from abc import abstractmethod
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any, ClassVar

import httpx
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidStatus

from services.common.metrics import (
    SOURCE_CONNECTED,
    SOURCE_MESSAGES,
    SOURCE_RECONNECTS,
    UPSTREAM_ERRORS,
)
from services.ingestion.sources.base import RawTick, Source
from services.ingestion.sources.exchange.buffer import TradeBuffer
from services.ingestion.sources.exchange.common import (
    Parsed,
    StreamConfig,
    StreamStats,
    redact,
    tune_gc,
)
from services.ingestion.sources.exchange.gaps import Gap, SequenceTracker
from services.ingestion.sources.exchange.repair import GapRepair
from services.ingestion.sources.exchange.wire import Connection

log = logging.getLogger(__name__)


class ExchangeSource(Source):
    """A venue's trade stream; subclasses speak the venue's protocol."""

    kind: ClassVar[str] = "exchange"
    sequential_ids: ClassVar[bool] = True  # False: gaps are time windows after reconnects
    interval_s = 0.0

    def __init__(
        self, config: StreamConfig, pairs: dict[str, str], client: httpx.AsyncClient | None = None
    ) -> None:
        self.name = self.kind
        self.config = config
        self.pairs = pairs  # venue symbol -> Pricecast symbol
        self.stats = StreamStats()
        self.tracker = SequenceTracker()
        self.buffer = TradeBuffer(config.buffer_max)
        self._http = client or httpx.AsyncClient(timeout=config.rest_timeout_s)
        self._own_http = client is None
        self._tasks: list[asyncio.Task[None]] = []
        self.repairs = GapRepair(self)
        self._unacked: list[Any] | None = None
        self._reconnected: set[str] = set()  # time-window venues: symbols since a reconnect
        self._last_message = 0.0
        self.renew_now = False  # set by a venue that announces its end (Binance serverShutdown)
        self._messages = SOURCE_MESSAGES.labels(self.kind)
        self._messages_counted = 0
        self._connected = SOURCE_CONNECTED.labels(self.kind)
        self._connected.set(0)

    # --- the venue's protocol ----------------------------------------------------------
    @abstractmethod
    def ws_url(self) -> str:
        """The URL to connect to (with the subscription, where the venue takes it there)."""

    def subscribe_messages(self) -> list[str]:
        """Text frames sent right after connecting."""
        return []

    @abstractmethod
    def parse(self, frame: str | bytes) -> Parsed:
        """One received frame."""

    @abstractmethod
    async def rest_gap(self, gap: Gap) -> list[RawTick]:
        """The trades of ``gap`` from the venue's REST endpoint (raw ticks, unvalidated)."""

    @abstractmethod
    def history(
        self, venue_symbol: str, start: datetime, end: datetime
    ) -> AsyncIterator[list[RawTick]]:
        """Trades of ``venue_symbol`` in [start, end) from REST, in pages (backfill)."""

    # --- Source ------------------------------------------------------------------------
    async def fetch(self) -> list[RawTick]:
        if not self._tasks:
            self.start()
        if self._unacked is None:
            self._unacked = await self.buffer.take(self.config.batch_max, timeout_s=0.5)
        return list(self._unacked)

    def published(self, ticks: list[RawTick]) -> None:
        self._unacked = None

    def start(self) -> None:
        tune_gc()
        if not self._tasks:
            self._tasks = [
                asyncio.create_task(self._run(), name=f"{self.kind}-stream"),
                asyncio.create_task(self.repairs.run(), name=f"{self.kind}-repair"),
            ]

    async def close(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks = []
        self._connected.set(0)
        if self._own_http:
            await self._http.aclose()

    # --- connection ----------------------------------------------------------------------
    def backoff_s(self, attempt: int) -> float:
        """Full jitter: uniform in [0, min(max, initial * 2**attempt)]."""
        cfg = self.config
        return random.uniform(0.0, min(cfg.backoff_max_s, cfg.backoff_initial_s * 2**attempt))

    async def _run(self) -> None:
        attempt = 0
        while True:
            reason = "error"
            healthy = False
            try:
                async with Connection(
                    self.ws_url(), open_timeout_s=self.config.open_timeout_s
                ) as ws:
                    reason, healthy = await self._session(ws)
            except InvalidStatus as exc:
                reason = "refused"
                self._error(f"handshake refused: HTTP {exc.response.status_code}")
            except (OSError, TimeoutError, InvalidHandshake) as exc:
                self._error(f"connect failed: {type(exc).__name__}: {exc}")
            except ConnectionClosed as exc:  # while subscribing
                reason = "dropped"
                self._error(f"connection dropped: {exc}")
            except Exception as exc:  # the stream must outlive any one failure
                self._error(f"connection failed: {type(exc).__name__}: {exc}")
                log.debug("%s: connection failure", self.kind, exc_info=True)
            finally:
                self._connected.set(0)
                self.stats.connected_since = None
            self.stats.reconnects[reason] = self.stats.reconnects.get(reason, 0) + 1
            SOURCE_RECONNECTS.labels(self.kind, reason).inc()
            if healthy:
                attempt = 0
            delay = 0.0 if reason == "max_age" else self.backoff_s(attempt)
            attempt = 0 if reason == "max_age" else attempt + 1
            log.warning(
                "%s: connection ended (%s); reconnecting in %.1fs", self.kind, reason, delay
            )
            await asyncio.sleep(delay)

    async def _session(self, ws: Connection) -> tuple[str, bool]:
        """One connection until it ends; (why it ended, whether it delivered messages)."""
        for message in self.subscribe_messages():
            await ws.send(message)
        self.stats.connections += 1
        self.stats.connected_since = datetime.now(UTC)
        if self.stats.connections > 1 and not self.sequential_ids:
            self._reconnected = set(self.pairs)
        self._connected.set(1)
        log.info("%s: connected to %s", self.kind, redact(self.ws_url()))
        opened = self._last_message = time.monotonic()
        ended: list[str] = []
        watchdog = asyncio.create_task(self._watch(ws, opened, ended))
        got = False
        reason = "closed"  # the venue closed it cleanly
        try:
            buffer = self.buffer
            while True:
                frames = await ws.recv_batch()  # every message of one socket read
                if not frames:
                    continue
                self._last_message = time.monotonic()
                got = True
                self._frames(frames)
                if buffer.full:  # the publisher is behind: stop reading, TCP pushes back
                    await buffer.room()
        except ConnectionClosed as exc:
            reason = "closed" if exc.rcvd is not None else "dropped"
            if not ended:
                self._error(f"connection {reason}: {exc}")
        except OSError as exc:  # reset, or aborted by the watchdog
            reason = "dropped"
            if not ended:
                self._error(f"connection dropped: {type(exc).__name__}: {exc}")
        finally:
            watchdog.cancel()
            await asyncio.gather(watchdog, return_exceptions=True)
            self._count_messages()
        return (ended[0] if ended else reason), got

    async def _watch(self, ws: Connection, opened: float, ended: list[str]) -> None:
        cfg = self.config
        step = max(0.05, min(1.0, cfg.silence_s / 4))
        pinged = opened
        while True:
            await asyncio.sleep(step)
            self._count_messages()
            now = time.monotonic()
            if cfg.ping_interval_s and now - pinged >= cfg.ping_interval_s:
                if ws.last_pong < pinged and pinged > opened:  # the last ping got no answer
                    ended.append("ping_timeout")
                    self._error(f"no pong within {cfg.ping_interval_s:g}s: connection dead")
                    ws.abort()
                    return
                pinged = now
                await ws.ping()
            if (cfg.max_age_s and now - opened >= cfg.max_age_s) or self.renew_now:
                ended.append("max_age")
                self.renew_now = False
                log.info("%s: connection %.0fs old: renewing it", self.kind, now - opened)
                await ws.close(1000, "renewing before the venue's limit")
                return
            if now - self._last_message >= cfg.silence_s:
                ended.append("silence")
                self._error(f"no message for {cfg.silence_s:g}s: connection taken as dead")
                ws.abort()
                return

    def _error(self, message: str) -> None:
        self.stats.last_error = message[:300]
        UPSTREAM_ERRORS.labels(self.kind, "ws").inc()
        log.warning("%s: %s", self.kind, message)

    # --- frames ----------------------------------------------------------------------------
    def _count_messages(self) -> None:
        """Messages received, into the Prometheus counter (in steps: not once per frame)."""
        new = self.stats.messages - self._messages_counted
        if new:
            self._messages.inc(new)
            self._messages_counted += new

    def _frames(self, frames: list[str | bytes]) -> None:
        """The messages of one socket read, in order (a venue may fuse its common case)."""
        for frame in frames:
            self._frame(frame)

    def _frame(self, frame: str | bytes) -> None:
        self.stats.messages += 1
        parsed = self.parse(frame)
        if parsed.error is not None:
            self._error(f"venue says: {parsed.error}")
        if parsed.rejects:
            self.stats.malformed += len(parsed.rejects)
            self.buffer.add(parsed.rejects)
        trades = parsed.trades
        if trades:
            if len(trades) == 1 and self.sequential_ids:  # the common frame (Binance)
                trade = trades[0]
                venue, tid, last = trade.pop("_venue"), int(trade["trade_id"]), self.tracker.last
                prev = last.get(venue)
                if prev is not None and tid == prev[0] + 1:  # in sequence: observe(), inlined
                    last[venue] = (tid, trade["ts"])
                else:
                    keep, gap = self.tracker.observe(venue, tid, trade["ts"])
                    if gap is not None:
                        self._found(gap)
                    if not keep:
                        return
            else:
                trades = self._track(trades)
            self.stats.trades += len(trades)
            self.buffer.add(trades)

    def _track(self, trades: list[RawTick]) -> list[RawTick]:
        """Drop trades seen already; queue the holes they reveal for repair."""
        tracker = self.tracker
        if not self.sequential_ids:
            for trade in trades:
                venue = trade.pop("_venue")
                if self._reconnected and venue in self._reconnected:
                    self._reconnected.discard(venue)
                    gap = tracker.window(venue, trade["ts"])
                    if gap is not None:
                        self._found(gap)
                tracker.seen(venue, trade["ts"])
            return trades
        ids = [int(trade["trade_id"]) for trade in trades]
        if any(later < earlier for earlier, later in itertools.pairwise(ids)):
            order = sorted(range(len(trades)), key=ids.__getitem__)
            trades, ids = [trades[at] for at in order], [ids[at] for at in order]
        kept: list[RawTick] = []
        for trade, tid in zip(trades, ids, strict=True):
            keep, gap = tracker.observe(trade.pop("_venue"), tid, trade["ts"])
            if gap is not None:
                self._found(gap)
            if keep:
                kept.append(trade)
        return kept

    # --- gaps ------------------------------------------------------------------------------
    def _found(self, gap: Gap) -> None:
        self.repairs.found(gap)

    # --- health ----------------------------------------------------------------------------
    def state(self) -> dict[str, Any]:
        st = self.stats
        connected = st.connected_since is not None
        silent_s = time.monotonic() - self._last_message if self._last_message else None
        return {
            "kind": "websocket",
            "url": redact(self.ws_url()),
            "symbols": sorted(self.pairs.values()),
            "connected": connected,
            "connected_since": st.connected_since.isoformat() if st.connected_since else None,
            "connections": st.connections,
            "last_message_s_ago": round(silent_s, 3) if silent_s is not None else None,
            "messages": st.messages,
            "trades": st.trades,
            "malformed": st.malformed,
            "duplicates_dropped": self.tracker.duplicates,
            "reconnects": dict(st.reconnects),
            "gaps": dict(st.gaps),
            "buffered": len(self.buffer),
            "last_error": st.last_error,
        }
