"""The steady synthetic load, with exact acknowledgement accounting.

A producer thread publishes ticks to ``prices`` at a fixed rate, round-robin over a few
symbols, each with a unique natural key ``(symbol, ts, source)``. Timestamps follow a
simulated clock that runs faster than real time from a start point in the past (never beyond
now), so hourly bars close every few seconds and forecasts are due throughout the run.

A tick is *acknowledged* when the producer's send future resolved without error (``acks=all``);
it is then recorded with the broker epoch (instance) that acknowledged it and the fault phase
during which it was produced.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError

log = logging.getLogger(__name__)

SOURCE = "faultload"


@dataclass(frozen=True)
class Acked:
    symbol: str
    ts: datetime
    epoch: int
    phase: str
    at: float  # monotonic time of the acknowledgement


@dataclass
class LoadStats:
    produced: Counter[str] = field(default_factory=Counter)  # per phase
    failed: Counter[str] = field(default_factory=Counter)  # send future failed (not acked)
    acked: list[Acked] = field(default_factory=list)
    unacked: list[tuple[str, datetime, str]] = field(default_factory=list)  # symbol, ts, phase
    errors: Counter[str] = field(default_factory=Counter)


@dataclass(eq=False)
class LoadDriver:
    """``epoch`` is a callable returning the current broker epoch; ``linger_ms`` is the
    producer's batching delay (each record batch is one object the test broker keeps)."""

    bootstrap: str
    topic: str
    symbols: list[str]
    start_ts: datetime
    rate: float
    speed: float
    epoch: Any
    seed: int = 7
    linger_ms: int = 5

    def __post_init__(self) -> None:
        self.phase = "warmup"
        self.stats = LoadStats()
        self.prices = {s: 100.0 * (1 + i) for i, s in enumerate(self.symbols)}
        self._k = dict.fromkeys(self.symbols, 0)
        self._rng = random.Random(self.seed)
        # One tick per symbol every ``step`` of simulated time (whole microseconds: unique).
        per_symbol = self.rate / len(self.symbols)
        self.step = timedelta(microseconds=max(1, int(self.speed / per_symbol * 1e6)))
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._main, daemon=True, name="load")
        self._inflight = 0

    # --- control -----------------------------------------------------------------------------
    def start(self) -> LoadDriver:
        self._thread.start()
        return self

    def stop(self, drain_s: float = 20.0) -> None:
        self._stop.set()
        self._thread.join(drain_s + 10)

    def set_phase(self, phase: str) -> None:
        self.phase = phase

    def sim_now(self) -> datetime:
        """The newest simulated timestamp produced so far (over all symbols)."""
        k = max(self._k.values())
        return self.start_ts + k * self.step

    def acked_snapshot(self) -> list[Acked]:
        with self._lock:
            return list(self.stats.acked)

    def unacked_snapshot(self) -> list[tuple[str, datetime, str]]:
        with self._lock:
            return list(self.stats.unacked)

    @property
    def inflight(self) -> int:
        return self._inflight

    # --- the producer thread -----------------------------------------------------------------
    def _main(self) -> None:
        asyncio.run(self._run())

    async def _run(self) -> None:
        producer = self._producer()
        await self._start(producer)
        pending: set[asyncio.Task[None]] = set()
        began = time.monotonic()
        sent = 0
        i = 0
        while not self._stop.is_set():
            due = int((time.monotonic() - began) * self.rate)
            while sent < due and not self._stop.is_set():
                symbol = self.symbols[i % len(self.symbols)]
                i += 1
                ts = self.start_ts + (self._k[symbol] + 1) * self.step
                if ts > datetime.now(UTC) - timedelta(seconds=1):
                    sent = due  # the simulated clock caught up with real time: wait
                    break
                self._k[symbol] += 1
                sent += 1
                task = asyncio.create_task(self._send(producer, symbol, ts, self.phase))
                pending.add(task)
                task.add_done_callback(pending.discard)
            self._inflight = len(pending)
            await asyncio.sleep(0.02)
        if pending:
            await asyncio.wait(pending, timeout=30)
        with contextlib.suppress(Exception):
            await producer.stop()

    def _producer(self) -> AIOKafkaProducer:
        return AIOKafkaProducer(
            bootstrap_servers=self.bootstrap,
            acks="all",
            linger_ms=self.linger_ms,
            request_timeout_ms=5000,
            retry_backoff_ms=200,
            enable_idempotence=False,
        )

    async def _start(self, producer: AIOKafkaProducer) -> None:
        while not self._stop.is_set():
            try:
                await producer.start()
                return
            except (KafkaError, OSError) as exc:
                self.stats.errors[type(exc).__name__] += 1
                await asyncio.sleep(0.5)

    def _next_price(self, symbol: str) -> float:
        p = self.prices[symbol] * (1 + self._rng.gauss(0, 0.001))
        self.prices[symbol] = p
        return round(p, 6)

    async def _send(
        self, producer: AIOKafkaProducer, symbol: str, ts: datetime, phase: str
    ) -> None:
        payload = {
            "symbol": symbol,
            "ts": ts.isoformat(),
            "price": self._next_price(symbol),
            "volume": round(self._rng.uniform(0.1, 5.0), 6),
            "source": SOURCE,
        }
        self.stats.produced[phase] += 1
        try:
            fut = await producer.send(self.topic, orjson.dumps(payload), key=symbol.encode())
            await fut
        except (TimeoutError, KafkaError, OSError) as exc:
            self.stats.failed[phase] += 1
            self.stats.errors[type(exc).__name__] += 1
            with self._lock:
                self.stats.unacked.append((symbol, ts, phase))
            return
        with self._lock:
            self.stats.acked.append(Acked(symbol, ts, self.epoch(), phase, time.monotonic()))
