"""Turn one served forecast into the wire records of design.md (pure)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import cast

from services.common.schemas import Interval, ModelName, PredictionRecord, PredictionStatus
from services.prediction.clock import as_utc, target_time


@dataclass(frozen=True)
class Served:
    """What the model layer answers for one symbol/interval: steps 1..len(mean)."""

    model: str
    model_version: str
    mean: Sequence[float]
    lower: Sequence[float]
    upper: Sequence[float]
    fallback_reason: str | None = None
    level: float = 0.8


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
    served: Served,
    generated_at: datetime,
) -> tuple[PredictionRecord, ...]:
    n = len(served.mean)
    if not (len(served.lower) == len(served.upper) == n) or n == 0:
        raise ValueError("served forecast has inconsistent or empty arrays")
    records = []
    for i in range(n):
        mean, lo, hi = float(served.mean[i]), float(served.lower[i]), float(served.upper[i])
        if not all(math.isfinite(v) for v in (mean, lo, hi)):
            raise ValueError(f"non-finite forecast at horizon {i + 1}")
        records.append(
            PredictionRecord(
                symbol=symbol,
                interval=cast(Interval, interval),
                horizon=i + 1,
                as_of=as_utc(as_of),
                target_time=target_time(as_of, interval, i + 1),
                predicted_price=mean,
                lower_bound=min(lo, mean),
                upper_bound=max(hi, mean),
                confidence_level=served.level,
                model=cast(ModelName, served.model),
                model_version=served.model_version,
                fallback_reason=served.fallback_reason,
                generated_at=as_utc(generated_at),
            )
        )
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
