"""The one function the prediction service and the backtest both call.

``serve_forecast`` applies the model-choice rule, runs the chosen model and falls back
(LSTM -> ARIMA -> naive) with a recorded reason, so the backtest measures exactly what the
service answers.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from ml.arima import ArimaForecaster
from ml.base import DEFAULT_LEVEL, Forecast, Forecaster, as_price_series, check_horizon
from ml.calibration import DEFAULT_LEVELS, Key, calibrated_bands, check_levels
from ml.naive import NaiveForecaster
from ml.selection import ModelName, Selection, SelectionPolicy, select_model


@dataclass(frozen=True)
class LoadedModel:
    """A deserialized champion and its registry version string (e.g. ``lstm:*:1d:v3``).

    ``validation_mase`` is the champion's walk-forward MASE on the asset being served when
    the registry recorded one (global models are validated per asset); ``validation_t`` the
    t statistic of its advantage over naive there (``ml.evaluation.advantage_t``) when known.
    """

    model: Forecaster
    version: str
    validation_mase: float | None = None
    validation_t: float | None = None


@dataclass(frozen=True)
class ServedBand:
    """The interval of one level at steps 1..h (plain tuples: it crosses processes)."""

    level: float
    lower: tuple[float, ...]
    upper: tuple[float, ...]


@dataclass(frozen=True)
class ServedForecast:
    model: ModelName
    model_version: str
    mean: tuple[float, ...]
    lower: tuple[float, ...]
    upper: tuple[float, ...]
    fallback_reason: str | None
    level: float = DEFAULT_LEVEL
    intervals: tuple[ServedBand, ...] = ()


def _floats(values: np.ndarray) -> tuple[float, ...]:
    return tuple(float(value) for value in values)


def _served(
    model: ModelName,
    version: str,
    fc: Forecast,
    reasons: list[str],
    history: np.ndarray,
    calibration: Calibration,
) -> ServedForecast:
    """Replace the model's own interval by the calibrated bands of every level."""
    levels = check_levels((*calibration.levels, calibration.level))
    bands = calibrated_bands(history, fc.mean, levels, calibration.effective, calibration.phases)
    served = []
    for band in bands:
        lo, hi = np.minimum(band.lower, fc.mean), np.maximum(band.upper, fc.mean)
        served.append(ServedBand(band.level, _floats(lo), _floats(hi)))
    main = next(band for band in served if abs(band.level - calibration.level) < 1e-9)
    return ServedForecast(
        model=model,
        model_version=version,
        mean=_floats(fc.mean),
        lower=main.lower,
        upper=main.upper,
        fallback_reason="; ".join(reasons) if reasons else None,
        level=main.level,
        intervals=tuple(served),
    )


@dataclass(frozen=True)
class Calibration:
    """The levels to serve, the one in ``lower``/``upper``, and the adaptive-conformal level
    to build each (horizon, level) band at (``ml.calibration.AciState``; none: nominal)."""

    levels: tuple[float, ...] = DEFAULT_LEVELS
    level: float = DEFAULT_LEVEL
    effective: Mapping[Key, float] | None = None
    # intraday bars: the hour of day of every bar of the history (``ml.calibration``)
    phases: np.ndarray | None = field(default=None, compare=False)

    @classmethod
    def of(
        cls,
        levels: Sequence[float] = DEFAULT_LEVELS,
        level: float = DEFAULT_LEVEL,
        effective: Mapping[Key, float] | None = None,
        phases: np.ndarray | None = None,
    ) -> Calibration:
        return cls(check_levels(levels), level, effective, phases)


def arima_version(model: ArimaForecaster) -> str:
    if model.order is None:
        return "naive"
    p, d, q = model.order
    return f"arima({p},{d},{q})"


def select_for(available_days: int, lstm: LoadedModel | None, policy: SelectionPolicy) -> Selection:
    """``select_model`` with what the registry validated for this asset (MASE and the noise
    t): the one choice the backtest and the service both make."""
    return select_model(
        available_days,
        lstm is not None,
        policy,
        None if lstm is None else lstm.validation_mase,
        None if lstm is None else lstm.validation_t,
    )


def serve_forecast(
    closes: np.ndarray,
    horizon: int,
    available_days: int,
    lstm: LoadedModel | None,
    policy: SelectionPolicy,
    calibration: Calibration | None = None,
) -> ServedForecast:
    """Forecast ``horizon`` steps after ``closes`` (oldest first) the way the service does:
    the chosen model's point forecast, the calibrated bands of every level.

    Raises :class:`ml.selection.InsufficientHistory` below the ARIMA threshold.
    """
    check_horizon(horizon)
    arr = as_price_series(closes)
    cal = calibration or Calibration()
    level = cal.level
    selection = select_for(available_days, lstm, policy)
    reasons: list[str] = []
    if selection.model == "lstm" and lstm is not None:
        try:
            fc = lstm.model.forward(arr, horizon, level)
            return _served("lstm", lstm.version, fc, [], arr, cal)
        except ValueError as exc:  # e.g. horizon beyond the trained head
            reasons.append(f"lstm unavailable ({exc}); arima")
    elif selection.reason:
        reasons.append(selection.reason)
    if arr.size < 3:
        reasons.append(f"only {arr.size} bars; naive")
        naive = NaiveForecaster().fit(arr)
        return _served("naive", "naive", naive.forward(arr, horizon, level), reasons, arr, cal)
    arima = ArimaForecaster().fit(arr)
    if arima.info.fallback_reason:
        reasons.append(arima.info.fallback_reason)
    model: ModelName = "naive" if arima.served_model == "naive" else "arima"
    fc = arima.forward(arr, horizon, level)
    return _served(model, arima_version(arima), fc, reasons, arr, cal)
