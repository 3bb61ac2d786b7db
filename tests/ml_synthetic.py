"""Synthetic price series for the ML tests (deterministic by seed)."""

from __future__ import annotations

import numpy as np

from ml.lstm import LSTMConfig

# Small, fast LSTM for tests (a few seconds per fit on one core).
FAST_LSTM = LSTMConfig(window=24, hidden=24, max_horizon=8, epochs=15, patience=3)


def ar_prices(n: int, seed: int, phi: float = 0.6, sigma: float = 0.01) -> np.ndarray:
    """Prices whose log returns follow an AR(1): predictable, so models should beat naive."""
    rng = np.random.default_rng(seed)
    e = rng.normal(0.0, sigma, n)
    r = np.zeros(n)
    for t in range(1, n):
        r[t] = phi * r[t - 1] + e[t]
    return 100.0 * np.exp(np.cumsum(r))


def random_walk(n: int, seed: int, sigma: float = 0.02) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return 100.0 * np.exp(np.cumsum(rng.normal(0.0, sigma, n)))


def busy_hours(hours: np.ndarray) -> np.ndarray:
    """Which of ``hours`` (hours of day, UTC) are the busy ones of :func:`busy_hour_prices`."""
    hours = np.asarray(hours)
    return (hours >= 8) & (hours < 16)


def busy_hour_prices(hours: np.ndarray, seed: int) -> np.ndarray:
    """Hourly prices (``hours``: each bar's hour of day) whose returns into hours 8-15 UTC move
    3x more than the rest: a daily volatility pattern, as FX has."""
    sd = np.where(busy_hours(hours), 0.006, 0.002)
    return 100.0 * np.exp(np.cumsum(np.random.default_rng(seed).normal(0, 1, len(sd)) * sd))
