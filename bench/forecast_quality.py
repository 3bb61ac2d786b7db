"""forecast_quality: is the served interval a promise kept, on real prices?

Protocol (same for both sides): the last ``TEST`` bars of each real series
(``bench.real_series``: equity indices, a commodity, stocks, hourly FX; ``HISTORY`` bars
before them), every target forecast ``h`` = 1 and 5 steps ahead from the data before it.

* Pricecast: ``ml.backtest.run_backtest`` -- the served choice origin by origin, with the
  online calibration fed by each scored forecast (what the service would have answered; no
  LSTM champion is trained here: ARIMA serves, as it does for an asset without one).
* Baseline: statsforecast 2.1.1 (AutoARIMA, AutoETS, Naive) ``cross_validation`` with
  ``n_windows=TEST, step_size=1, refit=25`` at levels 50/80/95: the tool a user would pick.

Value: the served mean absolute coverage error of the 80% interval (points) over every series
and both horizons; baseline: the same for AutoARIMA. ``extra.table`` has, per series, horizon
and level, coverage and interval score for both and MASE; ``extra.targets`` checks the goals
(coverage within 3 points, MASE <= 1.005, interval score no worse than AutoARIMA's).
Needs the ``bench`` extra: ``pip install -e '.[bench]'``. With ``FORECAST_QUALITY_LSTM=1``
the backtest also trains, validates and promotes an LSTM at every refit like the retraining
job (about 35 s more per series and horizon), and the result is ``forecast_quality_lstm``.
"""

from __future__ import annotations

import os
import time
import warnings
from typing import Any

import numpy as np
import pandas as pd

from bench.common import write_result
from bench.real_series import Series, load_all
from ml.backtest import run_backtest
from ml.calibration import interval_score
from ml.evaluation import level_key, naive_scale

HISTORY = 1000
TEST = 250
REFIT = 25
HORIZONS = (1, 5)
LEVELS = (0.5, 0.8, 0.95)
SF_MODELS = ("AutoARIMA", "AutoETS", "Naive")
WITH_LSTM = os.environ.get("FORECAST_QUALITY_LSTM") == "1"


