"""Wire formats shared by services: the tick on ``prices`` and the prediction record.

The prediction record is what the API returns, what Redis caches under
``prediction:{symbol}:{interval}:{horizon}`` and what ``predictions`` carries, byte for byte.
"""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict

Interval = Literal["1h", "1d"]
ModelName = Literal["lstm", "arima", "naive"]


class Tick(BaseModel):
    """One validated tick on the ``prices`` topic (key: symbol)."""

    model_config = ConfigDict(frozen=True)

    symbol: str
    ts: datetime  # UTC
    price: float
    volume: float
    source: str
    trade_id: str = ""  # the venue's trade id; absent (empty) for ticks without one


class PredictionRecord(BaseModel):
    """One forecast with its provenance (design.md, "Prediction")."""

    model_config = ConfigDict(frozen=True)

    symbol: str
    interval: Interval
    horizon: int
    as_of: datetime  # the bar the forecast was made from (bucket start)
    target_time: datetime  # bucket start of the forecast bar
    predicted_price: float
    lower_bound: float
    upper_bound: float
    confidence_level: float = 0.8
    model: ModelName
    model_version: str
    fallback_reason: str | None = None
    generated_at: datetime


class PredictionStatus(BaseModel):
    """Why there is no forecast for a symbol/interval (cached at ``prediction-status:...``)."""

    symbol: str
    interval: Interval
    status: Literal["ok", "insufficient_history", "error"]
    required_days: int | None = None
    available_days: int | None = None
    detail: str | None = None
