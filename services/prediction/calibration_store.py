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
    FROM forecast_calibration c
    JOIN unnest(CAST(:symbols AS text[]), CAST(:intervals AS text[])) AS k(symbol, interval)
      USING (symbol, interval)
    """
)

_SAVE = sa.text(
    """
    INSERT INTO forecast_calibration AS c
        (symbol, interval, horizon, level, alpha, scored, misses, coverage, last_target)
    SELECT :symbol, :interval, s.horizon, s.level, s.alpha, s.scored, s.misses, s.coverage,
           s.last_target
    FROM unnest(CAST(:horizons AS int[]), CAST(:levels AS float8[]),
                CAST(:alphas AS float8[]), CAST(:scored AS bigint[]),
                CAST(:misses AS bigint[]), CAST(:coverages AS float8[]),
                CAST(:last_targets AS timestamptz[]))
         AS s(horizon, level, alpha, scored, misses, coverage, last_target)
    ON CONFLICT (symbol, interval, horizon, level) DO UPDATE SET
        alpha = excluded.alpha, scored = excluded.scored, misses = excluded.misses,
        coverage = excluded.coverage, last_target = excluded.last_target, updated_at = now()
    """
)


def offered_levels(settings: Settings) -> tuple[float, ...]:
    return check_levels(settings.offered_levels())


def load(conn: sa.Connection, keys: Iterable[Key]) -> dict[Key, dict[StateKey, LevelState]]:
    wanted = sorted(set(keys))
    out: dict[Key, dict[StateKey, LevelState]] = {k: {} for k in wanted}
    if not wanted:
        return out
    rows = conn.execute(
        _LOAD, {"symbols": [k[0] for k in wanted], "intervals": [k[1] for k in wanted]}
    ).mappings()
    for r in rows:
        out[(r["symbol"], r["interval"])][(int(r["horizon"]), float(r["level"]))] = LevelState(
            float(r["alpha"]),
            int(r["scored"]),
            int(r["misses"]),
            None if r["coverage"] is None else float(r["coverage"]),
            r["last_target"],
        )
    return out


def calibration_of(
    states: dict[StateKey, LevelState], settings: Settings, horizons: int
) -> Calibration:
    """The levels to build every (horizon, level) band at, from the key's state."""
    levels = offered_levels(settings)
    effective = {
        (h, lv): 1.0 - states[(h, lv)].alpha
        for h in range(1, horizons + 1)
        for lv in levels
        if (h, lv) in states
    }
    return Calibration.of(levels, settings.forecast_default_level, effective)


def intervals_of(value: Any) -> tuple[tuple[float, float, float], ...]:
    """The stored ``intervals`` jsonb (a list, or its text) as (level, lower, upper)."""
    if value is None:
        return ()
    items = json.loads(value) if isinstance(value, str) else value
    return tuple((float(i["level"]), float(i["lower"]), float(i["upper"])) for i in items)


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
    for row in sorted(rows, key=lambda r: (r.target_time, r.horizon)):
        for level, lower, upper in row.intervals:
            key = (row.horizon, level)
            st = states.setdefault(key, LevelState(alpha=1.0 - level))
            covered = lower <= row.actual <= upper
            st.alpha = aci_step(st.alpha, level, covered, settings.calibration_gamma_scale)
            st.scored += 1
            st.misses += 0 if covered else 1
            hit = 1.0 if covered else 0.0
            st.coverage = hit if st.coverage is None else st.coverage + decay * (hit - st.coverage)
            if st.last_target is None or row.target_time > st.last_target:
                st.last_target = row.target_time
            touched.add(key)
    keys = sorted(touched)
    conn.execute(
        _SAVE,
        {
            "symbol": symbol,
            "interval": interval,
            "horizons": [k[0] for k in keys],
            "levels": [k[1] for k in keys],
            "alphas": [states[k].alpha for k in keys],
            "scored": [states[k].scored for k in keys],
            "misses": [states[k].misses for k in keys],
            "coverages": [states[k].coverage for k in keys],
            "last_targets": [states[k].last_target for k in keys],
        },
    )
    _export(symbol, interval, states)
    return len(keys)


def _export(symbol: str, interval: str, states: dict[StateKey, LevelState]) -> None:
    """Observed coverage per level (mean over horizons) for the Prometheus gauge."""
    by_level: dict[float, list[float]] = {}
    for (_, level), st in states.items():
        if st.coverage is not None:
            by_level.setdefault(level, []).append(st.coverage)
    for level, values in by_level.items():
        FORECAST_COVERAGE.labels(symbol, interval, f"{level:g}").set(sum(values) / len(values))
