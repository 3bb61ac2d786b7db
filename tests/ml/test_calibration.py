"""ml.calibration: GARCH-like volatility, signed conformal quantiles per horizon, the adaptive
conformal step, the interval score and its hindsight bound; and recovery after a volatility
shift through ml.served_walk."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
from ml_synthetic import busy_hour_prices, busy_hours

from ml.calibration import (
    ACI_GAMMA_SCALE,
    ALPHA_BOUNDS,
    AciState,
    VolatilityCalibrator,
    _following,
    aci_step,
    calibrated_bands,
    check_levels,
    garch_volatility,
    hindsight_interval_score,
    hour_phases,
    interval_score,
    intraday_profile,
)
from ml.selection import SelectionPolicy
from ml.served_walk import replay_bands, served_walk_forward


def test_garch_volatility_follows_a_regime() -> None:
    rng = np.random.default_rng(0)
    r = np.r_[rng.normal(0, 0.01, 500), rng.normal(0, 0.03, 200)]
    sigma = garch_volatility(r)
    assert sigma.shape == r.shape
    assert 0.007 < float(np.median(sigma[300:500])) < 0.013
    assert 0.022 < float(np.median(sigma[600:])) < 0.038


def test_conformal_quantile_of_gaussian_scores_and_growth_with_horizon() -> None:
    rng = np.random.default_rng(1)
    y = 100 * np.exp(np.cumsum(rng.normal(0, 0.01, 3000)))
    cal = VolatilityCalibrator.from_prices(y, 5)
    # scores are h-step move / sigma: about N(0, h), the band about +-1.2816 sqrt(h) at 80%
    lo, hi = cal.quantiles(1, 0.8)
    assert hi == pytest.approx(1.2816, rel=0.1) and -lo == pytest.approx(1.2816, rel=0.1)
    assert cal.quantiles(5, 0.8)[1] == pytest.approx(1.2816 * math.sqrt(5), rel=0.15)
    highs = [cal.quantiles(1, lv)[1] for lv in (0.5, 0.8, 0.95, 0.999)]
    assert highs == sorted(highs)
    # at level 0 both ends are next to the median score: a (near) empty band
    q0 = cal.quantiles(1, 0.0)
    assert 0.0 <= q0[1] - q0[0] < 0.02


def test_signed_scores_lean_the_band_with_the_drift() -> None:
    rng = np.random.default_rng(4)
    y = 100 * np.exp(np.cumsum(rng.normal(0.004, 0.01, 1500)))  # drifts up 0.4 sigma a bar
    down, up = VolatilityCalibrator.from_prices(y, 1).bounds(1, 0.8)
    assert up > 1.3 * down > 0


def test_short_history_uses_the_gaussian_quantile() -> None:
    cal = VolatilityCalibrator.from_prices(np.array([100.0, 101.0, 100.5, 100.7]), 2)
    assert cal.quantiles(2, 0.8)[1] == pytest.approx(math.sqrt(2) * 1.2816, rel=1e-3)


def test_bands_are_nested_and_around_the_mean() -> None:
    rng = np.random.default_rng(2)
    y = 100 * np.exp(np.cumsum(rng.normal(0, 0.01, 400)))
    mean = np.full(3, y[-1] * 1.001)
    bands = calibrated_bands(y, mean, [0.95, 0.5, 0.8])
    assert [b.level for b in bands] == [0.5, 0.8, 0.95]
    for inner, outer in itertools.pairwise(bands):
        assert np.all(outer.lower < inner.lower) and np.all(inner.upper < outer.upper)
    assert np.all(bands[0].lower < mean) and np.all(mean < bands[0].upper)
    # an adaptive level below nominal narrows just that band
    narrow = calibrated_bands(y, mean, [0.8], {(1, 0.8): 0.6})
    assert narrow[0].upper[0] - narrow[0].lower[0] < bands[1].upper[0] - bands[1].lower[0]
    assert narrow[0].upper[1] == bands[1].upper[1]


def test_hour_phases_and_the_intraday_profile() -> None:
    assert hour_phases(np.array([0, 3599, 3600, 86400 + 7 * 3600])).tolist() == [0, 0, 1, 7]
    hours = np.arange(2400) % 24
    y = busy_hour_prices(hours, seed=5)
    profile = intraday_profile(np.diff(np.log(y)), hours[1:])
    assert profile.mean() == pytest.approx(1.0)
    # 9x the variance, a little less after shrinking 100 returns an hour towards the mean
    assert 6.0 < profile[8:16].mean() / np.r_[profile[:8], profile[16:]].mean() < 10.0
    flat = intraday_profile(np.zeros(48), np.arange(48) % 24)
    assert np.all(flat == 1.0)


def test_the_hours_ahead_follow_the_history_s_own_calendar() -> None:
    # a stock's hourly bars: 14:00-20:00 UTC, each day; after 20:00 comes 14:00
    phases = np.tile(np.arange(14, 21), 5)
    assert _following(phases, 9).tolist() == [14, 15, 16, 17, 18, 19, 20, 14, 15]
    assert _following(np.array([3, 4]), 3).tolist() == [5, 6, 7]  # never seen: the next hour


def test_intraday_bands_keep_their_level_in_busy_and_quiet_hours() -> None:
    """Without the profile the 80% band is one width for every hour: busy hours undercover and
    quiet ones overcover; with it both are near 80% and the interval score is lower."""
    hours = np.arange(1800) % 24
    y, busy = busy_hour_prices(hours, seed=6), busy_hours(hours)
    targets = np.arange(1200, 1800)
    actual, means = y[targets], y[targets - 1]  # the random walk's own forecast
    results = {}
    for name, phases in (("flat", None), ("intraday", hours)):
        bands, _ = replay_bands(y, targets, 1, means, (0.8,), phases=phases)
        lower, upper = bands[0.8]
        hit = (lower <= actual) & (actual <= upper)
        results[name] = (
            hit[busy[targets]].mean(),
            hit[~busy[targets]].mean(),
            interval_score(lower, upper, actual, 0.8).mean(),
        )
    busy_flat, quiet_flat, score_flat = results["flat"]
    busy_day, quiet_day, score_day = results["intraday"]
    assert busy_flat < 0.7 and quiet_flat > 0.9
    assert abs(busy_day - 0.8) < 0.07 and abs(quiet_day - 0.8) < 0.07
    assert score_day < 0.9 * score_flat


def test_phases_must_match_the_prices() -> None:
    with pytest.raises(ValueError, match="phases"):
        VolatilityCalibrator.from_prices(np.array([100.0, 101.0, 102.0]), 1, np.array([0, 1]))


def test_aci_step_is_the_gibbs_candes_update_and_bounded() -> None:
    gamma = ACI_GAMMA_SCALE * 0.2
    assert aci_step(0.2, 0.8, covered=True) == pytest.approx(0.2 + gamma * 0.2)
    assert aci_step(0.2, 0.8, covered=False) == pytest.approx(0.2 - gamma * 0.8)
    alpha = 0.2
    for _ in range(10_000):
        alpha = aci_step(alpha, 0.8, covered=False)
    assert alpha == ALPHA_BOUNDS[0]
    state = AciState()
    assert state.effective_level(3, 0.95) == pytest.approx(0.95)
    state.update(3, 0.95, covered=False)
    assert state.effective_level(3, 0.95) > 0.95 and state.count[(3, 0.95)] == 1


def test_aci_drives_the_miss_rate_to_nominal_whatever_the_base_width() -> None:
    """A band of fixed, badly chosen width: ACI's level still reaches ~80% coverage."""
    rng = np.random.default_rng(3)
    state = AciState()
    hits = []
    for _ in range(3000):
        level = min(max(state.effective_level(1, 0.8), 0.0), 0.999)
        half = 0.5 * abs(np.quantile(rng.normal(size=200), 0.5 + level / 2))  # too narrow
        y = rng.normal()
        covered = abs(y) <= half * 2.0
        state.update(1, 0.8, covered)
        hits.append(covered)
    assert abs(np.mean(hits[500:]) - 0.8) < 0.03


