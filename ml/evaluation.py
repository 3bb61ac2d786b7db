"""Walk-forward evaluation shared by the retraining job and ``pricecast backtest``.

Every target among the last ``test_size`` points is forecast ``horizon`` steps ahead from
the data before it; the model is refit every ``refit_every`` targets and applied to the
growing history in between (``Forecaster.forward``: no peeking at parameters fitted later).

MASE here is the model's MAE divided by the MAE of the naive (random-walk) forecast on the
*same* targets and origins, so MASE < 1 means "beats naive out of sample" and naive scores 1.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from ml.base import Forecast, Forecaster, GlobalForecaster
from ml.calibration import interval_score

Predictor = Callable[[Sequence[np.ndarray], int], list[Forecast]]
Fitter = Callable[[np.ndarray], Predictor]


@dataclass(frozen=True)
class Metrics:
    mae: float | None
    mape: float | None  # percent
    mase: float | None
    coverage: float | None  # share of actuals inside the 80% interval (the default level)
    count: int
    coverage_by_level: dict[str, float | None] = field(default_factory=dict)
    interval_score: dict[str, float | None] = field(default_factory=dict)  # mean, prices
    msis: dict[str, float | None] = field(default_factory=dict)  # scaled by in-sample naive

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def level_key(level: float) -> str:
    """``0.8`` -> ``"0.8"`` (the JSON keys of ``coverage_by_level``)."""
    return f"{level:g}"


def _rounded(value: float) -> float | None:
    return round(float(value), 6) if np.isfinite(value) else None


Bands = dict[float, tuple[np.ndarray, np.ndarray]]  # level -> (lower, upper) per target


def compute_metrics(
    actual: np.ndarray,
    mean: np.ndarray,
    lower: np.ndarray,
    upper: np.ndarray,
    naive: np.ndarray,
    bands: Bands | None = None,
    scale: float | None = None,
) -> Metrics:
    """Point and interval metrics; ``naive`` is the random-walk forecast of each target,
    ``bands`` the interval of each level, ``scale`` the in-sample naive MAE (for MSIS)."""
    observed = np.asarray(actual, dtype=np.float64)
    if observed.size == 0:
        return Metrics(None, None, None, None, 0)
    err = np.abs(np.asarray(mean) - observed)
    naive_mae = float(np.mean(np.abs(np.asarray(naive) - observed)))
    mae = float(np.mean(err))
    cov: dict[str, float | None] = {}
    score: dict[str, float | None] = {}
    msis: dict[str, float | None] = {}
    for level, (lo, hi) in sorted((bands or {}).items()):
        key = level_key(level)
        cov[key] = _rounded(float(np.mean((lo <= observed) & (observed <= hi))))
        mean_is = float(np.mean(interval_score(lo, hi, observed, level)))
        score[key] = _rounded(mean_is)
        msis[key] = _rounded(mean_is / scale) if scale else None
    return Metrics(
        mae=_rounded(mae),
        mape=_rounded(float(np.mean(err / np.abs(observed))) * 100.0),
        mase=_rounded(mae / naive_mae) if naive_mae > 0 else None,
        coverage=_rounded(
            float(np.mean((np.asarray(lower) <= observed) & (observed <= np.asarray(upper))))
        ),
        count=int(observed.size),
        coverage_by_level=cov,
        interval_score=score,
        msis=msis,
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
    bands: Bands = field(default_factory=dict)
    scale: float | None = None  # in-sample naive MAE before the first target

    def metrics(self, mask: np.ndarray | None = None) -> Metrics:
        kept = np.isfinite(self.mean) if mask is None else mask & np.isfinite(self.mean)
        bands = {level: (lo[kept], hi[kept]) for level, (lo, hi) in self.bands.items()}
        return compute_metrics(
            self.actual[kept],
            self.mean[kept],
            self.lower[kept],
            self.upper[kept],
            self.naive[kept],
            bands,
            self.scale,
        )


def naive_scale(y: np.ndarray, first_target: int) -> float | None:
    """Mean absolute one-step change of ``y`` before ``first_target`` (MSIS's scale)."""
    head = np.asarray(y[:first_target], dtype=np.float64)
    if head.size < 2:
        return None
    value = float(np.mean(np.abs(np.diff(head))))
    return value if value > 0 else None


def target_indices(length: int, test_size: int, horizon: int, min_history: int) -> np.ndarray:
    """The last ``test_size`` indices (of a series of ``length``) whose origin leaves
    ``min_history`` points before it."""
    first = max(length - test_size, min_history + horizon - 1)
    return np.arange(first, length)


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
    """Run ``fitter`` (history -> predictor) over the test targets of ``y``; the forecasts'
    bands (every level they carry) are recorded beside the ``level`` interval."""
    if horizon < 1 or refit_every < 1 or test_size < 1:
        raise ValueError("horizon, refit_every and test_size must be >= 1")
    y = np.asarray(y, dtype=np.float64)
    targets = target_indices(y.size, test_size, horizon, min_history)
    mean = np.full(targets.size, np.nan)
    lower = np.full(targets.size, np.nan)
    upper = np.full(targets.size, np.nan)
    bands: Bands = {}
    for group_start in range(0, targets.size, refit_every):
        group = targets[group_start : group_start + refit_every]
        origins = group - horizon
        predictor = fitter(y[: origins[0] + 1])
        forecasts = predictor([y[: origin + 1] for origin in origins], horizon)
        for slot, fc in enumerate(forecasts, start=group_start):
            mean[slot] = fc.mean[horizon - 1]
            lower[slot] = fc.lower[horizon - 1]
            upper[slot] = fc.upper[horizon - 1]
            for band in fc.bands:
                lo, hi = bands.setdefault(
                    band.level, (np.full(targets.size, np.nan), np.full(targets.size, np.nan))
                )
                lo[slot], hi[slot] = band.lower[horizon - 1], band.upper[horizon - 1]
    return WalkForward(
        targets=targets,
        actual=y[targets],
        naive=y[targets - horizon],
        mean=mean,
        lower=lower,
        upper=upper,
        bands=bands,
        scale=naive_scale(y, int(targets[0])) if targets.size else None,
    )


def predictor_of(model: Forecaster, level: float = 0.8, levels: Sequence[float] = ()) -> Predictor:
    """Apply a fitted model to many histories (batched for a global model); with ``levels``
    every forecast carries the model's own interval at each of them."""
    wanted = sorted({*levels, level})

    def run(histories: Sequence[np.ndarray], h: int, band_level: float) -> list[Forecast]:
        if isinstance(model, GlobalForecaster):
            return model.forward_many(histories, h, band_level)
        return [model.forward(hist, h, band_level) for hist in histories]

    def predict(histories: Sequence[np.ndarray], h: int) -> list[Forecast]:
        per_level = {band_level: run(histories, h, band_level) for band_level in wanted}
        main = per_level[level]
        if len(wanted) == 1:
            return main
        return [
            Forecast.of_bands(
                fc.mean, [per_level[band_level][row].bands[0] for band_level in wanted], level
            )
            for row, fc in enumerate(main)
        ]

    return predict


def holdout_walk(
    model: Forecaster, y: np.ndarray, *, horizon: int, test_size: int, level: float = 0.8
) -> WalkForward:
    """Walk-forward of an already fitted model (no refit) on the last points of y."""
    return walk_forward(
        y,
        lambda _hist: predictor_of(model, level),
        horizon=horizon,
        test_size=test_size,
        refit_every=max(test_size, 1),
        min_history=2,
        level=level,
    )


def holdout_metrics(
    model: Forecaster, y: np.ndarray, *, horizon: int, test_size: int, level: float = 0.8
) -> Metrics:
    """Walk-forward metrics of an already fitted model (no refit) on the last points of y."""
    return holdout_walk(model, y, horizon=horizon, test_size=test_size, level=level).metrics()


def advantage_t(wf: WalkForward, horizon: int) -> float | None:
    """How far the model beats naive beyond noise: the t statistic of the mean paired
    difference ``|naive error| - |model error|`` (Diebold-Mariano), its variance with
    Newey-West (Bartlett) weights over ``horizon - 1`` lags because overlapping h-step
    targets share shocks. Positive: better than naive; None below 3 targets."""
    finite = np.isfinite(wf.mean)
    d = np.abs(wf.naive[finite] - wf.actual[finite]) - np.abs(wf.mean[finite] - wf.actual[finite])
    n = d.size
    if n < 3:
        return None
    centered = d - d.mean()
    var = float(centered @ centered) / n
    for lag in range(1, min(horizon - 1, n - 1) + 1):
        var += 2.0 * (1.0 - lag / horizon) * float(centered[lag:] @ centered[:-lag]) / n
    if var <= 0.0:
        return None
    return float(d.mean() / np.sqrt(var / n))
