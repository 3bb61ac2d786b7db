from __future__ import annotations

import numpy as np
from ml_synthetic import FAST_LSTM, ar_prices, random_walk

from ml.evaluation import holdout_metrics
from ml.lstm import LSTMForecaster
from ml.promotion import decide_promotion, score, train_candidate


def test_lstm_learns_a_predictable_series() -> None:
    y = ar_prices(1100, seed=5)
    model = LSTMForecaster(FAST_LSTM).fit(y[:700])
    m = holdout_metrics(model, y, horizon=1, test_size=400)
    assert m.count == 400
    assert m.mase is not None and m.mase < 0.9, m
    assert m.coverage is not None and 0.75 <= m.coverage <= 0.85, m


def test_lstm_on_a_random_walk_is_not_promoted() -> None:
    y = random_walk(900, seed=6)
    model, holdouts = train_candidate({"RW": y}, config=FAST_LSTM)
    scored = score(model, {"RW": y}, holdouts, horizon=1)
    assert scored.mase is not None
    decision = decide_promotion(scored.mase, None)
    assert not decision.promote, decision.reason


def test_global_model_trains_on_many_series_and_keeps_per_series_scale() -> None:
    series = {f"S{i}": ar_prices(500, seed=20 + i, sigma=0.005 * (i + 1)) for i in range(3)}
    model, holdouts = train_candidate(series, config=FAST_LSTM)
    assert model.training["series"] == 3
    fcs = model.forward_many([s for s in series.values()], 3)
    widths = [float(np.log(f.upper[0] / f.lower[0])) for f in fcs]
    assert widths[0] < widths[1] < widths[2]  # scaled intervals follow each asset's volatility
    assert score(model, series, holdouts, horizon=1).mase is not None


def test_horizon_beyond_the_head_is_refused() -> None:
    model = LSTMForecaster(FAST_LSTM, epochs=1).fit(ar_prices(300, seed=1))
    try:
        model.predict(FAST_LSTM.max_horizon + 1)
    except ValueError as exc:
        assert "max horizon" in str(exc)
    else:
        raise AssertionError("expected ValueError")