def test_interval_score_matches_the_definition() -> None:
    lo, hi = np.array([90.0, 90.0, 90.0]), np.array([110.0, 110.0, 110.0])
    y = np.array([100.0, 85.0, 120.0])
    got = interval_score(lo, hi, y, 0.8)
    np.testing.assert_allclose(got, [20.0, 20.0 + 10 * 5, 20.0 + 10 * 10])


def test_check_levels() -> None:
    assert check_levels([0.95, 0.5, 0.8, 0.8]) == (0.5, 0.8, 0.95)
    for bad in ([], [0.0], [1.0], [1.5]):
        with pytest.raises(ValueError):
            check_levels(bad)


@pytest.mark.parametrize("seed", [0, 1])
def test_coverage_recovers_after_the_volatility_doubles(seed: int) -> None:
    """Served walk-forward (the backtest's): 80% coverage undercovers right after the shift;
    from the 50th scored forecast after it on, it is within 5 points of 80%."""
    rng = np.random.default_rng(seed)
    calm, live_calm, wild = 500, 100, 200
    r = np.r_[rng.normal(0, 0.004, calm + live_calm), rng.normal(0, 0.008, wild)]
    y = 100 * np.exp(np.cumsum(r))
    run = served_walk_forward(
        y, np.full(y.size, 60), horizon=1, test_size=live_calm + wild, policy=SelectionPolicy()
    )
    lo, hi = run.walk.bands[0.8]
    hit = ((lo <= run.walk.actual) & (run.walk.actual <= hi)).astype(float)
    assert hit[live_calm : live_calm + 30].mean() < 0.78  # the shift is felt
    assert abs(hit[live_calm + 50 :].mean() - 0.8) <= 0.05
    # the service scores a target after forecasting from it: the last two are not yet fed
    assert run.state.count[(1, 0.8)] == live_calm + wild - 2


