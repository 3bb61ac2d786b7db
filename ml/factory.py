"""Model name -> forecaster class, for loading registry artifacts."""

from __future__ import annotations

from ml.arima import ArimaForecaster
from ml.base import Forecaster
from ml.lstm import LSTMForecaster
from ml.naive import DriftForecaster, NaiveForecaster

FORECASTERS: dict[str, type[Forecaster]] = {
    "naive": NaiveForecaster,
    "drift": DriftForecaster,
    "arima": ArimaForecaster,
    "lstm": LSTMForecaster,
}


def load_forecaster(model: str, data: bytes) -> Forecaster:
    try:
        cls = FORECASTERS[model]
    except KeyError:
        raise ValueError(f"unknown model {model!r}; known: {sorted(FORECASTERS)}") from None
    return cls.from_bytes(data)
