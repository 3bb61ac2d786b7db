"""Step 4 of ``services.prediction.engine``: compute the outcomes of many jobs.

The inputs of up to :data:`BARS_PER_QUERY_JOBS` jobs (days of history, bars, calibration
state) are read in one query, the next chunk while the previous one is forecast. A job whose
bar is missing or whose history is too short is settled at once (an error or
``insufficient_history`` status). ARIMA choices run in worker processes
(``services.prediction.pool``: statsmodels holds the GIL); LSTM choices, and everything when
there are no workers, in a thread pool (torch releases the GIL). Work goes out in small
groups so that the first outcomes of a burst are ready while later ones are still fitting;
each group is handed to ``on_ready`` (the sinks of ``services.prediction.results``) as soon
as it is computed.
"""

from __future__ import annotations

import asyncio
import logging
import math
import os
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Final

from sqlalchemy.engine import Engine

from ml.calibration import bar_phases
from ml.serving import Calibration, ServedForecast
from services.common.bars import Closes, bar_closes_many, history_days_many
from services.common.config import Settings
from services.common.metrics import FORECAST_ERRORS
from services.prediction import calibration_store
from services.prediction.champions import InsufficientHistory, ModelChoice, ModelProvider
from services.prediction.clock import as_utc, horizons, step
from services.prediction.planning import Job
from services.prediction.pool import ArimaTask, ForecastPool
from services.prediction.records import (
    Outcome,
    build_records,
    error_status,
    insufficient_status,
    ok_status,
)
from services.prediction.tracker import Key

log = logging.getLogger(__name__)

# Jobs whose inputs (history days, bars) are read in one query; the next chunk loads while
# the previous one is forecast.
BARS_PER_QUERY_JOBS: Final = 256

OnReady = Callable[[Sequence[Outcome]], Awaitable[None]]
_States = dict[Key, dict[tuple[int, float], calibration_store.LevelState]]  # per key
_Inputs = tuple[dict[str, int], list[Closes], _States]  # history days, bars per job, states
Deliver = Callable[[Sequence[int], Sequence[Outcome]], Coroutine[Any, Any, None]]


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

    def done(self, served: ServedForecast, now: datetime) -> Outcome:
        job = self.job
        stale_after = self.settings.prediction_stale_after_intervals
        try:
            records = build_records(job.symbol, job.interval, self.as_of, served, now, stale_after)
        except ValueError as exc:
            log.error(
                "forecast %s %s as of %s unusable: %s", job.symbol, job.interval, self.as_of, exc
            )
            return self.failed(f"{exc}")
        return Outcome(
            job.symbol,
            job.interval,
            self.as_of,
            records,
            ok_status(job.symbol, job.interval, self.available),
        )

    def failed(self, detail: str) -> Outcome:
        FORECAST_ERRORS.labels("ERR_PRED_003").inc()
        job = self.job
        return _errored(job.symbol, job.interval, self.as_of, detail)


def _errored(symbol: str, interval: str, as_of: datetime, detail: str) -> Outcome:
    return Outcome(symbol, interval, as_of, (), error_status(symbol, interval, detail))


_Indexed = tuple[int, _Work]  # a job's index in the run, and its work


def _groups(items: Sequence[_Indexed], parallel: int, max_size: int) -> list[Sequence[_Indexed]]:
    """Split into at least ``parallel`` groups (when there are enough items) of at most
    ``max_size``: small groups reach Redis sooner, fewer groups cost fewer round trips."""
    if not items:
        return []
    size = max(1, min(max_size, math.ceil(len(items) / max(1, parallel))))
    return [items[start : start + size] for start in range(0, len(items), size)]


