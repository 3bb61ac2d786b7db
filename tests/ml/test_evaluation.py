from __future__ import annotations

import numpy as np
import pytest
from ml_synthetic import random_walk

from ml.evaluation import compute_metrics, predictor_of, target_indices, walk_forward
from ml.naive import NaiveForecaster


def test_metrics_on_known_values() -> None:
    actual = np.array([100.0, 110.0])
    m = compute_metrics(
        actual,
        mean=np.array([101.0, 108.0]),
        lower=np.array([99.0, 111.0]),
        upper=np.array([102.0, 112.0]),
        naive=np.array([98.0, 106.0]),
    )
    assert m.mae == pytest.approx(1.5)
    assert m.mape == pytest.approx((1 / 100 + 2 / 110) / 2 * 100, rel=1e-5)
    assert m.mase == pytest.approx(1.5 / 3.0)
    assert m.coverage == pytest.approx(0.5)
    assert m.count == 2


def test_naive_scores_mase_one_and_no_lookahead() -> None:
    y = random_walk(300, seed=1)
    wf = walk_forward(
        y,
        lambda h: predictor_of(NaiveForecaster().fit(h)),
        horizon=3,
        test_size=100,
        refit_every=10,
    )
    assert wf.metrics().mase == pytest.approx(1.0)
    np.testing.assert_allclose(wf.mean, y[wf.targets - 3])  # forecast from data before
    assert list(target_indices(300, 100, 3, 2)) == list(range(200, 300))
