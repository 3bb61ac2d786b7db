"""The one function the prediction service and the backtest both call.

``serve_forecast`` applies the model-choice rule, runs the chosen model and falls back
(LSTM -> ARIMA -> naive) with a recorded reason, so the backtest measures exactly what the
service answers.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ml.arima import ArimaForecaster
from ml.base import DEFAULT_LEVEL, Forecast, Forecaster, as_price_series, check_horizon
from ml.naive import NaiveForecaster
from ml.selection import ModelName, SelectionPolicy, select_model


@dataclass(frozen=True)
class LoadedModel:
    """A deserialized champion and its registry version string (e.g. ``lstm:*:1d:v3``).

    ``validation_mase`` is the champion's walk-forward MASE on the asset being served when
    the registry recorded one (global models are validated per asset).
    """

    model: Forecaster
    version: str
    validation_mase: float | None = None


@dataclass(frozen=True)
class ServedForecast:
    model: ModelName
    model_version: str
    mean: tuple[float, ...]
    lower: tuple[float, ...]
    upper: tuple[float, ...]
    fallback_reason: str | None
    level: float = DEFAULT_LEVEL


def _served(model: ModelName, version: str, fc: Forecast, reasons: list[str]) -> ServedForecast:
    lower = np.minimum(fc.lower, fc.mean)
    upper = np.maximum(fc.upper, fc.mean)
    return ServedForecast(
        model=model,
        model_version=version,
        mean=tuple(float(v) for v in fc.mean),
        lower=tuple(float(v) for v in lower),
        upper=tuple(float(v) for v in upper),
        fallback_reason="; ".join(reasons) if reasons else None,
        level=fc.level,
    )


def arima_version(model: ArimaForecaster) -> str:
    if model.order is None:
        return "naive"
    p, d, q = model.order
    return f"arima({p},{d},{q})"


def serve_forecast(
    closes: np.ndarray,
    horizon: int,
    available_days: int,
    lstm: LoadedModel | None,
    policy: SelectionPolicy,
    level: float = DEFAULT_LEVEL,
) -> ServedForecast:
    """Forecast ``horizon`` steps after ``closes`` (oldest first) the way the service does.

    Raises :class:`ml.selection.InsufficientHistory` below the ARIMA threshold.
    """
    check_horizon(horizon)
    arr = as_price_series(closes)
    selection = select_model(
        available_days,
        lstm is not None,
        policy,
        None if lstm is None else lstm.validation_mase,
    )
    reasons: list[str] = []
    if selection.model == "lstm" and lstm is not None:
        try:
            return _served("lstm", lstm.version, lstm.model.forward(arr, horizon, level), [])
        except ValueError as exc:  # e.g. horizon beyond the trained head
            reasons.append(f"lstm unavailable ({exc}); arima")
    elif selection.reason:
        reasons.append(selection.reason)
    if arr.size < 3:
        reasons.append(f"only {arr.size} bars; naive")
        naive = NaiveForecaster().fit(arr)
        return _served("naive", "naive", naive.forward(arr, horizon, level), reasons)
    arima = ArimaForecaster().fit(arr)
    if arima.info.fallback_reason:
        reasons.append(arima.info.fallback_reason)
    model: ModelName = "naive" if arima.served_model == "naive" else "arima"
    return _served(model, arima_version(arima), arima.forward(arr, horizon, level), reasons)
