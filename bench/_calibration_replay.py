"""Replay the served bands of ``forecast_quality`` over its cached point forecasts: a tool for
changing ``ml.calibration``, not a benchmark (``python -m bench`` skips it).

``forecast_quality`` fits ARIMA at every origin (about 75 s for the six series and both
horizons); the band does not change the point forecast, so a calibration change can be
measured on the served means of one run. This tool runs the served walk once per series and
horizon, caches its means (``--cache``, default ``~/.cache/pricecast/calibration_replay.npz``;
``--refresh`` after changing a point-forecast model), then replays the bands with the current
``ml.calibration`` through :func:`ml.served_walk.replay_bands` (the walk's own update order;
``tests/ml/test_served_walk.py`` holds the two equal), in seconds. It prints coverage and
the interval score over AutoARIMA's (``bench/results/forecast_quality.json``, same protocol)
per cell, and the goals' summary. ``--bootstrap`` adds a moving-block bootstrap (blocks of 10
targets) of each ratio, running statsforecast's AutoARIMA for the per-target scores.
``--oracle`` adds two bounds no causal band reaches: the score of the best *constant*
multiplier of the served scale chosen after the fact (each side's quantile picked knowing the
test targets), and the same for a band of constant width in log price, each over AutoARIMA's.
Where both are near 1 no choice of level on those shapes can beat AutoARIMA by more than luck.

    python -m bench._calibration_replay [--refresh] [--bootstrap] [--oracle]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import numpy as np

from bench.forecast_quality import HISTORY, HORIZONS, LEVELS, REFIT, TEST, statsforecast_cv
from bench.real_series import Series, load_all
from ml.backtest import days_available
from ml.calibration import VolatilityCalibrator, hindsight_interval_score, interval_score
from ml.evaluation import WalkForward, level_key
from ml.selection import SelectionPolicy
from ml.served_walk import replay_bands, served_walk_forward

RESULTS = Path(__file__).parent / "results" / "forecast_quality.json"
CACHE = Path.home() / ".cache" / "pricecast" / "calibration_replay.npz"
BLOCK, RESAMPLES = 10, 2000


def served_means(series: list[Series], cache: Path, refresh: bool) -> dict[str, np.ndarray]:
    """``{name|h|targets, name|h|mean}`` for every series and horizon, from ``cache`` if there."""
    if cache.exists() and not refresh:
        with np.load(cache) as stored:
            return {key: stored[key] for key in stored.files}
    out: dict[str, np.ndarray] = {}
    for s in series:
        for h in HORIZONS:
            run = served_walk_forward(
                s.closes,
                days_available(s.days),
                horizon=h,
                test_size=TEST,
                refit_every=REFIT,
                policy=SelectionPolicy(),
                levels=LEVELS,
            )
            out[f"{s.name}|{h}|targets"] = run.walk.targets
            out[f"{s.name}|{h}|mean"] = run.walk.mean
    cache.parent.mkdir(parents=True, exist_ok=True)
    np.savez(cache, **out)  # type: ignore[arg-type]
    return out


def block_bootstrap(ours: np.ndarray, theirs: np.ndarray, seed: int = 0) -> tuple[float, float]:
    """90% interval of ``mean(ours) / mean(theirs)`` over moving blocks of targets (scores of
    neighbouring targets are correlated: overlapping moves, volatility clusters)."""
    rng = np.random.default_rng(seed)
    n = ours.size
    starts = rng.integers(0, n - BLOCK + 1, size=(RESAMPLES, n // BLOCK))
    idx = (starts[:, :, None] + np.arange(BLOCK)).reshape(RESAMPLES, -1)
    ratios = ours[idx].mean(axis=1) / theirs[idx].mean(axis=1)
    low, high = np.percentile(ratios, [5, 95])
    return float(low), float(high)


def origin_scales(s: Series, targets: np.ndarray, h: int) -> np.ndarray:
    """The served band's scale (log price, step ``h``) at the origin of every target."""
    out = np.empty(targets.size)
    for slot, target in enumerate(targets):
        known = int(target) - h + 1  # the bars up to and including the origin
        phases = None if s.phases is None else s.phases[:known]
        out[slot] = VolatilityCalibrator.from_prices(s.closes[:known], h, phases).sigma[h - 1]
    return out


