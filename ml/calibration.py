"""Prediction intervals that keep their level: volatility-scaled conformal bands plus an
online adaptive-conformal correction (the same code in the service and the backtest).

1. **Volatility scaling.** ``sigma[t]`` is a variance-targeting GARCH(1,1) filter of the
   log returns up to and including ``t``:
   ``var[t] = w * long[t] + a * r[t]**2 + b * var[t-1]`` (``w, a, b`` = 0.06, 0.07, 0.87),
   ``long[t]`` the expanding mean of squared returns. Shocks raise it at once, and it
   reverts to the long-run level (half-life about 5 bars) instead of forgetting it like an
   EWMA. The score of origin ``s`` at horizon ``h`` is the *signed* ``h``-step log return
   after ``s`` divided by ``sigma[s]``: how many "current volatilities" the price moved.
   Scores of calm and wild periods are comparable, so their quantiles transfer to today.
   **Intraday bars** (``phases``: the hour of day of each bar) first divide every return by
   the volatility of its hour of day (the mean square of the history's returns of that hour
   over all hours, shrunk towards 1 by :data:`SEASON_SHRINK` returns' worth of the overall
   mean; Andersen and Bollerslev 1997): an hourly FX series moves several times more in the
   London-New York overlap than at night, which no filter of the bare returns can follow. The
   filter then runs on the de-seasoned returns, and the scale of the ``h`` bars after an
   origin is the filter's times the root mean hourly factor of those bars (in the history:
   the bars that came; after the newest bar: each hour's latest successor, so trading hours
   and weekends are followed).
2. **Conformal quantiles per horizon, per side.** The band of level ``L`` at horizon ``h``
   is the model's mean (log price) plus the split-conformal quantiles of the scores of
   horizon ``h`` at ``(1 - L) / 2`` (lower) and ``(1 + L) / 2`` (upper), times
   ``sigma[now]``. Signed scores keep the model's bias and the skew of the moves (a stock
   that drifts up gets a band that leans up) without touching the point forecast.
3. **Adaptive conformal inference** (Gibbs and Candes 2021). One ``alpha`` per
   (symbol, interval, horizon, level): the band is built at level ``1 - alpha`` and, once
   its target is known, ``alpha += gamma * ((1 - L) - miss)`` with ``gamma`` proportional
   to ``1 - L``. Misses make the next bands
   wider, hits narrower, so the long-run miss rate goes to ``1 - L`` whatever the data do.
   The update is constant time per scored forecast; the service keeps the state in the
   database (``forecast_calibration``), the backtest in memory.

The point forecast is the model's; only the band comes from here, so every model path
(ARIMA, LSTM, naive) gets the same calibrated intervals.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from statistics import NormalDist

import numpy as np
from scipy.signal import lfilter

DEFAULT_LEVELS: tuple[float, ...] = (0.5, 0.8, 0.95)
# GARCH(1,1) with variance targeting: the weights of the long-run variance, of the newest
# squared return and of the previous variance (they sum to 1). The long-run weight 0.06
# (memory 0.90 -> 0.87: a past shock weighs half after about 5 bars, was 7) and the ACI step
# 0.12 were chosen together on the six series of bench/forecast_quality.py
# (docs/forecasting.md): the faster reversion leaves the adaptive correction less to do, so
# it can move in smaller steps.
GARCH_LONG, GARCH_SHOCK = 0.06, 0.07
GARCH_MEMORY = 1.0 - GARCH_LONG - GARCH_SHOCK
# ACI step per level: gamma(L) = ACI_GAMMA_SCALE * (1 - L), so 0.024 at 80%. A step that is
# the same share of every level's miss rate keeps the 95% band as steady as the 50% one
# (measured on six real series: a fixed 0.05 met the coverage but widened the 95% bands).
ACI_GAMMA_SCALE = 0.12
MAX_SCORES = 1000  # newest origins used per horizon
DAY_PHASES = 24  # intraday bars: the hour of day (UTC) of the bar's start
SEASON_SHRINK = 5.0  # an hour seen n times weighs n / (n + 5) against the overall mean
MIN_SCORES = 20  # fewer: the Gaussian quantile stands in
ALPHA_BOUNDS = (-0.2, 1.0)  # the ACI state is kept bounded: recovery after a shift is quick

Key = tuple[int, float]  # (horizon, level)


def check_levels(levels: Iterable[float]) -> tuple[float, ...]:
    """Sorted distinct levels, each in (0, 1)."""
    out = tuple(sorted({round(float(level), 6) for level in levels}))
    if not out:
        raise ValueError("at least one interval level is needed")
    for level in out:
        if not 0.0 < level < 1.0:
            raise ValueError(f"interval level must be in (0, 1), got {level}")
    return out


def garch_volatility(log_returns: np.ndarray) -> np.ndarray:
    """``sigma[t]`` from returns ``r[0..t]``: the variance-targeting GARCH(1,1) filter of
    the module docstring (seeded with the mean square of the first 20), one linear pass."""
    returns = np.asarray(log_returns, dtype=np.float64)
    if returns.size == 0:
        return returns
    sq = returns**2
    long_var = np.cumsum(sq) / np.arange(1, returns.size + 1)
    seed = float(np.mean(sq[:20]))
    var, _ = lfilter(
        [1.0],
        [1.0, -GARCH_MEMORY],
        GARCH_LONG * long_var + GARCH_SHOCK * sq,
        zi=np.array([GARCH_MEMORY * seed]),
    )
    floor = max(float(np.mean(sq)) * 1e-4, 1e-16)
    return np.sqrt(np.maximum(var, floor))


def hour_phases(bucket_seconds: np.ndarray) -> np.ndarray:
    """The hour of day (UTC, 0-23) of bars that start at ``bucket_seconds`` (Unix seconds)."""
    return (np.asarray(bucket_seconds, dtype=np.int64) // 3600) % DAY_PHASES


def bar_phases(interval: str, bucket_seconds: np.ndarray) -> np.ndarray | None:
    """The phases the bands of ``interval`` bars are built with: the hour of day for intraday
    bars, none for daily ones (the one rule the service, the backtest and the benchmarks use)."""
    return None if interval == "1d" else hour_phases(bucket_seconds)


def intraday_profile(returns: np.ndarray, phases: np.ndarray) -> np.ndarray:
    """The variance factor of each phase (mean 1): the mean square of its returns over the
    overall one, shrunk towards 1 (``phases[i]`` is the phase of the bar ``returns[i]`` ends)."""
    sq = np.asarray(returns, dtype=np.float64) ** 2
    overall = float(np.mean(sq))
    if overall <= 0.0:
        return np.ones(DAY_PHASES)
    sums = np.bincount(phases, weights=sq, minlength=DAY_PHASES)
    counts = np.bincount(phases, minlength=DAY_PHASES)
    profile = (sums + SEASON_SHRINK * overall) / (counts + SEASON_SHRINK) / overall
    return profile / float(np.mean(profile))


def _following(phases: np.ndarray, steps: int) -> np.ndarray:
    """The phases of the ``steps`` bars after the newest: each phase's latest successor in the
    history (the next hour where none was seen)."""
    successor = (np.arange(DAY_PHASES) + 1) % DAY_PHASES
    latest = np.full(DAY_PHASES, -1)
    np.maximum.at(latest, phases[:-1], np.arange(phases.size - 1))
    seen = latest >= 0
    successor[seen] = phases[1:][latest[seen]]
    out = np.empty(steps, dtype=np.int64)
    phase = int(phases[-1])
    for step in range(steps):
        phase = int(successor[phase])
        out[step] = phase
    return out


def _z(level: float) -> float:
    return NormalDist().inv_cdf(0.5 + level / 2.0)


@dataclass(frozen=True)
class VolatilityCalibrator:
    """Signed scores of one price history; :meth:`bounds` answers bands for any level."""

    sigma: tuple[float, ...]  # per horizon 1..max_h: the scale of the band after the newest bar
    scores: tuple[np.ndarray, ...]  # per horizon 1..max_h, sorted ascending

    @classmethod
    def from_prices(
        cls, y: np.ndarray, max_horizon: int, phases: np.ndarray | None = None
    ) -> VolatilityCalibrator:
        """``phases``: the hour of day of every bar of ``y`` (intraday bars), or None."""
        logy = np.log(np.asarray(y, dtype=np.float64))
        returns = np.diff(logy)
        if returns.size == 0:
            return cls((0.0,) * max_horizon, tuple(np.zeros(0) for _ in range(max_horizon)))
        if phases is None:
            sigma = garch_volatility(returns)
            cum = ahead = None
        else:
            phase = np.asarray(phases, dtype=np.int64)
            if phase.shape != logy.shape:
                raise ValueError(f"{phase.size} phases for {logy.size} prices")
            factor = intraday_profile(returns, phase[1:])
            bar_factor = factor[phase]  # bar i's; return i ends at bar i + 1
            sigma = garch_volatility(returns / np.sqrt(bar_factor[1:]))
            cum = np.concatenate(([0.0], np.cumsum(bar_factor)))
            ahead = np.cumsum(factor[_following(phase, max_horizon)])
        # origin s (a price index >= 1) knows returns[: s], so sigma[s - 1]; its
        # horizon-step move is logy[s + horizon] - logy[s]
        scales, scores = [], []
        for horizon in range(1, max_horizon + 1):
            now = float(sigma[-1])
            if ahead is not None:
                now *= math.sqrt(ahead[horizon - 1] / horizon)
            scales.append(now)
            last_origin = logy.size - 1 - horizon  # origins 1..last_origin
            if last_origin < MIN_SCORES:
                scores.append(np.zeros(0))
                continue
            first_origin = max(1, last_origin + 1 - MAX_SCORES)
            move = (
                logy[first_origin + horizon : last_origin + 1 + horizon]
                - logy[first_origin : last_origin + 1]
            )
            scale = sigma[first_origin - 1 : last_origin]
            if cum is not None:  # the mean factor of bars s + 1 .. s + horizon
                bars = cum[first_origin + 1 + horizon : last_origin + 2 + horizon]
                scale = scale * np.sqrt((bars - cum[first_origin + 1 : last_origin + 2]) / horizon)
            scores.append(np.sort(move / scale))
        return cls(tuple(scales), tuple(scores))

    def quantiles(self, horizon: int, level: float) -> tuple[float, float]:
        """Conformal quantiles (lower at ``(1 - level) / 2``, upper at ``(1 + level) / 2``)
        of the signed scores of ``horizon``; beyond the data, the extreme scores."""
        scores = self.scores[horizon - 1] if horizon - 1 < len(self.scores) else np.zeros(0)
        n = scores.size
        if n < MIN_SCORES:
            q = math.sqrt(horizon) * _z(min(max(level, 0.0), 0.999))
            return -q, q
        tail = (1.0 - level) / 2.0
        k_lo = min(max(math.floor((n + 1) * tail), 1), n)
        k_hi = min(max(math.ceil((n + 1) * (1.0 - tail)), 1), n)
        return float(scores[k_lo - 1]), float(scores[k_hi - 1])

    def bounds(self, horizon: int, level: float) -> tuple[float, float]:
        """Distances in log price below and above the mean of the band of ``level`` at
        ``horizon`` (neither negative: the mean stays inside)."""
        q_lo, q_hi = self.quantiles(horizon, level)
        sigma = self.sigma[min(horizon, len(self.sigma)) - 1]
        return max(-q_lo, 0.0) * sigma, max(q_hi, 0.0) * sigma


@dataclass
class AciState:
    """``alpha`` per (horizon, level); missing keys start at ``1 - level``."""

    gamma_scale: float = ACI_GAMMA_SCALE
    alpha: dict[Key, float] = field(default_factory=dict)
    count: dict[Key, int] = field(default_factory=dict)

    def effective_level(self, horizon: int, level: float) -> float:
        return 1.0 - self.alpha.get((horizon, level), 1.0 - level)

    def update(self, horizon: int, level: float, covered: bool) -> float:
        """One scored forecast of ``level`` at ``horizon``: the ACI step, O(1)."""
        key = (horizon, level)
        new = aci_step(self.alpha.get(key, 1.0 - level), level, covered, self.gamma_scale)
        self.alpha[key] = new
        self.count[key] = self.count.get(key, 0) + 1
        return new


def aci_step(
    alpha: float, level: float, covered: bool, gamma_scale: float = ACI_GAMMA_SCALE
) -> float:
    """``alpha + gamma * ((1 - level) - miss)``, ``gamma = gamma_scale * (1 - level)``,
    kept within :data:`ALPHA_BOUNDS`."""
    miss = 0.0 if covered else 1.0
    new = alpha + gamma_scale * (1.0 - level) * ((1.0 - level) - miss)
    return min(max(new, ALPHA_BOUNDS[0]), ALPHA_BOUNDS[1])


@dataclass(frozen=True)
class Band:
    """A central interval of ``level`` at every step 1..h, in prices."""

    level: float
    lower: np.ndarray
    upper: np.ndarray


def calibrated_bands(
    y: np.ndarray,
    mean: np.ndarray,
    levels: Sequence[float],
    effective: Mapping[Key, float] | None = None,
    phases: np.ndarray | None = None,
) -> tuple[Band, ...]:
    """Bands of every level around the point forecast ``mean`` (prices, steps 1..h) after
    history ``y``; ``effective`` maps (horizon, level) to the ACI level to build it at;
    ``phases``: the hour of day of every bar of ``y`` for intraday bars."""
    steps = int(np.asarray(mean).shape[0])
    cal = VolatilityCalibrator.from_prices(y, steps, phases)
    log_mean = np.log(np.asarray(mean, dtype=np.float64))
    out = []
    for level in check_levels(levels):
        down, up = np.array(
            [
                cal.bounds(horizon, (effective or {}).get((horizon, level), level))
                for horizon in range(1, steps + 1)
            ]
        ).T
        out.append(Band(level, np.exp(log_mean - down), np.exp(log_mean + up)))
    return tuple(out)


def interval_score(
    lower: np.ndarray, upper: np.ndarray, actual: np.ndarray, level: float
) -> np.ndarray:
    """Gneiting-Raftery interval (Winkler) score per target; lower is better."""
    alpha = 1.0 - level
    lo, hi, y = (np.asarray(values, dtype=np.float64) for values in (lower, upper, actual))
    return (hi - lo) + (2.0 / alpha) * (lo - y) * (y < lo) + (2.0 / alpha) * (y - hi) * (y > hi)


def hindsight_interval_score(
    log_mean: np.ndarray, scale: np.ndarray, actual: np.ndarray, level: float
) -> float:
    """The lowest mean interval score of bands ``exp(log_mean + q * scale)`` with one ``q``
    per side for all targets, chosen knowing them: a bound no band built before its target
    reaches but by luck (``bench/_calibration_replay.py --oracle``). ``q`` is searched over
    the targets' own scores, the kinks of the score as a function of ``q``."""
    candidates = np.sort((np.log(actual) - log_mean) / scale)[:, None]
    bounds = np.exp(log_mean + candidates * scale)  # one row per candidate q
    centre = np.exp(log_mean)
    total = 0.0
    for sign in (-1.0, 1.0):  # the sides are independent: each takes its own best q
        # one side's share of the interval score: its distance from the mean plus its penalty
        miss = np.maximum(sign * (actual - bounds), 0.0)
        part = sign * (bounds - centre) + 2.0 / (1.0 - level) * miss
        total += float(part.mean(axis=1).min())
    return total
