from __future__ import annotations

import numpy as np
import pytest
from ml_synthetic import FAST_LSTM, ar_prices

from ml.lstm import LSTMForecaster
from ml.naive import DriftForecaster, NaiveForecaster
from ml.promotion import decide_promotion, score
from ml.selection import InsufficientHistory, SelectionPolicy, select_model
from ml.serving import LoadedModel, serve_forecast

POLICY = SelectionPolicy(min_arima_days=30, min_lstm_days=90)


def test_45_days_serves_arima_with_the_reason() -> None:
    served = serve_forecast(ar_prices(45, seed=1), 7, 45, None, POLICY)
    assert served.model == "arima"
    assert served.model_version.startswith("arima(")
    assert served.fallback_reason is not None
    assert "history 45d < 90d required for lstm" in served.fallback_reason
    assert len(served.mean) == len(served.lower) == len(served.upper) == 7
    assert all(
        lo <= m <= up for lo, m, up in zip(served.lower, served.mean, served.upper, strict=True)
    )


def test_10_days_is_insufficient_history() -> None:
    with pytest.raises(InsufficientHistory) as err:
        serve_forecast(ar_prices(10, seed=1), 7, 10, None, POLICY)
    assert str(err.value) == "Required: 30 days, Available: 10 days"
    assert (err.value.required_days, err.value.available_days) == (30, 10)


def test_thresholds_are_parameters() -> None:
    strict = SelectionPolicy(min_arima_days=50, min_lstm_days=200)
    with pytest.raises(InsufficientHistory, match="Required: 50 days, Available: 45 days"):
        select_model(45, False, strict)
    assert select_model(150, True, strict).reason == "history 150d < 200d required for lstm"


def test_no_promoted_lstm_and_untrusted_lstm_fall_back_to_arima() -> None:
    assert select_model(400, False, POLICY).reason == "no promoted lstm version"
    sel = select_model(400, True, POLICY, lstm_validation_mase=1.02)
    assert sel.model == "arima" and "1.020" in str(sel.reason)
    assert select_model(400, True, POLICY, lstm_validation_mase=0.8).model == "lstm"


def test_lstm_must_beat_naive_by_more_than_noise_where_the_t_is_known() -> None:
    noisy = select_model(400, True, POLICY, lstm_validation_mase=0.95, lstm_validation_t=0.3)
    assert noisy.model == "arima" and "no more than noise" in str(noisy.reason)
    assert select_model(400, True, POLICY, 0.95, lstm_validation_t=1.2).model == "lstm"
    assert select_model(400, True, POLICY, 0.95, lstm_validation_t=None).model == "lstm"
    # serving reads the champion's recorded t
    y = ar_prices(200, seed=3)
    champion = LoadedModel(LSTMForecaster(FAST_LSTM, epochs=1).fit(y), "lstm:*:1d:v1", 0.95, 0.2)
    assert serve_forecast(y, 1, 200, champion, POLICY).model == "arima"


def test_promotion_needs_the_advantage_beyond_noise_when_given() -> None:
    assert decide_promotion(0.95, None).promote
    assert decide_promotion(0.95, None, advantage_t=0.8).promote
    noisy = decide_promotion(0.95, None, advantage_t=0.4)
    assert not noisy.promote and "t 0.40, needs > 0.5" in noisy.reason
    assert not decide_promotion(0.99, None, advantage_t=3.0).promote  # the MASE margin stays
    assert not decide_promotion(0.95, 0.94, advantage_t=3.0).promote  # and the champion rule


def test_promoted_lstm_is_served_and_long_horizon_falls_back() -> None:
    y = ar_prices(400, seed=2)
    lstm = LoadedModel(LSTMForecaster(FAST_LSTM, epochs=2).fit(y), "lstm:*:1d:v1", 0.9)
    served = serve_forecast(y, 3, 400, lstm, POLICY)
    assert (served.model, served.model_version, served.fallback_reason) == (
        "lstm",
        "lstm:*:1d:v1",
        None,
    )
    far = serve_forecast(y, FAST_LSTM.max_horizon + 1, 400, lstm, POLICY)
    assert far.model == "arima" and "lstm unavailable" in str(far.fallback_reason)
    assert np.isfinite(far.mean).all()


def test_score_records_the_advantage_t_per_series() -> None:
    trend = 100 * np.exp(
        np.cumsum(np.full(200, 0.01) + np.random.default_rng(1).normal(0, 1e-3, 200))
    )
    flat = ar_prices(200, seed=5)
    drift = DriftForecaster().fit(trend[:150])
    scored = score(drift, {"trend": trend, "flat": flat}, {"trend": 40, "flat": 40}, 1)
    t_trend, t_flat = scored.advantage["trend"], scored.advantage["flat"]
    assert t_trend is not None and t_trend > 3  # the drift beats naive on a steady trend
    assert scored.advantage_t == min(t for t in (t_trend, t_flat) if t is not None)
    assert score(NaiveForecaster().fit(flat), {"f": flat}, {"f": 40}, 1).advantage_t is None