def replay(args: argparse.Namespace) -> list[dict[str, Any]]:
    reference = {
        (row["series"], row["horizon"], row["level"]): row
        for row in json.loads(RESULTS.read_text())["extra"]["table"]
    }
    series = load_all(HISTORY + TEST)
    means = served_means(series, args.cache, args.refresh)
    rows: list[dict[str, Any]] = []
    for s in series:
        for h in HORIZONS:
            targets = means[f"{s.name}|{h}|targets"]
            mean = means[f"{s.name}|{h}|mean"]
            bands, _ = replay_bands(s.closes, targets, h, mean, LEVELS, phases=s.phases)
            actual = s.closes[targets]
            # scored as the benchmark scores the served walk (ml.evaluation)
            walk = WalkForward(targets, actual, s.closes[targets - h], mean, *bands[0.8], bands)
            metrics = walk.metrics()
            need_theirs = args.bootstrap or args.oracle
            theirs = statsforecast_cv(s, h, ("AutoARIMA",)) if need_theirs else None
            scales = origin_scales(s, targets, h) if args.oracle else None
            for level in LEVELS:
                key = level_key(level)
                served_score = metrics.interval_score[key]
                assert served_score is not None
                row: dict[str, Any] = {
                    "series": s.name,
                    "horizon": h,
                    "level": level,
                    "coverage": metrics.coverage_by_level[key],
                    "ratio": served_score
                    / reference[(s.name, h, level)]["autoarima_interval_score"],
                }
                if theirs is not None:
                    pct = round(level * 100)
                    their_scores = interval_score(
                        theirs[f"AutoARIMA-lo-{pct}"].to_numpy(),
                        theirs[f"AutoARIMA-hi-{pct}"].to_numpy(),
                        actual,
                        level,
                    )
                    if args.bootstrap:
                        row["ci90"] = block_bootstrap(
                            interval_score(*bands[level], actual, level), their_scores
                        )
                    if scales is not None:
                        log_mean, theirs_mean = np.log(mean), float(their_scores.mean())
                        row["oracle"] = (
                            hindsight_interval_score(log_mean, scales, actual, level) / theirs_mean,
                            hindsight_interval_score(log_mean, np.ones_like(scales), actual, level)
                            / theirs_mean,
                        )
                rows.append(row)
    return rows


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench._calibration_replay")
    parser.add_argument("--cache", type=Path, default=CACHE)
    parser.add_argument("--refresh", action="store_true", help="refit the served means")
    parser.add_argument("--bootstrap", action="store_true", help="block-bootstrap each ratio")
    parser.add_argument(
        "--oracle", action="store_true", help="best after-the-fact constant multipliers"
    )
    rows = replay(parser.parse_args(argv))
    for row in rows:
        extra = " ({:.3f}-{:.3f})".format(*row["ci90"]) if "ci90" in row else ""
        if "oracle" in row:
            extra += ", oracle: served scale {:.3f}, constant width {:.3f}".format(*row["oracle"])
        mark = " *" if row["ratio"] > 1 else ""
        print(
            f"{row['series']:7} h{row['horizon']} {row['level']:.2f}: coverage "
            f"{row['coverage']:.3f}, interval score / AutoARIMA {row['ratio']:.3f}{extra}{mark}"
        )
    at80 = [abs(row["coverage"] - 0.8) for row in rows if row["level"] == 0.8]
    print(
        f"no worse than AutoARIMA: {sum(row['ratio'] <= 1 for row in rows)}/{len(rows)} cells, "
        f"worst {max(row['ratio'] for row in rows):.3f}; coverage within "
        f"{100 * max(abs(row['coverage'] - row['level']) for row in rows):.1f} points; "
        f"80% mean absolute coverage error {100 * float(np.mean(at80)):.2f} points"
    )


if __name__ == "__main__":
    main()