def _brute_force(
    log_mean: np.ndarray, scale: np.ndarray, actual: np.ndarray, level: float
) -> float:
    """Every pair of per-side multipliers among the targets' own scores, scored whole."""
    z = (np.log(actual) - log_mean) / scale
    return min(
        float(
            np.mean(
                interval_score(
                    np.exp(log_mean + q_lo * scale), np.exp(log_mean + q_hi * scale), actual, level
                )
            )
        )
        for q_lo in z
        for q_hi in z
    )


def test_hindsight_score_is_the_best_pair_of_constant_multipliers() -> None:
    rng = np.random.default_rng(3)
    log_mean = np.log(100.0) + rng.normal(0.0, 0.01, 40)
    scale = rng.uniform(0.005, 0.03, 40)
    actual = np.exp(log_mean + scale * rng.standard_t(4, 40))
    for level in (0.5, 0.8, 0.95):
        assert np.isclose(
            hindsight_interval_score(log_mean, scale, actual, level),
            _brute_force(log_mean, scale, actual, level),
        )


def test_hindsight_score_is_below_any_fixed_band() -> None:
    rng = np.random.default_rng(4)
    log_mean = np.full(60, np.log(50.0))
    scale = np.full(60, 0.02)
    actual = np.exp(log_mean + scale * rng.normal(size=60))
    best = hindsight_interval_score(log_mean, scale, actual, 0.8)
    for q in (0.5, 1.0, 1.2816, 2.0):
        served = interval_score(
            np.exp(log_mean - q * scale), np.exp(log_mean + q * scale), actual, 0.8
        )
        assert best <= float(np.mean(served))
