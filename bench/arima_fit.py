"""arima_fit: median ARIMA fit+forecast per 90-bar series, as served: order search, 7-step
forecast, calibrated bands at every offered level (0.5, 0.8, 0.95: volatility-scaled conformal
quantiles with adaptive-conformal levels, ``ml.calibration``).

Baseline, same run: statsmodels' default ARIMA(1,1,1) MLE fit + forecast on the same series
(what a user would reach for first). Target: <= 50 ms median. ``extra.plain_p50_ms`` is the
plain single-level fit (the model's own 80% interval) on the same series in the same run;
``extra.levels_vs_plain`` must stay <= 1.2. ``extra.intraday_p50_ms`` is the served fit for
hourly bars (the bands also take the bars' hours of day: the intraday volatility profile),
``extra.intraday_vs_plain`` its ratio to the plain fit, with the same limit.
"""

from __future__ import annotations

import time
import warnings

import numpy as np

from bench.common import latency_extra, write_result
from ml.arima import ArimaForecaster
from ml.calibration import DEFAULT_LEVELS, AciState, calibrated_bands, hour_phases

N_SERIES = 200
BARS = 90
HORIZON = 7


def series(rng: np.random.Generator) -> np.ndarray:
    phi = rng.uniform(-0.5, 0.7)
    e = rng.normal(0, rng.uniform(0.005, 0.04), BARS)
    r = np.zeros(BARS)
    for t in range(1, BARS):
        r[t] = phi * r[t - 1] + e[t]
    return 100 * np.exp(np.cumsum(r))


def main() -> None:
    from statsmodels.tsa.arima.model import ARIMA

    rng = np.random.default_rng(0)
    data = [series(rng) for _ in range(N_SERIES)]
    ArimaForecaster().fit(data[0]).predict(HORIZON)  # warm imports
    plain: list[float] = []
    ours: list[float] = []
    intraday: list[float] = []
    hours = hour_phases(np.arange(BARS) * 3600)
    fallbacks = 0
    effective = {(h, lv): lv - 0.02 for h in range(1, HORIZON + 1) for lv in DEFAULT_LEVELS}
    for _ in range(2):  # interleaved rounds: machine noise hits both sides alike
        for y in data:
            t0 = time.perf_counter()
            model = ArimaForecaster().fit(y)
            model.predict(HORIZON)
            plain.append((time.perf_counter() - t0) * 1000)
            t0 = time.perf_counter()
            model = ArimaForecaster().fit(y)
            fc = model.predict(HORIZON)
            calibrated_bands(y, fc.mean, DEFAULT_LEVELS, effective)
            ours.append((time.perf_counter() - t0) * 1000)
            t0 = time.perf_counter()
            model = ArimaForecaster().fit(y)
            fc = model.predict(HORIZON)
            calibrated_bands(y, fc.mean, DEFAULT_LEVELS, effective, hours)
            intraday.append((time.perf_counter() - t0) * 1000)
            fallbacks += model.served_model != "arima"
    base: list[float] = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for y in data:
            t0 = time.perf_counter()
            res = ARIMA(np.log(y), order=(1, 1, 1)).fit()
            res.get_forecast(HORIZON).conf_int(alpha=0.2)
            base.append((time.perf_counter() - t0) * 1000)
    # the online calibration's update per scored forecast and level (constant time)
    state = AciState()
    hits = np.random.default_rng(1).random(100_000) < 0.8
    t0 = time.perf_counter()
    for i, hit in enumerate(hits):
        state.update(1 + i % HORIZON, 0.8, bool(hit))
    update_ns = (time.perf_counter() - t0) / hits.size * 1e9
    value = float(np.median(ours))
    baseline = float(np.median(base))
    plain_p50 = float(np.median(plain))
    write_result(
        "arima_fit",
        value,
        "ms",
        {"name": "statsmodels_arima_111_mle_fit_forecast", "value": baseline, "unit": "ms"},
        {
            "series": N_SERIES,
            "bars": BARS,
            "horizon": HORIZON,
            "orders": 5,
            "threads": 1,
            "levels": list(DEFAULT_LEVELS),
        },
        extra={
            **latency_extra(ours),
            "baseline_p50_ms": baseline,
            "naive_fallbacks": fallbacks // 2,
            "plain_p50_ms": round(plain_p50, 3),
            "levels_vs_plain": round(value / plain_p50, 4),
            "intraday_p50_ms": round(float(np.median(intraday)), 3),
            "intraday_vs_plain": round(float(np.median(intraday)) / plain_p50, 4),
            "aci_update_ns": round(update_ns, 1),
        },
    )


if __name__ == "__main__":
    main()
