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
4. Forecasts run in a thread pool (numpy/torch release the GIL). Bars older than the newest
   stored forecast are skipped; during catch-up (backfill, long outage) a bar whose every
   target has already closed is forecast only if it is the newest of its key in the batch.
5. Sinks, in this order: Redis (only the newest forecast of a key), Kafka ``predictions``
   (acknowledged), then one database transaction with predictions and statuses. The database
   rows are the durable marker of finished work: when they are complete, the cache and topic
   writes before them have happened.
6. Accuracy: bars that closed (or changed) score the forecasts that targeted them; rolling
   metrics are updated and degradation queues retrain requests (``model-events``).

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
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import redis.asyncio as aioredis
import sqlalchemy as sa
from aiokafka import AIOKafkaProducer
from sqlalchemy.engine import Engine

from services.common.bars import get_bar_columns, history_days_many
from services.common.config import Settings
from services.common.kafka import dumps
from services.common.metrics import (
    ACCURACY_DEGRADATION,
    FORECAST_ERRORS,
    FORECAST_LATENCY,
    FORECASTS,
    MODEL_MAPE,
    RETRAIN_REQUESTS,
)
from services.prediction import accuracy, store
from services.prediction.clock import (
    INTERVALS,
    as_utc,
    bar_close,
    bucket,
    horizons,
    is_stale,
    step,
)
from services.prediction.models import InsufficientHistory, ModelProvider
from services.prediction.publish import cache_outcomes, publish_outcomes
from services.prediction.records import (
    Outcome,
    build_records,
    error_status,
    insufficient_status,
    ok_status,
)
from services.prediction.tracker import BarTracker, Key, KeyPlan

log = logging.getLogger(__name__)

TickIn = tuple[str, datetime, int | None]  # symbol, ts, partition


class Interrupted(Exception):
    """Stop was requested while the batch waited; nothing of it is committed."""


@dataclass(frozen=True)
class Job:
    symbol: str
    interval: str
    as_of: datetime
    reason: str  # close | late | resume


@dataclass(frozen=True)
class Reforecast:
    """Re-forecast the newest bar of ``symbols`` (None: every active symbol whose history
    reaches the LSTM threshold) for ``interval`` with the current champion."""

    interval: str
    symbols: frozenset[str] | None


@dataclass
class BatchReport:
    ticks: int = 0
    jobs: list[Job] = field(default_factory=list)
    outcomes: list[Outcome] = field(default_factory=list)
    scored: int = 0
    retrain_requests: list[dict[str, Any]] = field(default_factory=list)


