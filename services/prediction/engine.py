"""One batch of ticks in, every forecast it calls for out: durable, cached, published, scored.

For each batch (see ``services.prediction.consumer`` for the offsets):

1. The :class:`~services.prediction.tracker.BarTracker` turns ticks into closed bars per
   symbol and interval, each bar once however many ticks arrived (debounce).
2. *Writer race*: the ingestion writer is another consumer group, so a bar may not be in the
   database yet. The engine waits until, for every symbol with work, ``price_ticks`` holds the
   tick that closed its bar (or a later one). The writer stores a partition in order with one
   transaction per batch, and bars are maintained in the same transaction (plain path) or
   read in real time (TimescaleDB), so the bar is then complete. Waiting is unbounded but
   interruptible: forecasting from a half-written bar would be wrong, and the offsets are not
   committed meanwhile ("symbols waiting" in ``/health/detailed``).
3. Resume: a key seen for the first time since start or rebalance has unknown state; the
   newest bar before its first tick is forecast unless the database already holds that
   forecast for every horizon.
4. Forecasts (see :meth:`PredictionEngine.forecast_jobs`). The inputs of up to 256 jobs
   (days of history, bars) are read in one query, the next chunk while the previous one is
   forecast. ARIMA runs in worker processes (``services.prediction.pool``: statsmodels holds
   the GIL), LSTM and everything without workers in a thread pool (torch releases the GIL),
   in small groups so that the first forecasts of a burst are out while later ones are still
   fitting. Bars older than the newest stored forecast are skipped; during catch-up
   (backfill, long outage) a bar whose every target has already closed is forecast only if
   it is the newest of its key in the batch.
5. Sinks, for every forecast in this order: Redis (only the newest forecast of a key in the
   batch, written as soon as that forecast is ready: freshness is measured there), Kafka
   ``predictions`` (handed over when ready, every acknowledgement awaited once the batch is
   computed), then one database transaction with all predictions and statuses of the batch.
   The database rows are the durable marker of finished work: when they are complete, the
   cache and topic writes before them have happened. A failure anywhere fails the batch
   before the database write (the consumer commits nothing and re-reads it).
6. Accuracy: bars that closed (or changed) score the forecasts that targeted them; rolling
   metrics are updated and degradation queues retrain requests (``model-events``).

Modules, one job each: which bars need forecasts (``services.prediction.planning``: steps
2-3 and the re-forecast resolution), computing forecasts (``services.prediction.dispatch``:
step 4), writing results (``services.prediction.results``: step 5) and scoring accuracy
(``services.prediction.scoring``: step 6). :class:`PredictionEngine` runs them in order.

Re-forecast on promotion: a champion change (``model_promoted`` or the registry poll, see
``services.prediction.events``) queues a :class:`Reforecast` with :meth:`queue_reforecast`.
The consumer runs the queue with :meth:`run_queued` *between* batches, on the same task, so it
never races a batch: the newest forecast bar of every affected key that this replica owns
(its partition) is forecast again with the new champion through steps 4-5 above (same
sinks, same order, the database last). A key whose newest forecast already carries the
serving version is skipped. The queue is not tied to offsets: when the work fails it stays
queued and is retried; when the process dies the next forecast of the key uses the new
champion anyway.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime

import redis.asyncio as aioredis
from aiokafka import AIOKafkaProducer
from sqlalchemy.engine import Engine

from services.common.config import Settings
from services.common.events import RetrainRequested
from services.prediction.champions import ModelProvider
from services.prediction.clock import INTERVALS, as_utc
from services.prediction.dispatch import (
    BARS_PER_QUERY_JOBS,
    ForecastDispatcher,
    forecast_processes,
)
from services.prediction.planning import ForecastPlanner, Interrupted, Job, Reforecast
from services.prediction.records import Outcome
from services.prediction.results import ResultWriter
from services.prediction.scoring import AccuracyScorer
from services.prediction.tracker import BarTracker

__all__ = [
    "BARS_PER_QUERY_JOBS",
    "BatchReport",
    "Interrupted",
    "Job",
    "PredictionEngine",
    "Reforecast",
    "TickIn",
    "forecast_processes",
]

log = logging.getLogger(__name__)

TickIn = tuple[str, datetime, int | None]  # symbol, ts, partition


@dataclass
class BatchReport:
    ticks: int = 0
    jobs: list[Job] = field(default_factory=list)
    outcomes: list[Outcome] = field(default_factory=list)
    scored: int = 0
    retrain_requests: list[RetrainRequested] = field(default_factory=list)


class PredictionEngine:
    """Runs the steps of the module docstring over the planner, the dispatcher, the result
    writer and the accuracy scorer."""

    def __init__(
        self,
        settings: Settings,
        db: Engine,
        redis: aioredis.Redis,
        producer: AIOKafkaProducer,
        provider: ModelProvider,
        intervals: Sequence[str] = INTERVALS,
    ) -> None:
        self.intervals = tuple(intervals)
        self.tracker = BarTracker(self.intervals)
        self.planner = ForecastPlanner(settings, db, provider, self.tracker)
        self.dispatcher = ForecastDispatcher(settings, db, provider)
        self.writer = ResultWriter(settings, db, redis, producer, self.planner.newest)
        self.scorer = AccuracyScorer(settings, db, provider, producer)
        self._queued: list[Reforecast] = []
        self.reforecasts_total = 0

    def start(self) -> None:
        """Spawn and warm the forecast processes (blocking, ~1 s); optional, else the first
        batch that needs them starts them."""
        self.dispatcher.start()

    def close(self) -> None:
        self.dispatcher.close()

    @property
    def redis(self) -> aioredis.Redis:
        return self.writer.redis

    @property
    def producer(self) -> AIOKafkaProducer:
        return self.writer.producer

    @property
    def waiting(self) -> set[str]:
        """Symbols whose closing tick the writer has not stored yet."""
        return self.planner.waiting

    @property
    def forecasts_total(self) -> int:
        return self.writer.forecasts_total

    @property
    def last_forecast_at(self) -> datetime | None:
        return self.writer.last_forecast_at

    def forget_partitions(self, partitions: Sequence[int]) -> None:
        self.tracker.forget_partitions(partitions)
        self.planner.newest.clear()

    def forget_keys(self, ticks: Sequence[TickIn]) -> None:
        """After a failed batch: its keys resume from the database when re-read."""
        for symbol, _, _ in ticks:
            for interval in self.intervals:
                self.tracker.forget((symbol, interval))
                self.planner.newest.pop((symbol, interval), None)

    # ------------------------------------------------------------------------- batch
    async def handle(
        self, ticks: Sequence[TickIn], stop: asyncio.Event | None = None
    ) -> BatchReport:
        report = BatchReport(ticks=len(ticks))
        plans = self.tracker.plan(ticks)
        if not plans:
            return report
        await self.planner.wait_stored(plans, stop)
        now = datetime.now(UTC)
        jobs, targets = await asyncio.to_thread(self.planner.resolve, plans, now)
        report.jobs = jobs
        report.outcomes = await self.forecast_jobs(jobs)
        settled = await asyncio.to_thread(self.scorer.settle, targets)
        report.scored, report.retrain_requests = settled
        await self.scorer.publish(report.retrain_requests)
        return report

    async def forecast_jobs(self, jobs: Sequence[Job]) -> list[Outcome]:
        """Steps 4-5 of the module docstring for ``jobs``: forecast, then the sinks (Redis as
        each forecast is ready, Kafka acknowledged, the database last)."""
        if not jobs:
            return []
        sink = self.writer.sink([(job.symbol, job.interval, as_utc(job.as_of)) for job in jobs])
        outcomes = await self.dispatcher.compute(jobs, sink.ready)
        await self.writer.finish(outcomes, sink)
        return outcomes

    # -------------------------------------------------------------------- promotion
    def queue_reforecast(self, requests: Sequence[Reforecast]) -> None:
        """Called from the event loop (the model-events watcher) after the champions changed."""
        self._queued.extend(request for request in requests if request.interval in self.intervals)

    @property
    def queued(self) -> int:
        return len(self._queued)

    async def run_queued(self, owns: Callable[[str], bool] | None = None) -> BatchReport:
        """Run the queued re-forecasts (between batches); on failure they stay queued."""
        report = BatchReport()
        if not self._queued:
            return report
        queued, self._queued = self._queued, []
        try:
            jobs = await asyncio.to_thread(self.planner.resolve_reforecast, queued, owns)
            report.jobs = jobs
            report.outcomes = await self.forecast_jobs(jobs)
        except BaseException:
            self._queued = queued + self._queued
            raise
        self.reforecasts_total += len(report.outcomes)
        if jobs:
            log.info("re-forecast %d keys with the new champions", len(jobs))
        return report
