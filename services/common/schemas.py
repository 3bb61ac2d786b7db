"""Wire formats shared by services: the tick on ``prices`` and the prediction record.

The prediction record is what the API returns, what Redis caches under
``prediction:{symbol}:{interval}:{horizon}`` and what ``predictions`` carries, byte for byte.
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, field_validator

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


class IntervalBand(BaseModel):
    """The central prediction interval of one offered level."""

    model_config = ConfigDict(frozen=True)

    level: float
    lower: float
    upper: float


class PredictionRecord(BaseModel):
    """One forecast with its provenance (docs/architecture.md, "Prediction").

    ``lower_bound``/``upper_bound`` are the interval at ``confidence_level`` (the default
    level, or the one a client asked for with ``?level=``); ``intervals`` has every offered
    level. ``stale``: the as-of bar closed more than ``prediction_stale_after_intervals``
    intervals before ``as_of_age_s`` was measured (when the record was produced or read).
    """

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
    intervals: tuple[IntervalBand, ...] = ()
    stale: bool = False
    as_of_age_s: float | None = None

    @field_validator("intervals", mode="before")
    @classmethod
    def _no_intervals(cls, value: object) -> object:
        """Rows stored before levels existed have NULL (jsonb text is parsed)."""
        if value is None:
            return ()
        if isinstance(value, str | bytes):
            return json.loads(value)
        return value

    def at_level(self, level: float) -> PredictionRecord:
        """This record with ``level``'s interval in the bounds; KeyError when absent."""
        if abs(level - self.confidence_level) < 1e-9:
            return self
        for band in self.intervals:
            if abs(band.level - level) < 1e-9:
                return self.model_copy(
                    update={
                        "lower_bound": band.lower,
                        "upper_bound": band.upper,
                        "confidence_level": band.level,
                    }
                )
        raise KeyError(level)


class PredictionStatus(BaseModel):
    """Why there is no forecast for a symbol/interval (cached at ``prediction-status:...``)."""

    symbol: str
    interval: Interval
    status: Literal["ok", "insufficient_history", "error"]
    required_days: int | None = None
    available_days: int | None = None
    detail: str | None = None