class PredictionEngine:
    def __init__(
        self,
        settings: Settings,
        db: Engine,
        redis: aioredis.Redis,
        producer: AIOKafkaProducer,
        provider: ModelProvider,
        intervals: Sequence[str] = INTERVALS,
    ) -> None:
        self.settings = settings
        self.db = db
        self.redis = redis
        self.producer = producer
        self.provider = provider
        self.intervals = tuple(intervals)
        self.tracker = BarTracker(self.intervals)
        self._newest: dict[Key, datetime | None] = {}
        self._pool = ThreadPoolExecutor(
            max_workers=max(1, settings.prediction_workers), thread_name_prefix="forecast"
        )
        self.waiting: set[str] = set()
        self._queued: list[Reforecast] = []
        self.reforecasts_total = 0
        self.last_forecast_at: datetime | None = None
        self.forecasts_total = 0

    def close(self) -> None:
        self._pool.shutdown(wait=True)

    def forget_partitions(self, partitions: Sequence[int]) -> None:
        self.tracker.forget_partitions(partitions)
        self._newest.clear()

    def forget_keys(self, ticks: Sequence[TickIn]) -> None:
        """After a failed batch: its keys resume from the database when re-read."""
        for symbol, _, _ in ticks:
            for interval in self.intervals:
                self.tracker.forget((symbol, interval))
                self._newest.pop((symbol, interval), None)

    # ------------------------------------------------------------------------- batch
    async def handle(
        self, ticks: Sequence[TickIn], stop: asyncio.Event | None = None
    ) -> BatchReport:
        report = BatchReport(ticks=len(ticks))
        plans = self.tracker.plan(ticks)
        if not plans:
            return report
        await self._wait_stored(plans, stop)
        now = datetime.now(UTC)
        jobs, targets = await asyncio.to_thread(self._resolve, plans, now)
        report.jobs = jobs
        report.outcomes = await self._compute(jobs)
        await self._persist(report.outcomes)
        report.scored, report.retrain_requests = await asyncio.to_thread(self._settle, targets)
        for event in report.retrain_requests:
            await self.producer.send_and_wait(
                self.settings.topic_model_events,
                dumps(event),
                key=str(event["symbol"]).encode(),
            )
            RETRAIN_REQUESTS.labels("accuracy_degraded").inc()
        return report

    async def _wait_stored(self, plans: dict[Key, KeyPlan], stop: asyncio.Event | None) -> None:
        needs: dict[str, datetime] = {}
        for plan in plans.values():
            if plan.need_ts is not None:
                prev = needs.get(plan.symbol)
                needs[plan.symbol] = plan.need_ts if prev is None else max(prev, plan.need_ts)
        delay, started, warned = 0.01, time.monotonic(), 0.0
        while True:
            missing = await asyncio.to_thread(self._unstored, needs)
            if not missing:
                self.waiting = set()
                return
            self.waiting = missing
            waited = time.monotonic() - started
            if waited - warned >= self.settings.prediction_writer_wait_s:
                warned = waited
                FORECAST_ERRORS.labels("writer_behind").inc()
                log.warning(
                    "%d symbols wait %.0fs for the writer to store their closing ticks "
                    "(e.g. %s); offsets stay uncommitted",
                    len(missing),
                    waited,
                    sorted(missing)[:5],
                )
            if stop is not None and stop.is_set():
                raise Interrupted("stopped while waiting for the writer")
            await asyncio.sleep(delay)
            delay = min(delay * 1.5, 0.2)

    def _unstored(self, needs: dict[str, datetime]) -> set[str]:
        with self.db.connect() as conn:
            return store.unstored(conn, needs)

    def _resolve(
        self, plans: dict[Key, KeyPlan], now: datetime
    ) -> tuple[list[Job], dict[Key, set[datetime]]]:
        jobs: list[Job] = []
        targets: dict[Key, set[datetime]] = {}
        with self.db.connect() as conn:
            for key, plan in plans.items():
                symbol, interval = key
                n = horizons(self.settings, interval)
                if key not in self._newest:
                    self._newest[key] = store.newest_as_of(conn, symbol, interval)
                newest = self._newest[key]
                wanted: dict[datetime, str] = {}
                settled = targets.setdefault(key, set())
                if plan.resume_before is not None:
                    prev = store.previous_tick_ts(conn, symbol, plan.resume_before)
                    if prev is not None:
                        p = bucket(prev, interval)
                        self.tracker.resolve_resume(key, p)
                        settled.add(p)
                        done = newest is not None and (
                            p < newest
                            or (p == newest and store.forecast_complete(conn, *key, p, n))
                        )
                        if not done:
                            wanted[p] = "resume"
                for b in plan.closed:
                    wanted[b] = "close"
                    settled.add(b)
                if plan.refresh:
                    settled.update(plan.changed)
                    last = self.tracker.last_closed(key)
                    if last is not None:
                        wanted.setdefault(last, "late")
                ordered = sorted(wanted)
                for as_of in ordered:
                    if newest is not None and as_of < newest:
                        continue  # a newer forecast is already stored
                    if as_of != ordered[-1] and is_stale(as_of, interval, n, now):
                        continue  # catch-up: every target already closed
                    jobs.append(Job(symbol, interval, as_of, wanted[as_of]))
        return jobs, targets

    # -------------------------------------------------------------------- promotion
    def queue_reforecast(self, requests: Sequence[Reforecast]) -> None:
        """Called from the event loop (the model-events watcher) after the champions changed."""
        self._queued.extend(r for r in requests if r.interval in self.intervals)

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
            jobs = await asyncio.to_thread(self._resolve_reforecast, queued, owns)
            report.jobs = jobs
            report.outcomes = await self._compute(jobs)
            await self._persist(report.outcomes)
        except BaseException:
            self._queued = queued + self._queued
            raise
        self.reforecasts_total += len(report.outcomes)
        if jobs:
            log.info("re-forecast %d keys with the new champions", len(jobs))
        return report

    def _resolve_reforecast(
        self, requests: Sequence[Reforecast], owns: Callable[[str], bool] | None
    ) -> list[Job]:
        wanted: dict[str, set[str] | None] = {}
        for r in requests:
            if r.symbols is None or wanted.get(r.interval, set()) is None:
                wanted[r.interval] = None
            else:
                current = wanted.setdefault(r.interval, set())
                assert current is not None
                current.update(r.symbols)
        jobs: list[Job] = []
        with self.db.connect() as conn:
            for interval, named in sorted(wanted.items()):
                symbols = (
                    store.symbols_with_history(conn, interval, self.settings.min_history_days_lstm)
                    if named is None
                    else sorted(named)
                )
                symbols = [s for s in symbols if owns is None or owns(s)]
                stored = store.newest_versions(conn, symbols, interval)
                for symbol in symbols:
                    if symbol not in stored:
                        continue  # never forecast: its first forecast uses the champion
                    as_of, version = stored[symbol]
                    champion = self.provider.champion(symbol, interval)
                    if champion is not None and champion.version.label == version:
                        continue  # already served by this version
                    jobs.append(Job(symbol, interval, as_utc(as_of), "promotion"))
        return jobs

    # ----------------------------------------------------------------------- compute
    async def _compute(self, jobs: Sequence[Job]) -> list[Outcome]:
        if not jobs:
            return []
        days = await asyncio.to_thread(self._history_days, sorted({j.symbol for j in jobs}))
        loop = asyncio.get_running_loop()
        futures = [
            loop.run_in_executor(self._pool, self.forecast_one, job, days[job.symbol])
            for job in jobs
        ]
        return list(await asyncio.gather(*futures))

    def _history_days(self, symbols: Sequence[str]) -> dict[str, int]:
        with self.db.connect() as conn:
            return history_days_many(conn, symbols)

    def forecast_one(self, job: Job, available: int) -> Outcome:
        """Forecast every horizon of one job (one model fit serves every horizon: the model
        is asked for steps 1..n once); database errors propagate (batch retried)."""
        symbol, interval, as_of = job.symbol, job.interval, as_utc(job.as_of)
        n = horizons(self.settings, interval)
        with self.db.connect() as conn:
            bars = get_bar_columns(  # numpy columns: no per-bar Python objects
                conn,
                symbol,
                interval,
                end=as_of + step(interval),
                limit=self.settings.prediction_history_bars,
            )
        if not len(bars) or int(bars.bucket[-1]) != int(as_of.timestamp()):
            FORECAST_ERRORS.labels("ERR_PRED_003").inc()
            detail = f"bar {as_of.isoformat()} of {symbol} {interval} is not in the database"
            log.warning("%s", detail)
            return Outcome(symbol, interval, as_of, (), error_status(symbol, interval, detail))
        try:
            served = self.provider.forecast(symbol, interval, bars.close, n, available)
            records = build_records(symbol, interval, as_of, served, datetime.now(UTC))
        except InsufficientHistory as exc:
            FORECAST_ERRORS.labels("ERR_PRED_001").inc()
            status = insufficient_status(symbol, interval, exc.required_days, exc.available_days)
            return Outcome(symbol, interval, as_of, (), status)
        except (ValueError, ArithmeticError, RuntimeError) as exc:
            FORECAST_ERRORS.labels("ERR_PRED_003").inc()
            log.exception("forecast %s %s as of %s failed", symbol, interval, as_of)
            return Outcome(symbol, interval, as_of, (), error_status(symbol, interval, f"{exc}"))
        return Outcome(symbol, interval, as_of, records, ok_status(symbol, interval, available))

    # ----------------------------------------------------------------------- persist
    async def _persist(self, outcomes: Sequence[Outcome]) -> None:
        if not outcomes:
            return
        newest_of: dict[Key, Outcome] = {}
        for o in outcomes:
            k = (o.symbol, o.interval)
            if k not in newest_of or o.as_of >= newest_of[k].as_of:
                newest_of[k] = o
        to_cache = []
        for k, o in newest_of.items():
            known = self._newest.get(k)
            if o.ok and known is not None and o.as_of < known:
                continue
            to_cache.append(o)
        await cache_outcomes(self.redis, self.settings, to_cache, datetime.now(UTC))
        cached_at = datetime.now(UTC)
        await publish_outcomes(self.producer, self.settings.topic_predictions, outcomes)
        await asyncio.to_thread(self._save, outcomes)
        for o in outcomes:
            if not o.ok:
                continue
            k = (o.symbol, o.interval)
            known = self._newest.get(k)
            if known is None or o.as_of > known:
                self._newest[k] = o.as_of
            FORECASTS.labels(o.records[0].model, o.interval).inc()
            self.forecasts_total += 1
            since_close = (cached_at - bar_close(o.as_of, o.interval)).total_seconds()
            if 0 <= since_close < 3600:
                FORECAST_LATENCY.observe(since_close)
        self.last_forecast_at = cached_at

    def _save(self, outcomes: Sequence[Outcome]) -> None:
        with self.db.begin() as conn:
            store.save_outcomes(conn, outcomes)

    # ---------------------------------------------------------------------- accuracy
    def _settle(self, targets: dict[Key, set[datetime]]) -> tuple[int, list[dict[str, Any]]]:
        scored = 0
        events: list[dict[str, Any]] = []
        s = self.settings
        with self.db.begin() as conn:
            for (symbol, interval), bars in targets.items():
                if not bars:
                    continue
                n = horizons(s, interval)
                changed = accuracy.score_targets(conn, symbol, interval, bars, n)
                scored += changed
                if changed:
                    events.extend(self._check_degradation(conn, symbol, interval))
        return scored, events

    def _check_degradation(
        self, conn: sa.Connection, symbol: str, interval: str
    ) -> list[dict[str, Any]]:
        s = self.settings
        events = []
        for r in accuracy.rolling_accuracy(conn, symbol, interval, s.accuracy_window):
            reference = self.provider.validation_mase(symbol, interval, r.model)
            ratio = accuracy.degradation_ratio(r, reference)
            if r.mape is not None:
                MODEL_MAPE.labels(symbol, interval, r.model).set(r.mape)
            if ratio is not None:
                ACCURACY_DEGRADATION.labels(symbol, interval, r.model).set(ratio)
            if not accuracy.is_degraded(
                r, ratio, s.accuracy_degradation_factor, s.accuracy_min_samples
            ):
                continue
            reason = (
                f"rolling MASE {r.mase:.3f} of {r.model} is {ratio:.2f}x its validation "
                f"MASE {reference or 1.0:.3f} (limit {s.accuracy_degradation_factor:.2f}x)"
            )
            details = {
                "model": r.model,
                "validation_mase": reference,
                "ratio": ratio,
                **r.to_dict(),
            }
            request_id = accuracy.request_retrain(
                conn, symbol, interval, reason, details, s.retrain_cooldown_s
            )
            if request_id is None:
                continue
            log.warning("retrain requested for %s %s: %s", symbol, interval, reason)
            events.append(
                {
                    "type": "retrain_requested",
                    "symbol": symbol,
                    "interval": interval,
                    "request_id": request_id,
                    "reason": reason,
                    "details": details,
                    "requested_at": datetime.now(UTC).isoformat(),
                }
            )
        return events
