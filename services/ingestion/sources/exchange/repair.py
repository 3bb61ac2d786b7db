"""Repairing an exchange stream's holes from the venue's REST trades endpoint.

A hole the stream found (:mod:`.gaps`) is queued; one task fetches each in turn with
:meth:`ExchangeSource.rest_gap <services.ingestion.sources.exchange.stream.ExchangeSource.
rest_gap>` (bounded retries, the stream's backoff) and puts the trades into the stream's
buffer: they take the path every trade takes (validation, ``prices``), and the store's key
keeps each trade once.
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING

from services.common.metrics import SOURCE_GAPS, SOURCE_TRADES_REPAIRED
from services.ingestion.sources.exchange.common import plain
from services.ingestion.sources.exchange.gaps import Gap

if TYPE_CHECKING:
    from services.ingestion.sources.exchange.stream import ExchangeSource

log = logging.getLogger(__name__)


class GapRepair:
    """The holes of one source's stream, repaired one at a time (:meth:`run` is the task)."""

    def __init__(self, source: ExchangeSource) -> None:
        self.source = source
        self.queue: asyncio.Queue[Gap] = asyncio.Queue()

    def found(self, gap: Gap) -> None:
        """Count and log a hole; queue it for repair when the stream repairs."""
        source = self.source
        source.stats.gaps["found"] += 1
        SOURCE_GAPS.labels(source.kind, "found").inc()
        log.warning("%s: gap found: %s", source.kind, gap.describe())
        if source.config.repair:
            self.queue.put_nowait(gap)

    async def run(self) -> None:
        while True:
            gap = await self.queue.get()
            await self.repair(gap)

    async def repair(self, gap: Gap) -> bool:
        """Fetch ``gap`` from REST (bounded retries) into the stream; True once complete."""
        source = self.source
        stats, kind = source.stats, source.kind
        for attempt in range(source.config.repair_attempts):
            try:
                trades = await source.rest_gap(gap)
            except Exception as exc:  # noqa: BLE001 - HTTP, JSON, a malformed trade: retried
                source._error(f"gap repair of {gap.describe()} failed: {exc!r}"[:300])
                await asyncio.sleep(source.backoff_s(attempt))
                continue
            if trades:
                await source.buffer.put(plain(trades))
            count = len(trades)
            stats.gaps["trades_repaired"] += count
            SOURCE_TRADES_REPAIRED.labels(kind).inc(count)
            complete = gap.expected is None or count >= gap.expected
            outcome = "repaired" if complete else "failed"
            stats.gaps[outcome] += 1
            SOURCE_GAPS.labels(kind, outcome).inc()
            source.tracker.close(gap)
            log.info("%s: gap %s: %d trades from REST (%s)", kind, gap.describe(), count, outcome)
            return complete
        stats.gaps["failed"] += 1
        SOURCE_GAPS.labels(kind, "failed").inc()
        source.tracker.close(gap)
        return False
