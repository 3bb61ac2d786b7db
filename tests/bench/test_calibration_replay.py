"""The replay tool's after-the-fact bound (pure unit tests)."""

from __future__ import annotations

import numpy as np

from bench._calibration_replay import oracle_score
from ml.calibration import interval_score


def brute_force(log_mean: np.ndarray, scale: np.ndarray, actual: np.ndarray, level: float) -> float:
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


def test_oracle_is_the_best_pair_of_constant_multipliers() -> None:
    rng = np.random.default_rng(3)
    log_mean = np.log(100.0) + rng.normal(0.0, 0.01, 40)
    scale = rng.uniform(0.005, 0.03, 40)
    actual = np.exp(log_mean + scale * rng.standard_t(4, 40))
    for level in (0.5, 0.8, 0.95):
        assert np.isclose(
            oracle_score(log_mean, scale, actual, level),
            brute_force(log_mean, scale, actual, level),
        )


def test_oracle_is_below_any_fixed_band() -> None:
    rng = np.random.default_rng(4)
    log_mean = np.full(60, np.log(50.0))
    scale = np.full(60, 0.02)
    actual = np.exp(log_mean + scale * rng.normal(size=60))
    best = oracle_score(log_mean, scale, actual, 0.8)
    for q in (0.5, 1.0, 1.2816, 2.0):
        served = interval_score(
            np.exp(log_mean - q * scale), np.exp(log_mean + q * scale), actual, 0.8
        )
        assert best <= float(np.mean(served))
