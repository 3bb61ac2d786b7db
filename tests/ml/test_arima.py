from __future__ import annotations

import numpy as np
from ml_synthetic import ar_prices, random_walk

from ml.arima import ArimaForecaster
from ml.evaluation import predictor_of, walk_forward


def test_selects_ar_term_on_ar_data_and_random_walk_on_random_walk() -> None:
    ar = ArimaForecaster().fit(ar_prices(400, seed=1))
    assert ar.order is not None and ar.order[0] >= 1
    assert ar.info.fallback_reason is None
    rw = ArimaForecaster().fit(random_walk(400, seed=2))
    assert rw.order == (0, 1, 0)


def test_records_why_it_fell_back_to_a_simpler_order() -> None:
    # Noise only: any AR term AIC picks cannot beat the random walk on validation.
    fits = [ArimaForecaster().fit(random_walk(300, seed=s)) for s in range(12)]
    fallbacks = [f for f in fits if f.info.fallback_reason]
    for f in fallbacks:
        assert f.order == (0, 1, 0)
        assert "did not beat the random walk" in str(f.info.fallback_reason)
    assert all(f.served_model == "arima" for f in fits)


def test_falls_back_to_naive_when_nothing_can_be_estimated() -> None:
    model = ArimaForecaster(orders=((1, 1, 1),)).fit(random_walk(12, seed=3))
    assert model.served_model == "naive"
    assert model.info.fallback_reason is not None
    assert "arima did not converge" in model.info.fallback_reason
    fc = model.predict(3)
    assert np.all(fc.lower <= fc.mean) and np.all(fc.mean <= fc.upper)


def test_interval_coverage_on_ar_data_is_about_80_percent() -> None:
    y = ar_prices(900, seed=11)
    wf = walk_forward(
        y, lambda h: predictor_of(ArimaForecaster().fit(h)), test_size=500, refit_every=50
    )
    m = wf.metrics()
    assert m.count == 500
    assert m.coverage is not None and 0.75 <= m.coverage <= 0.85
    assert m.mase is not None and m.mase < 0.9  # it learns the AR structure
