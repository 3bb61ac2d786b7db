"""``bars:{SYMBOL}:{1m|1h|1d}``: a bar once it has closed *and* the writer has committed it.

From the ticks on ``prices`` (only for channels someone here subscribes to) the closer keeps
the open bucket per symbol and interval; a tick in a later bucket closes the bar before it.
The ingestion writer is another consumer, so the bar may not be stored yet: the closer waits
(bounded polling) until ``price_ticks`` holds that closing tick or a later one. The writer
stores a partition in order, one transaction per batch, and bars are maintained in the same
transaction (or read live on TimescaleDB), so the bar read then through the bar query layer
is exactly what ``/bars`` answers. Waiting happens in this task only: the Kafka reader and
the clients never wait for it.
"""

from __future__ import annotations

import asyncio
import logging
import time
from datetime import UTC, datetime, timedelta

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from services.api.core.bounded import BackgroundTask
from services.api.stream.hub import Hub
from services.api.stream.snapshot import bar_json
from services.common.bars import get_bars

log = logging.getLogger(__name__)

STEP_S = {"1m": 60, "1h": 3600, "1d": 86400}
GIVE_UP_S = 120.0  # a bar whose closing tick is not stored by then is not announced
_STORED = sa.text("SELECT EXISTS (SELECT 1 FROM price_ticks WHERE symbol = :symbol AND ts >= :ts)")

Key = tuple[str, str]  # (symbol, interval)
Item = tuple[str, str, int]  # (symbol, interval, closed bucket in epoch seconds)
Due = dict[Item, tuple[datetime, float, float]]  # -> (closing tick ts, Kafka ts, since)


class BarCloser:
    def __init__(self, hub: Hub, engine: Engine) -> None:
        self.hub = hub
        self.engine = engine
        self._open: dict[Key, int] = {}  # open bucket, epoch seconds
        self._due: Due = {}
        self._wake = asyncio.Event()
        self._task = BackgroundTask("stream-bars", "stream bar closer", 2.0)
        self.announced = 0

    def wants(self, symbol: str) -> bool:
        return any(self.hub.interested(f"bars:{symbol}:{step}") for step in STEP_S)

    def observe(self, symbol: str, ts: datetime, born: float) -> None:
        epoch = ts.timestamp()
        for interval, step in STEP_S.items():
            key = (symbol, interval)
            if not self.hub.interested(f"bars:{symbol}:{interval}"):
                self._open.pop(key, None)
                continue
            bucket = int(epoch // step) * step
            current = self._open.get(key)
            if current is None or bucket > current:
                self._open[key] = bucket
                if current is not None:
                    self._due[(symbol, interval, current)] = (ts, born, time.monotonic())
                    self._wake.set()

    async def _run(self) -> None:
        delay = 0.01
        while True:
            if not self._due:
                self._wake.clear()
                await self._wake.wait()
                delay = 0.01
            due = dict(self._due)
            try:
                ready = await asyncio.to_thread(self._ready, due)
            except Exception:
                log.exception("bar check failed; retrying")
                ready = {}
            for item, data in ready.items():
                self._due.pop(item, None)
                symbol, interval, _ = item
                self.hub.publish("bar", f"bars:{symbol}:{interval}", data, due[item][1], True)
                self.announced += 1
            now = time.monotonic()
            for item, (_, _, since) in list(self._due.items()):
                if now - since > GIVE_UP_S:
                    log.warning("bar %s not stored after %.0fs; not announced", item, GIVE_UP_S)
                    self._due.pop(item, None)
            if self._due:
                await asyncio.sleep(delay)
                delay = min(delay * 1.5, 0.2)

    def _ready(self, due: Due) -> dict[Item, str]:
        ready: dict[Item, str] = {}
        with self.engine.connect() as conn:
            stored: dict[tuple[str, datetime], bool] = {}
            for item, (ts, _, _) in due.items():
                symbol, interval, bucket = item
                if (symbol, ts) not in stored:
                    stored[(symbol, ts)] = bool(
                        conn.execute(_STORED, {"symbol": symbol, "ts": ts}).scalar()
                    )
                if not stored[(symbol, ts)]:
                    continue
                start = datetime.fromtimestamp(bucket, UTC)
                end = start + timedelta(seconds=STEP_S[interval])
                bars = get_bars(conn, symbol, interval, start=start, end=end, limit=1)
                if bars:
                    ready[item] = bar_json(bars[0])
        return ready

    def start(self) -> None:
        self._task.start(self._run)

    async def close(self) -> None:
        await self._task.stop()
