from __future__ import annotations

import numpy as np
import pytest
from ml_synthetic import random_walk

from ml.evaluation import (
    WalkForward,
    advantage_t,
    compute_metrics,
    holdout_metrics,
    holdout_walk,
    predictor_of,
    target_indices,
    walk_forward,
)
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


def _walk(actual: np.ndarray, mean: np.ndarray, naive: np.ndarray) -> WalkForward:
    idx = np.arange(actual.size)
    return WalkForward(idx, actual, naive, mean, mean - 1.0, mean + 1.0)


def test_advantage_t_is_the_paired_t_with_newey_west_lags() -> None:
    rng = np.random.default_rng(0)
    actual = 100 + rng.normal(size=200)
    naive = actual + rng.normal(0, 1.0, 200)
    better = actual + rng.normal(0, 0.5, 200)
    d = np.abs(naive - actual) - np.abs(better - actual)
    one_step = advantage_t(_walk(actual, better, naive), horizon=1)
    assert one_step == pytest.approx(d.mean() / (d.std() / np.sqrt(d.size)))
    assert one_step is not None and one_step > 3  # clearly better than naive
    worse = advantage_t(_walk(actual, actual + rng.normal(0, 2.0, 200), naive), 1)
    assert worse is not None and worse < -3
    # positively correlated differences (overlapping targets) widen the variance
    lagged = advantage_t(_walk(actual, better, naive), horizon=5)
    e = d - d.mean()
    var = e @ e / d.size + sum(2 * (1 - k / 5) * (e[k:] @ e[:-k]) / d.size for k in range(1, 5))
    assert lagged == pytest.approx(d.mean() / np.sqrt(var / d.size))
    # naive against itself has no advantage to test; too few targets neither
    assert advantage_t(_walk(actual, naive, naive), 1) is None
    assert advantage_t(_walk(actual[:2], better[:2], naive[:2]), 1) is None


def test_holdout_walk_matches_holdout_metrics() -> None:
    y = random_walk(200, seed=4)
    model = NaiveForecaster().fit(y[:150])
    wf = holdout_walk(model, y, horizon=2, test_size=40)
    assert wf.metrics() == holdout_metrics(model, y, horizon=2, test_size=40)
    assert wf.targets.size == 40