def statsforecast_cv(s: Series, h: int, models: tuple[str, ...] = SF_MODELS) -> pd.DataFrame:
    """statsforecast's walk-forward of ``models`` over the test targets of ``s``, one row per
    target (step ``h``), oldest first: ``ds`` (the target's index), ``y``, each model's mean
    and its ``-lo-``/``-hi-`` bounds per level."""
    import statsforecast.models as sf_models
    from statsforecast import StatsForecast

    y = s.closes
    df = pd.DataFrame({"unique_id": s.name, "ds": np.arange(y.size), "y": y})
    sf = StatsForecast(models=[getattr(sf_models, m)() for m in models], freq=1, n_jobs=1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        cv = sf.cross_validation(
            df=df, h=h, n_windows=TEST, step_size=1, refit=REFIT, level=[50, 80, 95]
        )
    return cv[cv["ds"] - cv["cutoff"] == h].sort_values("ds")


def statsforecast_metrics(s: Series, h: int) -> dict[str, dict[str, Any]]:
    y = s.closes
    cv = statsforecast_cv(s, h)
    actual = cv["y"].to_numpy()
    naive = y[cv["ds"].to_numpy() - h]
    scale = naive_scale(y, int(cv["ds"].iloc[0]))
    naive_mae = float(np.mean(np.abs(naive - actual)))
    out: dict[str, dict[str, Any]] = {}
    for m in SF_MODELS:
        row: dict[str, Any] = {
            "mase": round(float(np.mean(np.abs(cv[m].to_numpy() - actual))) / naive_mae, 4),
            "coverage_by_level": {},
            "interval_score": {},
            "msis": {},
        }
        for level in LEVELS:
            pct = round(level * 100)
            lo, hi = cv[f"{m}-lo-{pct}"].to_numpy(), cv[f"{m}-hi-{pct}"].to_numpy()
            key = level_key(level)
            row["coverage_by_level"][key] = round(
                float(np.mean((lo <= actual) & (actual <= hi))), 4
            )
            mean_is = float(np.mean(interval_score(lo, hi, actual, level)))
            row["interval_score"][key] = round(mean_is, 6)
            row["msis"][key] = round(mean_is / scale, 4) if scale else None
        out[m] = row
    return out


def ours(s: Series, h: int) -> dict[str, Any]:
    result = run_backtest(
        s.days,
        s.closes,
        horizon=h,
        test_size=TEST,
        refit_every=REFIT,
        use_lstm=WITH_LSTM,
        levels=LEVELS,
        phases=s.phases,
    )
    served: dict[str, Any] = result["served"]
    return served


def main() -> None:
    started = time.perf_counter()
    table: list[dict[str, Any]] = []
    seconds = {"pricecast": 0.0, "statsforecast": 0.0}
    for s in load_all(HISTORY + TEST):
        for h in HORIZONS:
            t0 = time.perf_counter()
            served = ours(s, h)
            t1 = time.perf_counter()
            base = statsforecast_metrics(s, h)
            t2 = time.perf_counter()
            seconds["pricecast"] += t1 - t0
            seconds["statsforecast"] += t2 - t1
            for level in LEVELS:
                key = level_key(level)
                arima = base["AutoARIMA"]
                table.append(
                    {
                        "series": s.name,
                        "asset_class": s.asset_class,
                        "interval": s.interval,
                        "horizon": h,
                        "level": level,
                        "served_coverage": served["coverage_by_level"][key],
                        "autoarima_coverage": arima["coverage_by_level"][key],
                        "autoets_coverage": base["AutoETS"]["coverage_by_level"][key],
                        "served_interval_score": served["interval_score"][key],
                        "autoarima_interval_score": arima["interval_score"][key],
                        "served_msis": served["msis"][key],
                        "autoarima_msis": arima["msis"][key],
                        "served_mase": served["mase"],
                        "autoarima_mase": arima["mase"],
                        "autoets_mase": base["AutoETS"]["mase"],
                        "served_choices": served["choices"],
                    }
                )
            print(s.name, h, served["coverage_by_level"], base["AutoARIMA"]["coverage_by_level"])
    at80 = [r for r in table if r["level"] == 0.8]
    value = 100 * float(np.mean([abs(r["served_coverage"] - 0.8) for r in at80]))
    baseline = 100 * float(np.mean([abs(r["autoarima_coverage"] - 0.8) for r in at80]))
    targets = {
        "coverage_within_3_points": all(
            abs(r["served_coverage"] - r["level"]) <= 0.03 for r in table
        ),
        "max_coverage_error_points": round(
            100 * max(abs(r["served_coverage"] - r["level"]) for r in table), 2
        ),
        "mase_at_most_1_005": all(r["served_mase"] <= 1.005 for r in table),
        "max_mase": max(r["served_mase"] for r in table),
        "interval_score_no_worse_than_autoarima": all(
            r["served_interval_score"] <= r["autoarima_interval_score"] for r in table
        ),
        "max_interval_score_ratio": round(
            max(r["served_interval_score"] / r["autoarima_interval_score"] for r in table), 4
        ),
    }
    write_result(
        "forecast_quality_lstm" if WITH_LSTM else "forecast_quality",
        value,
        "points",
        {"name": "statsforecast_autoarima_mace_80", "value": round(baseline, 4), "unit": "points"},
        {
            "series": {name: src[2] for name, src in _sources().items()},
            "history_bars": HISTORY,
            "test_bars": TEST,
            "refit_every": REFIT,
            "horizons": list(HORIZONS),
            "levels": list(LEVELS),
            "statsforecast": "2.1.1 AutoARIMA, AutoETS, Naive on prices",
            "lstm": (
                "trained at every refit, promoted like the retraining job"
                if WITH_LSTM
                else "not trained (ARIMA serves, as for an asset without a champion)"
            ),
        },
        extra={
            "targets": targets,
            "seconds": {k: round(v, 1) for k, v in seconds.items()},
            "elapsed_s": round(time.perf_counter() - started, 1),
            "table": table,
        },
    )


def _sources() -> dict[str, tuple[str, str, str, object]]:
    from bench.real_series import SOURCES

    return dict(SOURCES)


if __name__ == "__main__":
    main()
