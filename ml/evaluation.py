"""Walk-forward evaluation shared by the retraining job and ``pricecast backtest``.

Every target among the last ``test_size`` points is forecast ``horizon`` steps ahead from
the data before it; the model is refit every ``refit_every`` targets and applied to the
growing history in between (``Forecaster.forward``: no peeking at parameters fitted later).

MASE here is the model's MAE divided by the MAE of the naive (random-walk) forecast on the
*same* targets and origins, so MASE < 1 means "beats naive out of sample" and naive scores 1.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from ml.base import Forecast, Forecaster

Predictor = Callable[[Sequence[np.ndarray], int], list[Forecast]]
Fitter = Callable[[np.ndarray], Predictor]


@dataclass(frozen=True)
class Metrics:
    mae: float | None
    mape: float | None  # percent
    mase: float | None
    coverage: float | None  # share of actuals inside the interval
    count: int

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _r(x: float) -> float | None:
    return round(float(x), 6) if np.isfinite(x) else None


def compute_metrics(
    actual: np.ndarray,
    mean: np.ndarray,
    lower: np.ndarray,
    upper: np.ndarray,
    naive: np.ndarray,
) -> Metrics:
    """Point and interval metrics; ``naive`` is the random-walk forecast of each target."""
    a = np.asarray(actual, dtype=np.float64)
    if a.size == 0:
        return Metrics(None, None, None, None, 0)
    err = np.abs(np.asarray(mean) - a)
    naive_mae = float(np.mean(np.abs(np.asarray(naive) - a)))
    mae = float(np.mean(err))
    return Metrics(
        mae=_r(mae),
        mape=_r(float(np.mean(err / np.abs(a))) * 100.0),
        mase=_r(mae / naive_mae) if naive_mae > 0 else None,
        coverage=_r(float(np.mean((np.asarray(lower) <= a) & (a <= np.asarray(upper))))),
        count=int(a.size),
    )


@dataclass
class WalkForward:
    """Per-target records of one walk-forward run (step ``horizon`` of each forecast)."""

    targets: np.ndarray  # indices into y
    actual: np.ndarray
    naive: np.ndarray
    mean: np.ndarray
    lower: np.ndarray
    upper: np.ndarray

    def metrics(self, mask: np.ndarray | None = None) -> Metrics:
        m = np.isfinite(self.mean) if mask is None else mask & np.isfinite(self.mean)
        return compute_metrics(
            self.actual[m], self.mean[m], self.lower[m], self.upper[m], self.naive[m]
        )


def target_indices(n: int, test_size: int, horizon: int, min_history: int) -> np.ndarray:
    """The last ``test_size`` indices whose origin leaves ``min_history`` points before it."""
    first = max(n - test_size, min_history + horizon - 1)
    return np.arange(first, n)


def walk_forward(
    y: np.ndarray,
    fitter: Fitter,
    *,
    horizon: int = 1,
    test_size: int = 250,
    refit_every: int = 25,
    min_history: int = 2,
    level: float = 0.8,
) -> WalkForward:
    """Run ``fitter`` (history -> predictor) over the test targets of ``y``."""
    if horizon < 1 or refit_every < 1 or test_size < 1:
        raise ValueError("horizon, refit_every and test_size must be >= 1")
    y = np.asarray(y, dtype=np.float64)
    targets = target_indices(y.size, test_size, horizon, min_history)
    mean = np.full(targets.size, np.nan)
    lower = np.full(targets.size, np.nan)
    upper = np.full(targets.size, np.nan)
    for g in range(0, targets.size, refit_every):
        group = targets[g : g + refit_every]
        origins = group - horizon
        predictor = fitter(y[: origins[0] + 1])
        forecasts = predictor([y[: o + 1] for o in origins], horizon)
        for j, fc in enumerate(forecasts):
            mean[g + j] = fc.mean[horizon - 1]
            lower[g + j] = fc.lower[horizon - 1]
            upper[g + j] = fc.upper[horizon - 1]
    return WalkForward(
        targets=targets,
        actual=y[targets],
        naive=y[targets - horizon],
        mean=mean,
        lower=lower,
        upper=upper,
    )


def predictor_of(model: Forecaster, level: float = 0.8) -> Predictor:
    """Apply a fitted model to many histories (batched when the model supports it)."""
    many = getattr(model, "forward_many", None)

    def predict(histories: Sequence[np.ndarray], h: int) -> list[Forecast]:
        if many is not None:
            result: list[Forecast] = many(histories, h, level)
            return result
        return [model.forward(hist, h, level) for hist in histories]

    return predict


def holdout_metrics(
    model: Forecaster, y: np.ndarray, *, horizon: int, test_size: int, level: float = 0.8
) -> Metrics:
    """Walk-forward metrics of an already fitted model (no refit) on the last points of y."""
    wf = walk_forward(
        y,
        lambda _hist: predictor_of(model, level),
        horizon=horizon,
        test_size=test_size,
        refit_every=max(test_size, 1),
        min_history=2,
        level=level,
    )
    return wf.metrics()
