"""``ticks:{SYMBOL}``: the newest tick per symbol, at most once per ``stream_tick_interval_ms``.

The Kafka reader hands over raw tick bytes (``offer``, no parsing); a flush task publishes
the newest one per symbol each interval, validated as a :class:`Tick`. However fast a
symbol trades, its subscribers get a bounded rate and always the latest price.
"""

from __future__ import annotations

import asyncio
import logging

from pydantic import ValidationError

from services.api.core.bounded import BackgroundTask
from services.api.stream.hub import Hub
from services.common.schemas import Tick

log = logging.getLogger(__name__)


class TickCoalescer:
    def __init__(self, hub: Hub, interval_s: float) -> None:
        self.hub = hub
        self.interval_s = interval_s
        self._pending: dict[str, tuple[bytes, float]] = {}
        self._task = BackgroundTask("stream-ticks", "stream tick flush", 1.0)
        self.coalesced = 0

    def offer(self, symbol: str, raw: bytes, born: float) -> None:
        if symbol in self._pending:
            self.coalesced += 1
        self._pending[symbol] = (raw, born)

    def flush(self) -> int:
        pending, self._pending = self._pending, {}
        sent = 0
        for symbol, (raw, born) in pending.items():
            try:
                data = Tick.from_json(raw).to_json()
            except ValidationError:
                log.debug("unreadable tick of %s skipped", symbol)
                continue
            self.hub.publish("tick", f"ticks:{symbol}", data, born, coalesce=True)
            sent += 1
        return sent

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self.interval_s)
            try:
                self.flush()
            except Exception:
                log.exception("tick flush failed")

    def start(self) -> None:
        self._task.start(self._run)

    async def close(self) -> None:
        await self._task.stop()
