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
import math
import os
import time
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Final

import redis.asyncio as aioredis
import sqlalchemy as sa
from aiokafka import AIOKafkaProducer
from sqlalchemy.engine import Engine

from ml.serving import Calibration
from services.common.bars import Closes, bar_closes_many, history_days_many
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
from services.prediction import accuracy, calibration_store, store
from services.prediction.clock import (
    INTERVALS,
    as_utc,
    bar_close,
    bucket,
    horizons,
    is_stale,
    step,
)
from services.prediction.models import (
    InsufficientHistory,
    ModelChoice,
    ModelProvider,
    to_served,
)
from services.prediction.pool import ArimaTask, ForecastPool
from services.prediction.publish import cache_outcomes, encode_records, send_outcomes
from services.prediction.records import (
    Outcome,
    Served,
    build_records,
    error_status,
    insufficient_status,
    ok_status,
)
from services.prediction.tracker import BarTracker, Key, KeyPlan

log = logging.getLogger(__name__)

TickIn = tuple[str, datetime, int | None]  # symbol, ts, partition
# Jobs whose inputs (history days, bars) are read in one query; the next chunk loads while
# the previous one is forecast.
BARS_PER_QUERY_JOBS: Final = 256


def forecast_processes(settings: Settings) -> int:
    """Worker processes for ARIMA: setting ``prediction_processes`` when set (0: none,
    forecasts run in ``prediction_workers`` threads), else one per usable core, at most 4.
    The service process itself (event loop, database, Redis, Kafka, LSTM) runs beside them,
    so on 2 cores a burst runs 3 busy processes on 2 cores: the workers, not the event loop,
    wait for a core (the OS shares cores fairly; the GIL did not)."""
    if settings.prediction_processes is not None:
        return max(0, settings.prediction_processes)
    affinity = getattr(os, "sched_getaffinity", None)  # Linux; elsewhere every core
    cores = len(affinity(0)) if affinity is not None else os.cpu_count() or 1
    return max(1, min(4, cores))


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
        self._thread_count = max(1, settings.prediction_workers)
        self._threads = ThreadPoolExecutor(
            max_workers=self._thread_count, thread_name_prefix="forecast"
        )
        processes = forecast_processes(settings)
        self._procs = ForecastPool(processes) if processes > 0 else None
        self.waiting: set[str] = set()
        self._queued: list[Reforecast] = []
        self.reforecasts_total = 0
        self.last_forecast_at: datetime | None = None
        self.forecasts_total = 0

    def start(self) -> None:
        """Spawn and warm the forecast processes (blocking, ~1 s); optional, else the first
        batch that needs them starts them."""
        if self._procs is not None:
            self._procs.start()

    def close(self) -> None:
        self._threads.shutdown(wait=True)
        if self._procs is not None:
            self._procs.close()

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
        report.outcomes = await self.forecast_jobs(jobs)
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
            report.outcomes = await self.forecast_jobs(jobs)
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
    async def forecast_jobs(self, jobs: Sequence[Job]) -> list[Outcome]:
        """Steps 4-5 of the module docstring for ``jobs``: forecast, then the sinks (Redis as
        each forecast is ready, Kafka acknowledged, the database last)."""
        if not jobs:
            return []
        sink = _Sink(self, [(j.symbol, j.interval, as_utc(j.as_of)) for j in jobs])
        outcomes = await self._compute(jobs, sink.ready)
        await self._finish(outcomes, sink)
        return outcomes

    async def _compute(self, jobs: Sequence[Job], on_ready: OnReady | None = None) -> list[Outcome]:
        """Outcomes of ``jobs`` (same order). Inputs are read per chunk of jobs in one query
        (history days and bars), the next chunk while the previous one is being forecast;
        ``on_ready`` gets each group of outcomes as soon as it is computed."""
        if not jobs:
            return []
        results: list[Outcome | None] = [None] * len(jobs)

        async def deliver(indices: Sequence[int], outcomes: Sequence[Outcome]) -> None:
            for i, o in zip(indices, outcomes, strict=True):
                results[i] = o
            if on_ready is not None and outcomes:
                await on_ready(outcomes)

        try:
            async with asyncio.TaskGroup() as tg:
                for start in range(0, len(jobs), BARS_PER_QUERY_JOBS):
                    chunk = range(start, min(start + BARS_PER_QUERY_JOBS, len(jobs)))
                    inputs = await asyncio.to_thread(self._load, [jobs[i] for i in chunk])
                    self._dispatch(tg, list(chunk), jobs, inputs, deliver)
        except BaseExceptionGroup as group:  # one failure cancels the rest: raise it plainly
            raise group.exceptions[0] from None
        assert all(o is not None for o in results)
        return [o for o in results if o is not None]

    def _load(self, jobs: Sequence[Job]) -> _Inputs:
        """Days of history of the jobs' symbols, each job's bars and its key's calibration
        state, on one connection."""
        limit = self.settings.prediction_history_bars
        closes: list[Closes | None] = [None] * len(jobs)
        with self.db.connect() as conn:
            days = history_days_many(conn, sorted({j.symbol for j in jobs}))
            by_interval: dict[str, list[int]] = {}
            for i, j in enumerate(jobs):
                by_interval.setdefault(j.interval, []).append(i)
            for interval, idx in by_interval.items():
                requests = [(jobs[i].symbol, as_utc(jobs[i].as_of) + step(interval)) for i in idx]
                for i, c in zip(idx, bar_closes_many(conn, interval, requests, limit), strict=True):
                    closes[i] = c
            states = calibration_store.load(conn, {(j.symbol, j.interval) for j in jobs})
        loaded = [c for c in closes if c is not None]
        assert len(loaded) == len(jobs)
        return days, loaded, states

    def _dispatch(
        self,
        tg: asyncio.TaskGroup,
        indices: Sequence[int],
        jobs: Sequence[Job],
        inputs: _Inputs,
        deliver: Deliver,
    ) -> None:
        """Settle what needs no model at once; ARIMA choices go to the process pool (when
        there is one), the rest (LSTM, or everything without a pool) to the thread pool."""
        days, closes, states = inputs
        settled: list[tuple[int, Outcome]] = []
        remote: list[tuple[int, _Work]] = []
        local: list[tuple[int, _Work]] = []
        for i, bars in zip(indices, closes, strict=True):
            job = jobs[i]
            symbol, interval, as_of = job.symbol, job.interval, as_utc(job.as_of)
            available = days.get(symbol, 0)
            if not len(bars) or int(bars.bucket[-1]) != int(as_of.timestamp()):
                FORECAST_ERRORS.labels("ERR_PRED_003").inc()
                detail = f"bar {as_of.isoformat()} of {symbol} {interval} is not in the database"
                log.warning("%s", detail)
                settled.append(
                    (
                        i,
                        Outcome(
                            symbol, interval, as_of, (), error_status(symbol, interval, detail)
                        ),
                    )
                )
                continue
            try:
                choice = self.provider.choose(symbol, interval, available)
            except InsufficientHistory as exc:
                FORECAST_ERRORS.labels("ERR_PRED_001").inc()
                status = insufficient_status(
                    symbol, interval, exc.required_days, exc.available_days
                )
                settled.append((i, Outcome(symbol, interval, as_of, (), status)))
                continue
            n = horizons(self.settings, interval)
            cal = calibration_store.calibration_of(states[(symbol, interval)], self.settings, n)
            work = _Work(job, as_of, n, available, bars, choice, cal, self.settings)
            if self._procs is not None and choice.model != "lstm":
                remote.append((i, work))
            else:
                local.append((i, work))
        if settled:
            tg.create_task(deliver([i for i, _ in settled], [o for _, o in settled]))
        for group in _groups(remote, self._procs.processes * 2 if self._procs else 1, 16):
            tg.create_task(self._run_remote(group, deliver))
        # LSTM batches one network call per group; torch uses every core for it already
        for group in _groups(local, 1 if self._procs is not None else self._thread_count, 128):
            tg.create_task(self._run_local(group, deliver))

    async def _run_remote(
        self,
        group: Sequence[tuple[int, _Work]],
        deliver: Deliver,
    ) -> None:
        assert self._procs is not None
        tasks = [
            ArimaTask(
                w.bars.close,
                w.horizon,
                w.available,
                None if w.choice.lstm is None else w.choice.lstm.version,
                None if w.choice.lstm is None else w.choice.lstm.validation_mase,
                w.calibration,
            )
            for _, w in group
        ]
        results = await self._procs.run(tasks, self.provider.policy)
        now = datetime.now(UTC)
        outcomes = []
        for (_, w), r in zip(group, results, strict=True):
            if r.served is None:
                log.error(
                    "forecast %s %s as of %s failed: %s\n%s",
                    w.job.symbol,
                    w.job.interval,
                    w.as_of,
                    r.error,
                    r.trace,
                )
                outcomes.append(w.failed(r.error or "forecast failed"))
                continue
            outcomes.append(w.done(to_served(r.served), now))
        await deliver([i for i, _ in group], outcomes)

    async def _run_local(
        self,
        group: Sequence[tuple[int, _Work]],
        deliver: Deliver,
    ) -> None:
        loop = asyncio.get_running_loop()
        outcomes = await loop.run_in_executor(
            self._threads, self._serve_local, [w for _, w in group]
        )
        await deliver([i for i, _ in group], outcomes)

    def _serve_local(self, works: Sequence[_Work]) -> list[Outcome]:
        results = self.provider.serve_many(
            [(w.bars.close, w.horizon, w.available, w.choice.lstm, w.calibration) for w in works]
        )
        now = datetime.now(UTC)
        out = []
        for w, r in zip(works, results, strict=True):
            if isinstance(r, Exception):
                log.error(
                    "forecast %s %s as of %s failed",
                    w.job.symbol,
                    w.job.interval,
                    w.as_of,
                    exc_info=r,
                )
                out.append(w.failed(f"{r}"))
            else:
                out.append(w.done(r, now))
        return out

    # ----------------------------------------------------------------------- persist
    async def _persist(self, outcomes: Sequence[Outcome]) -> None:
        """The sinks for outcomes computed without ``on_ready``: Redis, Kafka, database."""
        if not outcomes:
            return
        sink = _Sink(self, [(o.symbol, o.interval, o.as_of) for o in outcomes])
        await sink.ready(outcomes)
        await self._finish(outcomes, sink)

    async def _finish(self, outcomes: Sequence[Outcome], sink: _Sink) -> None:
        """Wait for the broker's acknowledgements, then write the database (the durable
        marker), then the in-memory bookkeeping."""
        await sink.flush()
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
        self.last_forecast_at = sink.cached_at or datetime.now(UTC)

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
                fresh: list[calibration_store.ScoredRow] = []
                changed = accuracy.score_targets(conn, symbol, interval, bars, n, fresh)
                calibration_store.feed(conn, symbol, interval, fresh, s)
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


