from __future__ import annotations

import numpy as np
import pytest
from _ml_synthetic import FAST_LSTM, ar_prices

from ml.lstm import LSTMForecaster
from ml.promotion import decide_promotion
from ml.selection import InsufficientHistory, SelectionPolicy, noise_margin_mase, select_model
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


def test_validation_at_a_longer_horizon_must_beat_naive_by_a_wider_margin() -> None:
    assert noise_margin_mase(0.98, 1) == pytest.approx(0.98)
    assert noise_margin_mase(0.98, 5) == pytest.approx(1 - 0.02 * 5**0.5)
    assert noise_margin_mase(0.98, 0) == pytest.approx(0.98)
    # 0.97 beats naive by more than noise at h = 1, not on 5-step (overlapping) targets
    assert select_model(400, True, POLICY, 0.97).model == "lstm"
    wide = select_model(400, True, POLICY, 0.97, validation_horizon=5)
    assert wide.model == "arima" and "0.955" in str(wide.reason)
    assert select_model(400, True, POLICY, 0.95, validation_horizon=5).model == "lstm"
    # serving reads the horizon the champion was validated at
    y = ar_prices(200, seed=3)
    champion = LoadedModel(LSTMForecaster(FAST_LSTM, epochs=1).fit(y), "lstm:*:1d:v1", 0.97, 5)
    assert serve_forecast(y, 1, 200, champion, POLICY).model == "arima"


def test_promotion_needs_the_horizon_margin() -> None:
    assert decide_promotion(0.97, None).promote
    late = decide_promotion(0.97, None, horizon=5)
    assert not late.promote and "needs < 0.955" in late.reason
    assert decide_promotion(0.95, None, horizon=5).promote
    assert not decide_promotion(0.95, 0.94, horizon=5).promote


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
