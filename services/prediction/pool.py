"""ARIMA forecasts outside the service's interpreter: a small spawn-context process pool.

Why processes: ARIMA estimation (statsmodels Burg / Hannan-Rissanen, a few ms per series)
holds the GIL for most of its run. In threads a close burst serialises on the GIL, uses one
core of two, and starves the event loop that fetches from Kafka and writes Redis; ARIMA's
wall-clock order-search budget (30 ms) is then also spent waiting for the GIL. In worker
processes the fits use every core and the event loop stays responsive.

What travels (pickled): per job only the closes (a float64 array), the horizon, the days of
history and, when an LSTM champion exists, its version and validation MASE -- never the model
itself. Back comes :class:`ml.serving.ServedForecast` (tuples of floats) or an error message:
errors are values, so nothing has to survive unpickling as an exception.

Equivalence with the in-process path: the worker calls :func:`ml.serving.serve_forecast`
with the same arguments, except that a champion is represented by :class:`_ElsewhereLSTM`,
which refuses to run. The parent sends a job here only when
:func:`ml.selection.select_model` (a pure function of days, champion presence, policy and
validation MASE) chose ARIMA, so the worker's own call of ``select_model`` chooses ARIMA too
and the recorded fallback reason is the same as in the service process.

Start method ``spawn``: forking a process that has loaded torch and runs threads (the event
loop's executor, aiokafka) is unsafe. Workers start once (:meth:`ForecastPool.start`, ~1 s of
imports, done before the service reports ready) and are reused; a worker that dies breaks
the pool: the batch fails (and is retried by the consumer) and the next call starts a fresh
pool. A worker exits when the service process dies, however it dies.
"""

from __future__ import annotations

import asyncio
import logging
import multiprocessing
import multiprocessing.connection
import os
import signal
import threading
import time
import traceback
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from typing import ClassVar, Self

import numpy as np

from ml.base import DEFAULT_LEVEL, Forecast, Forecaster
from ml.selection import SelectionPolicy
from ml.serving import Calibration, LoadedModel, ServedForecast, serve_forecast

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ArimaTask:
    """One job for a worker: forecast steps 1..``horizon`` after ``closes`` (oldest first)."""

    closes: np.ndarray
    horizon: int
    available_days: int
    lstm_version: str | None = None  # a champion exists for the key (not chosen for it)
    lstm_mase: float | None = None  # what the registry validated for the key's asset:
    lstm_t: float | None = None  # the worker must make the parent's choice (select_for)
    calibration: Calibration | None = None  # levels and the key's online state


@dataclass(frozen=True)
class TaskResult:
    served: ServedForecast | None
    error: str | None = None  # ValueError / ArithmeticError / RuntimeError of the model
    trace: str | None = None


class _ElsewhereLSTM(Forecaster):
    """Stands for a champion that lives in the service process; never run here."""

    name: ClassVar[str] = "lstm"

    def fit(self, y: np.ndarray) -> Self:
        raise RuntimeError("the lstm champion runs in the service process")

    def forward(self, y: np.ndarray, h: int, level: float = DEFAULT_LEVEL) -> Forecast:
        raise RuntimeError("the lstm champion runs in the service process")

    def to_bytes(self) -> bytes:
        raise RuntimeError("the lstm champion runs in the service process")

    @classmethod
    def from_bytes(cls, data: bytes) -> Self:
        raise RuntimeError("the lstm champion runs in the service process")


def run_tasks(tasks: Sequence[ArimaTask], policy: SelectionPolicy) -> list[TaskResult]:
    """Serve every task (in a worker; also callable in-process). Model errors are returned;
    :class:`ml.selection.InsufficientHistory` cannot happen (the parent checked the days)."""
    out: list[TaskResult] = []
    for task in tasks:
        lstm = (
            None
            if task.lstm_version is None
            else LoadedModel(_ElsewhereLSTM(), task.lstm_version, task.lstm_mase, task.lstm_t)
        )
        try:
            served = serve_forecast(
                task.closes, task.horizon, task.available_days, lstm, policy, task.calibration
            )
        except (ValueError, ArithmeticError, RuntimeError) as exc:
            out.append(TaskResult(None, f"{exc}", traceback.format_exc()))
            continue
        out.append(TaskResult(served))
    return out


def _init_worker() -> None:
    """Exit with the parent: a worker blocks on its task queue, which it holds both ends
    of, so it would outlive a service killed with SIGKILL (OOM killer, a test) forever.

    A worker ignores SIGINT: a terminal's Ctrl-C reaches the service's whole process group,
    and the service, not the signal, ends its pool (``close``), after the work in flight."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    parent = multiprocessing.parent_process()
    if parent is None:
        return
    sentinel = parent.sentinel  # readable (EOF) once the parent is gone

    def watch() -> None:
        multiprocessing.connection.wait([sentinel])
        os._exit(0)

    threading.Thread(target=watch, name="parent-watch", daemon=True).start()


def _warm_worker(seconds: float) -> int:
    """Run one small fit (imports, statsmodels' lazy paths), then hold the worker for a
    moment so that every worker of the pool gets spawned by :meth:`ForecastPool.start`."""
    series = 100.0 * np.exp(np.cumsum(np.random.default_rng(0).normal(0.0, 0.01, 200)))
    run_tasks([ArimaTask(series, 2, 60)], SelectionPolicy())
    time.sleep(seconds)
    return multiprocessing.current_process().pid or 0


class ForecastPool:
    """``processes`` spawn workers running :func:`run_tasks`."""

    def __init__(self, processes: int) -> None:
        if processes < 1:
            raise ValueError("a forecast pool needs at least one process")
        self.processes = processes
        self._executor: ProcessPoolExecutor | None = None
        self.restarts = 0

    def _ensure(self) -> ProcessPoolExecutor:
        if self._executor is None:
            self._executor = ProcessPoolExecutor(
                max_workers=self.processes,
                mp_context=multiprocessing.get_context("spawn"),
                initializer=_init_worker,
            )
        return self._executor

    def start(self) -> None:
        """Spawn every worker and warm it (blocking, ~1 s); later calls are cheap."""
        executor = self._ensure()
        futures = [executor.submit(_warm_worker, 0.2) for _ in range(self.processes)]
        for future in futures:
            future.result()

    async def run(self, tasks: Sequence[ArimaTask], policy: SelectionPolicy) -> list[TaskResult]:
        loop = asyncio.get_running_loop()
        try:
            return await loop.run_in_executor(self._ensure(), run_tasks, list(tasks), policy)
        except BrokenProcessPool:
            self._discard()
            raise

    def _discard(self) -> None:
        executor, self._executor = self._executor, None
        if executor is not None:
            self.restarts += 1
            log.error("a forecast worker died; the next batch starts a fresh pool")
            executor.shutdown(wait=False, cancel_futures=True)

    def close(self) -> None:
        executor, self._executor = self._executor, None
        if executor is not None:
            executor.shutdown(wait=True, cancel_futures=True)
