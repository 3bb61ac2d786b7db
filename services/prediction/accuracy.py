"""Accuracy tracking: score forecasts when their target bar closes, roll the errors up, and
queue a retrain request when a model degrades.

* Scoring: ``actual_price`` is the close of the target bar, ``abs_error`` the distance of the
  point forecast to it, ``naive_abs_error`` the distance of the naive forecast (the close of
  the ``as_of`` bar). Re-scoring is idempotent, so late data simply rescores.
* Rolling metrics per symbol, interval and model over the newest ``accuracy_window`` scored
  forecasts: MAPE, MASE (mean error over mean naive error: < 1 beats naive) and the share of
  actuals inside the 80% interval (coverage).
* Degradation: rolling MASE over the model's validation MASE (the champion's walk-forward
  MASE for this asset; 1.0, the naive level, for models fitted at serving time like ARIMA).
  Beyond ``accuracy_degradation_factor`` with at least ``accuracy_min_samples`` scores, one
  retrain request is queued: the partial unique index on open requests makes it exactly one,
  and a cooldown keeps a finished request from being re-queued at once.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any, get_args

import sqlalchemy as sa

from services.common.bars import get_bars
from services.common.retrain_requests import insert_retrain_request
from services.common.schemas import ModelName
from services.prediction.calibration_store import ScoredRow, intervals_of
from services.prediction.clock import as_utc, step

MODELS: tuple[str, ...] = get_args(ModelName)
REQUESTED_BY = "prediction-service"  # ``requested_by`` of the retrain requests it queues

# ``fresh``: the row had no actual before this statement (the self-join reads the old row),
# so the online calibration is fed once per forecast however often late data rescores it.
_SCORE = sa.text(
    """
    UPDATE predictions p
    SET actual_price = s.actual,
        abs_error = abs(s.actual - p.predicted_price),
        naive_abs_error = abs(s.actual - s.naive)
    FROM (
        SELECT u.horizon, u.as_of, u.actual, u.naive, o.actual_price IS NULL AS fresh
        FROM unnest(CAST(:horizons AS int[]), CAST(:as_ofs AS timestamptz[]),
                    CAST(:actuals AS float8[]), CAST(:naives AS float8[]))
             AS u(horizon, as_of, actual, naive)
        JOIN predictions o ON o.symbol = :symbol AND o.interval = :interval
                          AND o.horizon = u.horizon AND o.as_of = u.as_of
    ) s
    WHERE p.symbol = :symbol AND p.interval = :interval
      AND p.horizon = s.horizon AND p.as_of = s.as_of
    RETURNING p.horizon, p.target_time, s.actual, s.fresh, p.intervals
    """
)

# One bounded index scan per model (ix_predictions_scored, migration 0005): the newest
# ``window`` scored forecasts of each model, however many the table holds.
_ROLLING = sa.text(
    """
    SELECT m.model,
           count(*) AS n,
           avg(w.abs_error / NULLIF(w.actual_price, 0)) AS mape,
           avg(w.abs_error) / NULLIF(avg(w.naive_abs_error), 0) AS mase,
           avg(CASE WHEN w.actual_price BETWEEN w.lower_bound AND w.upper_bound
                    THEN 1.0 ELSE 0.0 END) AS coverage
    FROM unnest(CAST(:models AS text[])) AS m(model)
    CROSS JOIN LATERAL (
        SELECT abs_error, naive_abs_error, actual_price, lower_bound, upper_bound
        FROM predictions
        WHERE symbol = :symbol AND interval = :interval AND model = m.model
          AND actual_price IS NOT NULL AND naive_abs_error IS NOT NULL
        ORDER BY target_time DESC, horizon
        LIMIT :window
    ) w
    GROUP BY m.model
    ORDER BY m.model
    """
)


def score_targets(
    conn: sa.Connection,
    symbol: str,
    interval: str,
    targets: Iterable[datetime],
    n_horizons: int,
    fresh: list[ScoredRow] | None = None,
) -> int:
    """Score every stored forecast whose target is one of the closed bars ``targets``;
    append the ones scored for the first time (with their bands) to ``fresh``."""
    wanted = sorted({as_utc(target) for target in targets})
    if not wanted:
        return 0
    size = step(interval)
    bars = get_bars(
        conn, symbol, interval, start=wanted[0] - n_horizons * size, end=wanted[-1] + size
    )
    closes = {as_utc(bar.bucket): float(bar.close) for bar in bars}
    horizons: list[int] = []
    as_ofs: list[datetime] = []
    actuals: list[float] = []
    naives: list[float | None] = []
    for target in wanted:
        actual = closes.get(target)
        if actual is None:
            continue
        for horizon in range(1, n_horizons + 1):
            as_of = target - horizon * size
            horizons.append(horizon)
            as_ofs.append(as_of)
            actuals.append(actual)
            naives.append(closes.get(as_of))
    if not horizons:
        return 0
    result = conn.execute(
        _SCORE,
        {
            "symbol": symbol,
            "interval": interval,
            "horizons": horizons,
            "as_ofs": as_ofs,
            "actuals": actuals,
            "naives": naives,
        },
    )
    rows = result.all()
    if fresh is not None:
        fresh.extend(
            ScoredRow(int(horizon), target_time, float(actual), intervals_of(bands))
            for horizon, target_time, actual, first_time, bands in rows
            if first_time and bands is not None
        )
    return len(rows)


@dataclass(frozen=True)
class Rolling:
    symbol: str
    interval: str
    model: str
    n: int
    mape: float | None
    mase: float | None
    coverage: float | None

    def to_dict(self) -> dict[str, Any]:
        return {
            "model": self.model,
            "n": self.n,
            "mape": self.mape,
            "mase": self.mase,
            "coverage": self.coverage,
        }


def _num(value: Any) -> float | None:
    if value is None:
        return None
    number = float(value)
    return number if math.isfinite(number) else None


def rolling_accuracy(conn: sa.Connection, symbol: str, interval: str, window: int) -> list[Rolling]:
    rows = conn.execute(
        _ROLLING,
        {"symbol": symbol, "interval": interval, "window": window, "models": list(MODELS)},
    ).mappings()
    return [
        Rolling(
            symbol=symbol,
            interval=interval,
            model=str(row["model"]),
            n=int(row["n"]),
            mape=_num(row["mape"]),
            mase=_num(row["mase"]),
            coverage=_num(row["coverage"]),
        )
        for row in rows
    ]


def degradation_ratio(rolling: Rolling, validation_mase: float | None) -> float | None:
    """Rolling MASE over the validation MASE (1.0, the naive level, when there is none)."""
    if rolling.mase is None:
        return None
    reference = validation_mase if validation_mase and validation_mase > 0 else 1.0
    return rolling.mase / reference


def is_degraded(rolling: Rolling, ratio: float | None, factor: float, min_samples: int) -> bool:
    return ratio is not None and rolling.n >= min_samples and ratio > factor


def request_retrain(
    conn: sa.Connection,
    symbol: str,
    interval: str,
    reason: str,
    details: dict[str, Any],
    cooldown_s: int,
) -> int | None:
    """Queue one retrain request; ``None`` when one is open or was made within the cooldown."""
    inserted = insert_retrain_request(
        conn,
        symbol,
        interval,
        reason,
        REQUESTED_BY,
        details=details,
        cooldown_s=cooldown_s,
    )
    return None if inserted is None else inserted[0]
