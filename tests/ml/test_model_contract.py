"""Contract tests every forecaster must pass (parametrized over all models)."""

from __future__ import annotations

import numpy as np
import pytest
from ml_synthetic import FAST_LSTM, ar_prices

from ml.arima import ArimaForecaster
from ml.base import Forecaster, GlobalForecaster, NotFittedError
from ml.calibration import DEFAULT_LEVELS
from ml.factory import FORECASTERS, load_forecaster
from ml.lstm import LSTMForecaster
from ml.naive import DriftForecaster, NaiveForecaster
from ml.selection import SelectionPolicy
from ml.serving import Calibration, LoadedModel, serve_forecast


def make(name: str) -> Forecaster:
    if name == "lstm":
        return LSTMForecaster(FAST_LSTM, epochs=4)
    return {"naive": NaiveForecaster, "drift": DriftForecaster, "arima": ArimaForecaster}[name]()


MODELS = sorted(FORECASTERS)
Y = ar_prices(400, seed=7)


@pytest.fixture(scope="module")
def fitted() -> dict[str, Forecaster]:
    return {name: make(name).fit(Y) for name in MODELS}


@pytest.mark.parametrize("name", MODELS)
@pytest.mark.parametrize("h", [1, 5, 8])
def test_shapes_and_monotone_bounds(fitted: dict[str, Forecaster], name: str, h: int) -> None:
    fc = fitted[name].predict(h, level=0.8)
    assert fc.mean.shape == fc.lower.shape == fc.upper.shape == (h,)
    assert np.all(np.isfinite(fc.mean)) and np.all(fc.lower > 0)
    assert np.all(fc.lower <= fc.mean) and np.all(fc.mean <= fc.upper)
    assert np.all(fc.upper - fc.lower > 0)


@pytest.mark.parametrize("name", MODELS)
def test_wider_level_gives_wider_interval(fitted: dict[str, Forecaster], name: str) -> None:
    narrow, wide = fitted[name].predict(3, level=0.5), fitted[name].predict(3, level=0.95)
    assert np.all(wide.upper - wide.lower > narrow.upper - narrow.lower)


@pytest.mark.parametrize("name", MODELS)
def test_deterministic_with_seed(fitted: dict[str, Forecaster], name: str) -> None:
    again = make(name).fit(Y).predict(5)
    first = fitted[name].predict(5)
    np.testing.assert_allclose(again.mean, first.mean, rtol=1e-6)
    np.testing.assert_allclose(again.upper, first.upper, rtol=1e-6)


@pytest.mark.parametrize("name", MODELS)
def test_bytes_round_trip(fitted: dict[str, Forecaster], name: str) -> None:
    model = fitted[name]
    loaded = load_forecaster(name, model.to_bytes())
    np.testing.assert_allclose(loaded.predict(4).mean, model.predict(4).mean, rtol=1e-9)
    hist = Y[:300]
    np.testing.assert_allclose(
        loaded.forward(hist, 4).lower, model.forward(hist, 4).lower, rtol=1e-9
    )


@pytest.mark.parametrize("name", MODELS)
def test_forward_uses_the_given_history(fitted: dict[str, Forecaster], name: str) -> None:
    fc = fitted[name].forward(Y[:200], 1)
    assert abs(fc.mean[0] / Y[199] - 1) < 0.1


@pytest.mark.parametrize("name", MODELS)
def test_rejects_bad_input(name: str) -> None:
    with pytest.raises(NotFittedError):
        make(name).predict(1)
    with pytest.raises(ValueError):
        make(name).fit(np.array([1.0, -2.0, 3.0] * 50))
    with pytest.raises(ValueError):
        load_forecaster(name, b"not an artifact" if name != "lstm" else b"PK-not-a-zip")


LEVELS = [0.5, 0.8, 0.95]


@pytest.mark.parametrize("name", MODELS)
def test_every_model_raises_not_fitted_before_fit(name: str) -> None:
    model = make(name)
    with pytest.raises(NotFittedError):
        model.forward(Y, 2)
    if isinstance(model, GlobalForecaster):
        with pytest.raises(NotFittedError):
            model.forward_many([Y, Y[:300]], 2)


def test_global_models_have_their_own_type() -> None:
    kinds = {name: issubclass(cls, GlobalForecaster) for name, cls in FORECASTERS.items()}
    assert kinds == {"arima": False, "drift": False, "lstm": True, "naive": False}


@pytest.mark.parametrize("name", MODELS)
@pytest.mark.parametrize("level", LEVELS)
def test_model_interval_at_every_level(
    fitted: dict[str, Forecaster], name: str, level: float
) -> None:
    fc = fitted[name].forward(Y[:350], 4, level)
    assert fc.level == level and fc.levels == (level,)
    assert np.all(fc.lower < fc.mean) and np.all(fc.mean < fc.upper)


@pytest.mark.parametrize("path", ["lstm", "arima", "naive"])
def test_served_path_of_every_model_carries_every_level(
    fitted: dict[str, Forecaster], path: str
) -> None:
    """Whatever model serves, the answer has calibrated, nested bands at every level."""
    policy = SelectionPolicy(min_arima_days=1, min_lstm_days=90, max_lstm_mase=10.0)
    champion = LoadedModel(fitted["lstm"], "lstm:test", 0.5) if path == "lstm" else None
    history = Y[:2] if path == "naive" else Y[:350]  # two bars: too few for ARIMA
    served = serve_forecast(history, 5, 400, champion, policy, Calibration.of(LEVELS))
    assert served.model == path
    assert [b.level for b in served.intervals] == LEVELS
    widths = [np.subtract(b.upper, b.lower) for b in served.intervals]
    assert np.all(widths[0] < widths[1]) and np.all(widths[1] < widths[2])
    for b in served.intervals:
        assert np.all(np.asarray(b.lower) <= served.mean)
        assert np.all(np.asarray(served.mean) <= b.upper)
    main = served.intervals[LEVELS.index(0.8)]
    assert served.lower == main.lower and served.upper == main.upper and served.level == 0.8


def test_default_levels_are_the_offered_default() -> None:
    assert DEFAULT_LEVELS == (0.5, 0.8, 0.95)
