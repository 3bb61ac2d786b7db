from __future__ import annotations

import numpy as np

from ml.naive import DriftForecaster, NaiveForecaster


def test_naive_repeats_last_price_and_widens_with_sqrt_h() -> None:
    y = np.array([100.0, 101.0, 99.0, 102.0, 103.0])
    fc = NaiveForecaster().fit(y).predict(4)
    np.testing.assert_allclose(fc.mean, 103.0)
    width = np.log(fc.upper / fc.lower)
    np.testing.assert_allclose(width / width[0], np.sqrt([1, 2, 3, 4]))


def test_drift_follows_mean_log_return() -> None:
    y = 100.0 * np.exp(0.01 * np.arange(50))
    fc = DriftForecaster().fit(y).predict(3)
    np.testing.assert_allclose(fc.mean, y[-1] * np.exp(0.01 * np.arange(1, 4)))