OnReady = Callable[[Sequence[Outcome]], Awaitable[None]]
# days of history per symbol, bars per job, calibration state per key
_Inputs = tuple[
    dict[str, int], list[Closes], dict[Key, dict[tuple[int, float], calibration_store.LevelState]]
]
Deliver = Callable[[Sequence[int], Sequence[Outcome]], Coroutine[Any, Any, None]]


@dataclass(frozen=True)
class _Work:
    """One job with its inputs, ready for a model."""

    job: Job
    as_of: datetime
    horizon: int
    available: int
    bars: Closes
    choice: ModelChoice
    calibration: Calibration
    settings: Settings

    def done(self, served: Served, now: datetime) -> Outcome:
        j = self.job
        stale_after = self.settings.prediction_stale_after_intervals
        try:
            records = build_records(j.symbol, j.interval, self.as_of, served, now, stale_after)
        except ValueError as exc:
            log.error("forecast %s %s as of %s unusable: %s", j.symbol, j.interval, self.as_of, exc)
            return self.failed(f"{exc}")
        return Outcome(
            j.symbol,
            j.interval,
            self.as_of,
            records,
            ok_status(j.symbol, j.interval, self.available),
        )

    def failed(self, detail: str) -> Outcome:
        FORECAST_ERRORS.labels("ERR_PRED_003").inc()
        j = self.job
        return Outcome(
            j.symbol, j.interval, self.as_of, (), error_status(j.symbol, j.interval, detail)
        )


