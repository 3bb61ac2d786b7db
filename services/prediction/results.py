"""Step 5 of ``services.prediction.engine``: write the outcomes of a run, in this order.

1. Redis (only the newest outcome of each key in the run, written as soon as it is ready:
   freshness is measured there) and Kafka ``predictions`` (every record handed to the
   producer as soon as it is ready): :class:`BatchSink`, with ``services.prediction.publish``.
2. Every broker acknowledgement awaited, then one database transaction with all predictions
   and statuses of the run: :meth:`ResultWriter.finish`. The database rows are the durable
   marker of finished work: when they are complete, the cache and topic writes before them
   have happened. A failure before the database write fails the run.
3. Bookkeeping: the newest forecast bar per key (shared with
   ``services.prediction.planning``), counters and metrics.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import redis.asyncio as aioredis
from aiokafka import AIOKafkaProducer
from sqlalchemy.engine import Engine

from services.common.config import Settings
from services.common.metrics import FORECAST_LATENCY, FORECASTS
from services.prediction import store
from services.prediction.clock import bar_close
from services.prediction.publish import cache_outcomes, encode_records, send_outcomes
from services.prediction.records import Outcome
from services.prediction.tracker import Key


@dataclass
class ResultWriter:
    """Writes the outcomes of runs; ``newest`` is the planner's (advanced here)."""

    settings: Settings
    db: Engine
    redis: aioredis.Redis
    producer: AIOKafkaProducer
    newest: dict[Key, datetime | None]
    forecasts_total: int = 0
    last_forecast_at: datetime | None = None

    def sink(self, runs: Sequence[tuple[str, str, datetime]]) -> BatchSink:
        """The Redis and Kafka sink of a run of ``(symbol, interval, as_of)`` jobs."""
        return BatchSink(self, runs)

    async def finish(self, outcomes: Sequence[Outcome], sink: BatchSink) -> None:
        """Wait for the broker's acknowledgements, then write the database (the durable
        marker), then the in-memory bookkeeping."""
        await sink.flush()
        await asyncio.to_thread(self._save, outcomes)
        for outcome in outcomes:
            if not outcome.ok:
                continue
            key = (outcome.symbol, outcome.interval)
            known = self.newest.get(key)
            if known is None or outcome.as_of > known:
                self.newest[key] = outcome.as_of
            FORECASTS.labels(outcome.records[0].model, outcome.interval).inc()
            self.forecasts_total += 1
        self.last_forecast_at = sink.cached_at or datetime.now(UTC)

    def _save(self, outcomes: Sequence[Outcome]) -> None:
        with self.db.begin() as conn:
            store.save_outcomes(conn, outcomes)


class BatchSink:
    """Redis and Kafka for the outcomes of one run, as they become ready.

    Redis gets only the newest bar's outcome of each key in the run (decided from the jobs
    up front, so an older bar finishing later never overwrites it) and never a forecast older
    than the newest already stored; it is written as soon as that outcome is ready (freshness
    is measured there). Every record is handed to the producer as soon as it is ready and
    :meth:`flush` waits for all acknowledgements. The caller writes the database only after
    :meth:`flush`, so for every outcome: Redis, then Kafka, then the database.
    """

    def __init__(self, writer: ResultWriter, runs: Sequence[tuple[str, str, datetime]]):
        self.writer = writer
        self.newest: dict[Key, datetime] = {}
        for symbol, interval, as_of in runs:
            key = (symbol, interval)
            if key not in self.newest or as_of > self.newest[key]:
                self.newest[key] = as_of
        self.futures: list[asyncio.Future[Any]] = []
        self.cached_at: datetime | None = None

    async def ready(self, outcomes: Sequence[Outcome]) -> None:
        writer = self.writer
        to_cache = []
        for outcome in outcomes:
            key = (outcome.symbol, outcome.interval)
            if outcome.as_of != self.newest.get(key):
                continue
            known = writer.newest.get(key)
            if outcome.ok and known is not None and outcome.as_of < known:
                continue
            to_cache.append(outcome)
        payloads = encode_records(outcomes)
        if to_cache:
            await cache_outcomes(
                writer.redis, writer.settings, to_cache, datetime.now(UTC), payloads
            )
        cached_at = self.cached_at = datetime.now(UTC)
        for outcome in outcomes:
            since_close = (cached_at - bar_close(outcome.as_of, outcome.interval)).total_seconds()
            if outcome.ok and 0 <= since_close < 3600:
                FORECAST_LATENCY.observe(since_close)
        topic = writer.settings.topic_predictions
        self.futures.extend(await send_outcomes(writer.producer, topic, outcomes, payloads))

    async def flush(self) -> None:
        futures, self.futures = self.futures, []
        if futures:
            await asyncio.gather(*futures)