class ForecastDispatcher:
    """The thread pool and (when configured) the ARIMA process pool, and what runs on them."""

    def __init__(self, settings: Settings, db: Engine, provider: ModelProvider) -> None:
        self.settings = settings
        self.db = db
        self.provider = provider
        self.thread_count = max(1, settings.prediction_workers)
        self.threads = ThreadPoolExecutor(
            max_workers=self.thread_count, thread_name_prefix="forecast"
        )
        processes = forecast_processes(settings)
        self.processes = ForecastPool(processes) if processes > 0 else None

    def start(self) -> None:
        if self.processes is not None:
            self.processes.start()

    def close(self) -> None:
        self.threads.shutdown(wait=True)
        if self.processes is not None:
            self.processes.close()

    async def compute(self, jobs: Sequence[Job], on_ready: OnReady | None = None) -> list[Outcome]:
        """Outcomes of ``jobs`` (same order). Inputs are read per chunk of jobs in one query
        (history days and bars), the next chunk while the previous one is being forecast;
        ``on_ready`` gets each group of outcomes as soon as it is computed."""
        if not jobs:
            return []
        results: list[Outcome | None] = [None] * len(jobs)

        async def deliver(indices: Sequence[int], outcomes: Sequence[Outcome]) -> None:
            for index, outcome in zip(indices, outcomes, strict=True):
                results[index] = outcome
            if on_ready is not None and outcomes:
                await on_ready(outcomes)

        try:
            async with asyncio.TaskGroup() as tg:
                for start in range(0, len(jobs), BARS_PER_QUERY_JOBS):
                    chunk = range(start, min(start + BARS_PER_QUERY_JOBS, len(jobs)))
                    inputs = await asyncio.to_thread(self._load, [jobs[index] for index in chunk])
                    self._dispatch(tg, list(chunk), jobs, inputs, deliver)
        except BaseExceptionGroup as group:  # one failure cancels the rest: raise it plainly
            raise group.exceptions[0] from None
        assert all(outcome is not None for outcome in results)
        return [outcome for outcome in results if outcome is not None]

    def _load(self, jobs: Sequence[Job]) -> _Inputs:
        """Days of history of the jobs' symbols, each job's bars and its key's calibration
        state, on one connection."""
        limit = self.settings.prediction_history_bars
        closes: list[Closes | None] = [None] * len(jobs)
        with self.db.connect() as conn:
            days = history_days_many(conn, sorted({job.symbol for job in jobs}))
            by_interval: dict[str, list[int]] = {}
            for index, job in enumerate(jobs):
                by_interval.setdefault(job.interval, []).append(index)
            for interval, indices in by_interval.items():
                requests = [
                    (jobs[index].symbol, as_utc(jobs[index].as_of) + step(interval))
                    for index in indices
                ]
                loaded = bar_closes_many(conn, interval, requests, limit)
                for index, bars in zip(indices, loaded, strict=True):
                    closes[index] = bars
            states = calibration_store.load(conn, {(job.symbol, job.interval) for job in jobs})
        found = [bars for bars in closes if bars is not None]
        assert len(found) == len(jobs)
        return days, found, states

    def _prepare(self, job: Job, available: int, bars: Closes, states: _States) -> _Work | Outcome:
        """The work of one job, or its outcome when it needs no model (bar missing, history
        too short)."""
        symbol, interval, as_of = job.symbol, job.interval, as_utc(job.as_of)
        if not len(bars) or int(bars.bucket[-1]) != int(as_of.timestamp()):
            FORECAST_ERRORS.labels("ERR_PRED_003").inc()
            detail = f"bar {as_of.isoformat()} of {symbol} {interval} is not in the database"
            log.warning("%s", detail)
            return _errored(symbol, interval, as_of, detail)
        try:
            choice = self.provider.choose(symbol, interval, available)
        except InsufficientHistory as exc:
            FORECAST_ERRORS.labels("ERR_PRED_001").inc()
            status = insufficient_status(symbol, interval, exc.required_days, exc.available_days)
            return Outcome(symbol, interval, as_of, (), status)
        n_horizons = horizons(self.settings, interval)
        calibration = calibration_store.calibration_of(
            states[(symbol, interval)],
            self.settings,
            n_horizons,
            bar_phases(interval, bars.bucket),  # intraday: the hour-of-day volatility
        )
        return _Work(job, as_of, n_horizons, available, bars, choice, calibration, self.settings)

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
        remote: list[_Indexed] = []
        local: list[_Indexed] = []
        for index, bars in zip(indices, closes, strict=True):
            job = jobs[index]
            work = self._prepare(job, days.get(job.symbol, 0), bars, states)
            if isinstance(work, Outcome):
                settled.append((index, work))
            elif self.processes is not None and work.choice.model != "lstm":
                remote.append((index, work))
            else:
                local.append((index, work))
        if settled:
            indices_settled = [index for index, _ in settled]
            tg.create_task(deliver(indices_settled, [outcome for _, outcome in settled]))
        pool = self.processes
        for group in _groups(remote, pool.processes * 2 if pool is not None else 1, 16):
            tg.create_task(self._run_remote(group, deliver))
        # LSTM batches one network call per group; torch uses every core for it already
        for group in _groups(local, 1 if pool is not None else self.thread_count, 128):
            tg.create_task(self._run_local(group, deliver))

    async def _run_remote(self, group: Sequence[_Indexed], deliver: Deliver) -> None:
        assert self.processes is not None
        tasks = [
            ArimaTask(
                work.bars.close,
                work.horizon,
                work.available,
                None if work.choice.lstm is None else work.choice.lstm.version,
                None if work.choice.lstm is None else work.choice.lstm.validation_mase,
                None if work.choice.lstm is None else work.choice.lstm.validation_t,
                work.calibration,
            )
            for _, work in group
        ]
        results = await self.processes.run(tasks, self.provider.policy)
        now = datetime.now(UTC)
        outcomes = []
        for (_, work), result in zip(group, results, strict=True):
            if result.served is None:
                log.error(
                    "forecast %s %s as of %s failed: %s\n%s",
                    work.job.symbol,
                    work.job.interval,
                    work.as_of,
                    result.error,
                    result.trace,
                )
                outcomes.append(work.failed(result.error or "forecast failed"))
                continue
            outcomes.append(work.done(result.served, now))
        await deliver([index for index, _ in group], outcomes)

    async def _run_local(self, group: Sequence[_Indexed], deliver: Deliver) -> None:
        loop = asyncio.get_running_loop()
        outcomes = await loop.run_in_executor(
            self.threads, self._serve_local, [work for _, work in group]
        )
        await deliver([index for index, _ in group], outcomes)

    def _serve_local(self, works: Sequence[_Work]) -> list[Outcome]:
        results = self.provider.serve_many(
            [
                (work.bars.close, work.horizon, work.available, work.choice.lstm, work.calibration)
                for work in works
            ]
        )
        now = datetime.now(UTC)
        outcomes = []
        for work, result in zip(works, results, strict=True):
            if isinstance(result, Exception):
                log.error(
                    "forecast %s %s as of %s failed",
                    work.job.symbol,
                    work.job.interval,
                    work.as_of,
                    exc_info=result,
                )
                outcomes.append(work.failed(f"{result}"))
            else:
                outcomes.append(work.done(result, now))
        return outcomes
