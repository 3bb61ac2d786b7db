"""ml.served_walk: the band replay answers what the served walk-forward served, band for band,
over the walk's own point forecasts (origins without a forecast included)."""

from __future__ import annotations

import numpy as np
import pytest

from ml.selection import SelectionPolicy
from ml.served_walk import replay_bands, served_walk_forward


@pytest.mark.parametrize("horizon", [1, 3])
def test_replay_gives_the_served_bands_and_state(horizon: int) -> None:
    rng = np.random.default_rng(horizon)
    returns = np.r_[rng.normal(0, 0.005, 200), rng.normal(0, 0.012, 60)]
    y = 100 * np.exp(np.cumsum(returns))
    # the first origins lack the ARIMA minimum of days: no forecast there, as served
    days = np.full(y.size, 60)
    days[y.size - 60 : y.size - 52] = 5
    run = served_walk_forward(
        y, days, horizon=horizon, test_size=60, policy=SelectionPolicy(), refit_every=20
    )
    assert run.choices["insufficient_history"] > 0
    assert np.isnan(run.walk.mean).sum() == run.choices["insufficient_history"]

    bands, state = replay_bands(y, run.walk.targets, horizon, run.walk.mean)

    assert bands.keys() == run.walk.bands.keys()
    for level, (lower, upper) in run.walk.bands.items():
        np.testing.assert_array_equal(bands[level][0], lower)
        np.testing.assert_array_equal(bands[level][1], upper)
    assert state.alpha == run.state.alpha
    assert state.count == run.state.count
