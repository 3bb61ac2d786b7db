"""lstm_inference: per-asset LSTM forecast time when 100 assets are forecast in one batch.

Baseline, same run: the same model called one asset at a time (batch of 1). ARIMA fit+forecast
per asset is reported in ``extra`` for scale. Target: <= 2 ms per asset.
"""

from __future__ import annotations

import time

import numpy as np

from bench.common import latency_extra, write_result
from ml.arima import ArimaForecaster
from ml.lstm import LSTMConfig, LSTMForecaster

ASSETS = 100
BARS = 400
HORIZON = 24
ROUNDS = 30


def main() -> None:
    rng = np.random.default_rng(0)
    histories = [100 * np.exp(np.cumsum(rng.normal(0, 0.02, BARS))) for _ in range(ASSETS)]
    model = LSTMForecaster(LSTMConfig(epochs=1, max_train_seconds=5)).fit_many(histories[:10])
    model.forward_many(histories, HORIZON)  # warm-up
    batched: list[float] = []
    for _ in range(ROUNDS):
        t0 = time.perf_counter()
        model.forward_many(histories, HORIZON)
        batched.append((time.perf_counter() - t0) * 1000 / ASSETS)
    single: list[float] = []
    for _ in range(3):
        for y in histories:
            t0 = time.perf_counter()
            model.forward(y, HORIZON)
            single.append((time.perf_counter() - t0) * 1000)
    arima: list[float] = []
    for y in histories[:30]:
        t0 = time.perf_counter()
        ArimaForecaster().fit(y[-90:]).predict(HORIZON)
        arima.append((time.perf_counter() - t0) * 1000)
    value = float(np.median(batched))
    baseline = float(np.median(single))
    write_result(
        "lstm_inference",
        value,
        "ms/asset",
        {"name": "lstm_batch_of_1", "value": baseline, "unit": "ms/asset"},
        {
            "assets": ASSETS,
            "bars": BARS,
            "horizon": HORIZON,
            "window": model.config.window,
            "hidden": model.config.hidden,
            "threads": 1,
        },
        extra={
            **latency_extra(batched),
            "batch_of_100_ms": round(value * ASSETS, 3),
            "arima_fit_forecast_p50_ms": round(float(np.median(arima)), 3),
        },
    )


if __name__ == "__main__":
    main()
