"""Random-walk baselines: naive (last value) and drift, intervals from log-return volatility."""

from __future__ import annotations

import json
from typing import Any, ClassVar, Self

import numpy as np

from ml.base import (
    DEFAULT_LEVEL,
    Forecast,
    Forecaster,
    NotFittedError,
    as_price_series,
    check_horizon,
    json_artifact,
    log_price_forecast,
)


class NaiveForecaster(Forecaster):
    """``y[t+k] = y[t]`` (random walk); with ``drift=True`` plus the mean log return per step.

    The interval assumes i.i.d. normal log returns: sd grows with ``sqrt(k)``.
    """

    name: ClassVar[str] = "naive"

    def __init__(self, drift: bool = False) -> None:
        super().__init__()
        self.drift = drift
        self.mu = 0.0
        self.sigma = 0.0
        self._ready = False  # parameters set by fit() or from_bytes()

    def fit(self, y: np.ndarray) -> Self:
        arr = as_price_series(y)
        log_returns = np.diff(np.log(arr))
        self.mu = float(log_returns.mean()) if self.drift and log_returns.size else 0.0
        self.sigma = float(log_returns.std(ddof=1)) if log_returns.size >= 2 else 0.0
        self._y = arr
        self._ready = True
        self.info.details = {"drift": self.drift, "mu": self.mu, "sigma": self.sigma}
        return self

    def forward(self, y: np.ndarray, h: int, level: float = DEFAULT_LEVEL) -> Forecast:
        if not self._ready:
            raise NotFittedError(f"{self.name}: call fit() first")
        arr = as_price_series(y)
        check_horizon(h)
        steps = np.arange(1, h + 1, dtype=np.float64)
        return log_price_forecast(
            float(arr[-1]), self.mu * steps, self.sigma * np.sqrt(steps), level
        )

    def to_bytes(self) -> bytes:
        payload: dict[str, Any] = {
            "kind": self.name,
            "drift": self.drift,
            "mu": self.mu,
            "sigma": self.sigma,
            "y_tail": [] if self._y is None else [float(self._y[-1])],
        }
        return json.dumps(payload).encode()

    @classmethod
    def from_bytes(cls, data: bytes) -> Self:
        payload = json_artifact(data, cls.name)
        model = cls(drift=bool(payload["drift"]))
        model.mu = float(payload["mu"])
        model.sigma = float(payload["sigma"])
        model._ready = True
        if payload["y_tail"]:
            model._y = as_price_series(payload["y_tail"])
        return model


class DriftForecaster(NaiveForecaster):
    """Random walk with drift (the mean historical log return)."""

    name: ClassVar[str] = "drift"

    def __init__(self, drift: bool = True) -> None:
        super().__init__(drift=True)
