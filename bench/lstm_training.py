"""lstm_training: train the global LSTM on 100 assets x 1 year of hourly bars (wall clock).

Also settles "one model per asset or one global model" by measurement: on the first
``PER_ASSET_SAMPLE`` assets, per-asset models are trained and scored on the same held-out
tails as the global model. Baseline: per-asset training time for all 100 assets (extrapolated
from the sample). Target: <= 10 minutes.

Synthetic assets mix predictable (AR(1) log returns, phi 0.2-0.6) and random-walk series with
different volatilities, like a real universe where only some assets are forecastable.
"""

from __future__ import annotations

import time

import numpy as np

from bench.common import write_result
from ml.lstm import LSTMConfig
from ml.promotion import score, train_candidate

ASSETS = 100
BARS = 24 * 365
PER_ASSET_SAMPLE = 8
HOLDOUT = 200
CONFIG = LSTMConfig(max_train_seconds=540.0)


def make_universe(rng: np.random.Generator) -> dict[str, np.ndarray]:
    out: dict[str, np.ndarray] = {}
    for i in range(ASSETS):
        phi = 0.0 if i % 2 else rng.uniform(0.2, 0.6)
        e = rng.normal(0, rng.uniform(0.002, 0.01), BARS)
        r = np.zeros(BARS)
        for t in range(1, BARS):
            r[t] = phi * r[t - 1] + e[t]
        out[f"A{i:03d}"] = 100 * np.exp(np.cumsum(r))
    return out


def main() -> None:
    universe = make_universe(np.random.default_rng(0))
    t0 = time.perf_counter()
    model, holdouts = train_candidate(universe, config=CONFIG, max_holdout=HOLDOUT)
    global_s = time.perf_counter() - t0
    sample = dict(list(universe.items())[:PER_ASSET_SAMPLE])
    global_scored = score(model, sample, holdouts, horizon=1)

    per_asset_s = 0.0
    per_asset_mase: dict[str, float | None] = {}
    for key, y in sample.items():
        t1 = time.perf_counter()
        m, h = train_candidate({key: y}, config=CONFIG, max_holdout=HOLDOUT)
        per_asset_s += time.perf_counter() - t1
        per_asset_mase[key] = score(m, {key: y}, h, horizon=1).mase
    per_asset_total = per_asset_s / PER_ASSET_SAMPLE * ASSETS
    global_mase = {k: v.mase for k, v in global_scored.per_series.items()}
    pa = [v for v in per_asset_mase.values() if v is not None]
    write_result(
        "lstm_training",
        round(global_s, 2),
        "s",
        {"name": "per_asset_models_extrapolated", "value": round(per_asset_total, 2), "unit": "s"},
        {
            "assets": ASSETS,
            "bars_per_asset": BARS,
            "interval": "1h",
            "window": CONFIG.window,
            "hidden": CONFIG.hidden,
            "threads": 1,
        },
        extra={
            "target_s": 600,
            "training": model.training,
            "global_mase_all_assets": score(model, universe, holdouts, horizon=1).mase,
            "sample_assets": PER_ASSET_SAMPLE,
            "global_mase_sample": global_scored.mase,
            "per_asset_mase_sample": float(np.mean(pa)) if pa else None,
            "global_mase_by_asset": global_mase,
            "per_asset_mase_by_asset": per_asset_mase,
            "per_asset_sample_seconds": round(per_asset_s, 2),
        },
    )


if __name__ == "__main__":
    main()
