"""The forecast worker processes serve exactly what the service process would, errors come
back as values, and a dead worker fails one call and is replaced; batched LSTM serving equals
serving item by item (``ModelProvider.serve_many``)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path

import numpy as np
import pytest
import sqlalchemy as sa
from prediction_helpers import random_walk

from ml.lstm import LSTMConfig, LSTMForecaster
from ml.selection import SelectionPolicy
from ml.serving import LoadedModel, serve_forecast
from services.common.config import Settings
from services.prediction.champions import ModelProvider
from services.prediction.pool import ArimaTask, ForecastPool, run_tasks

POLICY = SelectionPolicy()


def _tasks() -> list[ArimaTask]:
    """ARIMA choices with every fallback reason the parent can send to a worker."""
    return [
        ArimaTask(random_walk(200, seed=1), 24, 40),  # history < 90 days
        ArimaTask(random_walk(200, seed=2), 7, 120),  # no promoted lstm
        ArimaTask(random_walk(200, seed=3), 7, 120, "lstm:*:1d:v2", 1.3),  # lstm MASE too high
        ArimaTask(random_walk(200, seed=4), 7, 60, "lstm:*:1d:v2", 0.5),  # lstm, too short
        ArimaTask(random_walk(2, seed=5), 3, 45),  # 2 bars: naive
        # a good MASE, but an advantage over naive within noise (the t the registry recorded)
        ArimaTask(random_walk(200, seed=6), 7, 120, "lstm:*:1d:v2", 0.9, 0.2),
    ]


def _in_process(task: ArimaTask) -> object:
    """What the service process serves for the same inputs (a real champion object is not
    needed: the selection does not choose it)."""
    lstm = (
        None
        if task.lstm_version is None
        else LoadedModel(LSTMForecaster(), task.lstm_version, task.lstm_mase, task.lstm_t)
    )
    return serve_forecast(task.closes, task.horizon, task.available_days, lstm, POLICY)


@pytest.fixture
def pool() -> Iterator[ForecastPool]:
    p = ForecastPool(2)
    try:
        yield p
    finally:
        p.close()


def test_run_tasks_serves_like_the_service_process() -> None:
    tasks = _tasks()
    results = run_tasks(tasks, POLICY)
    for task, result in zip(tasks, results, strict=True):
        assert result.error is None
        assert result.served == _in_process(task)
    reasons = [r.served.fallback_reason for r in results if r.served is not None]
    assert reasons[0] is not None and "< 90d" in reasons[0]
    assert reasons[1] is not None and "no promoted lstm" in reasons[1]
    assert reasons[2] is not None and "validation MASE 1.300" in reasons[2]
    assert reasons[-1] is not None and "no more than noise" in reasons[-1]  # not the lstm


def test_model_errors_come_back_as_values() -> None:
    bad = ArimaTask(np.array([100.0, -1.0, 101.0, 102.0]), 2, 40)
    good = ArimaTask(random_walk(100), 2, 40)
    results = run_tasks([bad, good], POLICY)
    assert results[0].served is None
    assert results[0].error is not None and "strictly positive" in results[0].error
    assert results[0].trace is not None and "ValueError" in results[0].trace
    assert results[1].served is not None and results[1].error is None


async def test_worker_processes_answer_like_the_service_process(pool: ForecastPool) -> None:
    pool.start()
    tasks = _tasks()
    results = await pool.run(tasks, POLICY)
    assert [r.served for r in results] == [_in_process(t) for t in tasks]


async def test_a_dead_worker_fails_one_call_then_the_pool_is_replaced(
    pool: ForecastPool,
) -> None:
    pool.start()
    task = ArimaTask(random_walk(100), 3, 40)
    pool._ensure().submit(os._exit, 1)  # a worker dies (OOM kill, segfault)
    with pytest.raises(BrokenProcessPool):
        for _ in range(50):  # the executor notices the death on its next call
            await pool.run([task], POLICY)
    assert pool.restarts == 1
    results = await pool.run([task], POLICY)
    assert results[0].served == _in_process(task)


def _provider() -> ModelProvider:
    # serve_many never touches the database: an engine that is never connected
    return ModelProvider(
        Settings(), sa.create_engine("postgresql+psycopg2://nobody@127.0.0.1:1/x"), []
    )


def test_batched_lstm_equals_serving_item_by_item() -> None:
    model = LSTMForecaster(LSTMConfig(epochs=1, max_horizon=7, max_train_seconds=20))
    model.fit_many([random_walk(120, seed=k) for k in range(4)])
    other = LoadedModel(model, "lstm:X:1d:v1", 0.4)
    glob = LoadedModel(model, "lstm:*:1d:v3", None)
    items = [
        (random_walk(120, seed=10 + k), 7, 120, glob)
        for k in range(5)  # one batch
    ] + [
        (random_walk(120, seed=20), 3, 120, glob),  # another horizon: another batch
        (random_walk(120, seed=21), 7, 120, other),  # another version: same model, batched
        (random_walk(120, seed=22), 24, 120, glob),  # beyond the head: arima with the reason
        (random_walk(120, seed=23), 7, 60, glob),  # too short for lstm: arima
        (random_walk(120, seed=24), 7, 120, None),  # no champion
        (np.array([1.0, -1.0, 2.0, 3.0]), 7, 120, glob),  # invalid: an error value
    ]
    provider = _provider()
    batched = provider.serve_many([(*item, None) for item in items])
    for (closes, h, days, lstm), got in zip(items[:-1], batched[:-1], strict=True):
        want = provider.serve(closes, h, days, lstm)
        assert not isinstance(got, Exception)
        assert (got.model, got.model_version, got.fallback_reason, got.level) == (
            want.model,
            want.model_version,
            want.fallback_reason,
            want.level,
        )
        # one network call for many rows: float32 sums may differ in the last bits
        np.testing.assert_allclose(got.mean, want.mean, rtol=1e-5)
        np.testing.assert_allclose(got.lower, want.lower, rtol=1e-5)
        np.testing.assert_allclose(got.upper, want.upper, rtol=1e-5)
    assert [b.model for b in batched[:8] if not isinstance(b, Exception)] == ["lstm"] * 7 + [
        "arima"
    ]
    beyond = batched[7]
    assert not isinstance(beyond, Exception)
    assert beyond.fallback_reason is not None and "lstm unavailable" in beyond.fallback_reason
    assert isinstance(batched[-1], ValueError)


_KILLED_PARENT = """
import os, signal, sys
from services.prediction.pool import ForecastPool
if __name__ == "__main__":
    pool = ForecastPool(2)
    pool.start()
    print(" ".join(str(p.pid) for p in pool._executor._processes.values()), flush=True)
    os.kill(os.getpid(), signal.SIGKILL)  # no cleanup at all
"""


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(")")[-1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def test_workers_exit_when_the_service_process_is_killed(tmp_path: Path) -> None:
    script = tmp_path / "killed_parent.py"
    script.write_text(_KILLED_PARENT)
    root = Path(__file__).resolve().parents[2]
    proc = subprocess.run(
        [sys.executable, str(script)],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "PYTHONPATH": str(root)},
        check=False,
    )
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    pids = [int(p) for p in proc.stdout.split()]
    assert len(pids) == 2
    deadline = time.monotonic() + 20
    while any(_alive(p) for p in pids) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not any(_alive(p) for p in pids), "forecast workers outlived their parent"
