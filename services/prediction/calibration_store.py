"""The online calibration of the service: adaptive conformal state per (symbol, interval,
horizon, level) in ``forecast_calibration`` (migration 0006).

* Before forecasting, :func:`load` reads the state of the batch's keys (one query) and
  :func:`calibration_of` turns it into the levels to build each band at
  (``ml.serving.Calibration``).
* When accuracy tracking scores forecasts for the first time (``accuracy.score_targets``
  hands back the fresh rows), :func:`feed` applies ``ml.calibration.aci_step`` to each
  level's hit or miss, oldest target first, and writes the keys back in one statement:
  constant work per scored forecast. Re-scoring (late data) does not feed twice.
* ``coverage`` is an exponentially weighted share of hits (span ``accuracy_window``): the
  observed coverage behind the ``pricecast_forecast_coverage`` gauge and its alert.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import numpy as np
import sqlalchemy as sa

from ml.calibration import aci_step, check_levels
from ml.serving import Calibration
from services.common.config import Settings
from services.common.metrics import FORECAST_COVERAGE

Key = tuple[str, str]  # symbol, interval
StateKey = tuple[int, float]  # horizon, level


@dataclass
class LevelState:
    alpha: float
    scored: int = 0
    misses: int = 0
    coverage: float | None = None
    last_target: datetime | None = None


@dataclass(frozen=True)
class ScoredRow:
    """A forecast scored for the first time: its horizon, target and every level's band."""

    horizon: int
    target_time: datetime
    actual: float
    intervals: tuple[tuple[float, float, float], ...]  # (level, lower, upper)


_LOAD = sa.text(
    """
    SELECT symbol, interval, horizon, level, alpha, scored, misses, coverage, last_target
    FROM forecast_calibration AS stored
    JOIN unnest(CAST(:symbols AS text[]), CAST(:intervals AS text[])) AS wanted(symbol, interval)
      USING (symbol, interval)
    """
)

_SAVE = sa.text(
    """
    INSERT INTO forecast_calibration AS stored
        (symbol, interval, horizon, level, alpha, scored, misses, coverage, last_target)
    SELECT :symbol, :interval, fresh.horizon, fresh.level, fresh.alpha, fresh.scored,
           fresh.misses, fresh.coverage, fresh.last_target
    FROM unnest(CAST(:horizons AS int[]), CAST(:levels AS float8[]),
                CAST(:alphas AS float8[]), CAST(:scored AS bigint[]),
                CAST(:misses AS bigint[]), CAST(:coverages AS float8[]),
                CAST(:last_targets AS timestamptz[]))
         AS fresh(horizon, level, alpha, scored, misses, coverage, last_target)
    ON CONFLICT (symbol, interval, horizon, level) DO UPDATE SET
        alpha = excluded.alpha, scored = excluded.scored, misses = excluded.misses,
        coverage = excluded.coverage, last_target = excluded.last_target, updated_at = now()
    """
)


def offered_levels(settings: Settings) -> tuple[float, ...]:
    return check_levels(settings.offered_levels())


def load(conn: sa.Connection, keys: Iterable[Key]) -> dict[Key, dict[StateKey, LevelState]]:
    wanted = sorted(set(keys))
    out: dict[Key, dict[StateKey, LevelState]] = {key: {} for key in wanted}
    if not wanted:
        return out
    rows = conn.execute(
        _LOAD,
        {
            "symbols": [symbol for symbol, _ in wanted],
            "intervals": [interval for _, interval in wanted],
        },
    ).mappings()
    for row in rows:
        state_key = (int(row["horizon"]), float(row["level"]))
        out[(row["symbol"], row["interval"])][state_key] = LevelState(
            float(row["alpha"]),
            int(row["scored"]),
            int(row["misses"]),
            None if row["coverage"] is None else float(row["coverage"]),
            row["last_target"],
        )
    return out


def calibration_of(
    states: dict[StateKey, LevelState],
    settings: Settings,
    horizons: int,
    phases: np.ndarray | None = None,
) -> Calibration:
    """The levels to build every (horizon, level) band at, from the key's state; ``phases``:
    the hours of day of the bars read, for intraday bars (``ml.calibration.bar_phases``)."""
    levels = offered_levels(settings)
    effective = {
        (horizon, level): 1.0 - states[(horizon, level)].alpha
        for horizon in range(1, horizons + 1)
        for level in levels
        if (horizon, level) in states
    }
    return Calibration.of(levels, settings.forecast_default_level, effective, phases)


def intervals_of(value: Any) -> tuple[tuple[float, float, float], ...]:
    """The stored ``intervals`` jsonb (a list, or its text) as (level, lower, upper)."""
    if value is None:
        return ()
    items = json.loads(value) if isinstance(value, str) else value
    return tuple(
        (float(item["level"]), float(item["lower"]), float(item["upper"])) for item in items
    )


def feed(
    conn: sa.Connection,
    symbol: str,
    interval: str,
    rows: Sequence[ScoredRow],
    settings: Settings,
) -> int:
    """Apply the adaptive conformal update of every freshly scored row; return the updates."""
    if not rows:
        return 0
    states = load(conn, [(symbol, interval)])[(symbol, interval)]
    decay = 1.0 / max(1, settings.accuracy_window)
    touched: set[StateKey] = set()
    for row in sorted(rows, key=lambda scored: (scored.target_time, scored.horizon)):
        for level, lower, upper in row.intervals:
            key = (row.horizon, level)
            state = states.setdefault(key, LevelState(alpha=1.0 - level))
            covered = lower <= row.actual <= upper
            state.alpha = aci_step(state.alpha, level, covered, settings.calibration_gamma_scale)
            state.scored += 1
            state.misses += 0 if covered else 1
            hit = 1.0 if covered else 0.0
            state.coverage = (
                hit if state.coverage is None else state.coverage + decay * (hit - state.coverage)
            )
            if state.last_target is None or row.target_time > state.last_target:
                state.last_target = row.target_time
            touched.add(key)
    keys = sorted(touched)
    conn.execute(
        _SAVE,
        {
            "symbol": symbol,
            "interval": interval,
            "horizons": [horizon for horizon, _ in keys],
            "levels": [level for _, level in keys],
            "alphas": [states[key].alpha for key in keys],
            "scored": [states[key].scored for key in keys],
            "misses": [states[key].misses for key in keys],
            "coverages": [states[key].coverage for key in keys],
            "last_targets": [states[key].last_target for key in keys],
        },
    )
    _export(symbol, interval, states)
    return len(keys)


def _export(symbol: str, interval: str, states: dict[StateKey, LevelState]) -> None:
    """Observed coverage per level (mean over horizons) for the Prometheus gauge."""
    by_level: dict[float, list[float]] = {}
    for (_, level), state in states.items():
        if state.coverage is not None:
            by_level.setdefault(level, []).append(state.coverage)
    for level, values in by_level.items():
        FORECAST_COVERAGE.labels(symbol, interval, f"{level:g}").set(sum(values) / len(values))