def _groups(
    items: Sequence[tuple[int, _Work]], parallel: int, max_size: int
) -> list[Sequence[tuple[int, _Work]]]:
    """Split into at least ``parallel`` groups (when there are enough items) of at most
    ``max_size``: small groups reach Redis sooner, fewer groups cost fewer round trips."""
    if not items:
        return []
    size = max(1, min(max_size, math.ceil(len(items) / max(1, parallel))))
    return [items[k : k + size] for k in range(0, len(items), size)]


class _Sink:
    """Redis and Kafka for the outcomes of one run, as they become ready.

    Redis gets only the newest bar's outcome of each key in the run (decided from the jobs
    up front, so an older bar finishing later never overwrites it) and never a forecast older
    than the newest already stored; it is written as soon as that outcome is ready (freshness
    is measured there). Every record is handed to the producer as soon as it is ready and
    :meth:`flush` waits for all acknowledgements. The caller writes the database only after
    :meth:`flush`, so for every outcome: Redis, then Kafka, then the database.
    """

    def __init__(self, engine: PredictionEngine, runs: Sequence[tuple[str, str, datetime]]):
        self.engine = engine
        self.newest: dict[Key, datetime] = {}
        for symbol, interval, as_of in runs:
            k = (symbol, interval)
            if k not in self.newest or as_of > self.newest[k]:
                self.newest[k] = as_of
        self.futures: list[asyncio.Future[Any]] = []
        self.cached_at: datetime | None = None

    async def ready(self, outcomes: Sequence[Outcome]) -> None:
        e = self.engine
        to_cache = []
        for o in outcomes:
            k = (o.symbol, o.interval)
            if o.as_of != self.newest.get(k):
                continue
            known = e._newest.get(k)
            if o.ok and known is not None and o.as_of < known:
                continue
            to_cache.append(o)
        payloads = encode_records(outcomes)
        if to_cache:
            await cache_outcomes(e.redis, e.settings, to_cache, datetime.now(UTC), payloads)
        cached_at = self.cached_at = datetime.now(UTC)
        for o in outcomes:
            since_close = (cached_at - bar_close(o.as_of, o.interval)).total_seconds()
            if o.ok and 0 <= since_close < 3600:
                FORECAST_LATENCY.observe(since_close)
        topic = e.settings.topic_predictions
        self.futures.extend(await send_outcomes(e.producer, topic, outcomes, payloads))

    async def flush(self) -> None:
        futures, self.futures = self.futures, []
        if futures:
            await asyncio.gather(*futures)
