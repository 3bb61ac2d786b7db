"""Turn one served forecast (``ml.serving.ServedForecast``) into the wire records of
docs/architecture.md, and the status of a key (pure)."""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime
from typing import cast

from ml.serving import ServedForecast
from services.common.schemas import (
    Interval,
    IntervalBand,
    ModelName,
    PredictionRecord,
    PredictionStatus,
)
from services.common.staleness import with_freshness
from services.prediction.clock import as_utc, target_time


@dataclass(frozen=True)
class Outcome:
    """The result of one forecast job: records for every horizon, or a status saying why not."""

    symbol: str
    interval: str
    as_of: datetime
    records: tuple[PredictionRecord, ...]
    status: PredictionStatus

    @property
    def ok(self) -> bool:
        return bool(self.records)


def build_records(
    symbol: str,
    interval: str,
    as_of: datetime,
    served: ServedForecast,
    generated_at: datetime,
    stale_after_intervals: float = 3.0,
) -> tuple[PredictionRecord, ...]:
    n_horizons = len(served.mean)
    if not (len(served.lower) == len(served.upper) == n_horizons) or n_horizons == 0:
        raise ValueError("served forecast has inconsistent or empty arrays")
    if any(
        len(band.lower) != n_horizons or len(band.upper) != n_horizons for band in served.intervals
    ):
        raise ValueError("served interval bands do not match the forecast's horizons")
    records = []
    for index in range(n_horizons):
        mean, lo, hi = (
            float(served.mean[index]),
            float(served.lower[index]),
            float(served.upper[index]),
        )
        if not all(math.isfinite(value) for value in (mean, lo, hi)):
            raise ValueError(f"non-finite forecast at horizon {index + 1}")
        bands = tuple(
            IntervalBand(
                level=band.level,
                lower=min(float(band.lower[index]), mean),
                upper=max(float(band.upper[index]), mean),
            )
            for band in served.intervals
        )
        if not all(math.isfinite(band.lower) and math.isfinite(band.upper) for band in bands):
            raise ValueError(f"non-finite interval at horizon {index + 1}")
        record = PredictionRecord(
            symbol=symbol,
            interval=cast(Interval, interval),
            horizon=index + 1,
            as_of=as_utc(as_of),
            target_time=target_time(as_of, interval, index + 1),
            predicted_price=mean,
            lower_bound=min(lo, mean),
            upper_bound=max(hi, mean),
            confidence_level=served.level,
            model=cast(ModelName, served.model),
            model_version=served.model_version,
            fallback_reason=served.fallback_reason,
            generated_at=as_utc(generated_at),
            intervals=bands,
        )
        records.append(with_freshness(record, as_utc(generated_at), stale_after_intervals))
    return tuple(records)


def ok_status(symbol: str, interval: str, available_days: int) -> PredictionStatus:
    return PredictionStatus(
        symbol=symbol,
        interval=cast(Interval, interval),
        status="ok",
        available_days=available_days,
    )


def insufficient_status(
    symbol: str, interval: str, required_days: int, available_days: int
) -> PredictionStatus:
    return PredictionStatus(
        symbol=symbol,
        interval=cast(Interval, interval),
        status="insufficient_history",
        required_days=required_days,
        available_days=available_days,
        detail=(
            f"Insufficient history. Required: {required_days} days, "
            f"Available: {available_days} days"
        ),
    )


def error_status(symbol: str, interval: str, detail: str) -> PredictionStatus:
    return PredictionStatus(
        symbol=symbol,
        interval=cast(Interval, interval),
        status="error",
        detail=detail[:500],
    )
