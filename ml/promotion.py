"""Producing and judging LSTM candidates (used by the retraining job and the backtest).

A candidate is trained on every series minus a held-out tail, then scored walk-forward on
that tail (no refit). It is promoted only when its MASE beats naive by a margin *and* beats
the current champion scored on the same tail; where the caller passes the paired t statistic
of its advantage over naive (``ml.evaluation.advantage_t``, the backtest does), that must
also clear :data:`PROMOTE_MIN_T`: beating naive by more than noise.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np

from ml.base import Forecaster
from ml.evaluation import Metrics, advantage_t, holdout_walk
from ml.lstm import LSTMConfig, LSTMForecaster

PROMOTE_MAX_MASE = 0.98  # must beat naive by 2%: guards against noise on random walks
# ... and by more than noise on the holdout: the HAC t of the paired advantage over naive
# (measured on four series at h = 5, docs/forecasting.md: 0.5 kept the served MASE <= 1.005)
PROMOTE_MIN_T = 0.5


def holdout_size(length: int, max_holdout: int = 60, fraction: float = 0.2) -> int:
    return max(1, min(max_holdout, int(length * fraction)))


@dataclass(frozen=True)
class Scored:
    per_series: dict[str, Metrics]
    advantage: dict[str, float | None] = field(default_factory=dict)  # paired t per series

    @property
    def advantage_t(self) -> float | None:
        """The smallest per-series t of the advantage over naive (None if none defined)."""
        vals = [stat for stat in self.advantage.values() if stat is not None]
        return min(vals) if vals else None

    @property
    def mase(self) -> float | None:
        """Mean of the per-series MASE (series without a defined MASE are left out)."""
        vals = [metrics.mase for metrics in self.per_series.values() if metrics.mase is not None]
        return float(np.mean(vals)) if vals else None

    def to_dict(self) -> dict[str, object]:
        return {
            "mase": self.mase,
            "per_series": {
                key: {**metrics.to_dict(), "advantage_t": self.advantage.get(key)}
                for key, metrics in self.per_series.items()
            },
        }


def score(
    model: Forecaster, series: Mapping[str, np.ndarray], holdouts: Mapping[str, int], horizon: int
) -> Scored:
    walks = {
        key: holdout_walk(model, y, horizon=horizon, test_size=holdouts[key])
        for key, y in series.items()
        if key in holdouts
    }
    return Scored(
        {key: wf.metrics() for key, wf in walks.items()},
        {key: advantage_t(wf, horizon) for key, wf in walks.items()},
    )


def train_candidate(
    series: Mapping[str, np.ndarray],
    *,
    horizon: int = 1,
    config: LSTMConfig | None = None,
    max_holdout: int = 60,
) -> tuple[LSTMForecaster, dict[str, int]]:
    """Fit one global LSTM on every series minus its held-out tail; return it and the tails."""
    holdouts = {key: holdout_size(len(y), max_holdout) for key, y in series.items()}
    model = LSTMForecaster(config)
    model.fit_many([np.asarray(y)[: -holdouts[key]] for key, y in series.items()])
    return model, holdouts


@dataclass(frozen=True)
class Decision:
    promote: bool
    reason: str


def decide_promotion(
    candidate_mase: float | None,
    champion_mase: float | None,
    max_mase: float = PROMOTE_MAX_MASE,
    advantage_t: float | None = None,
    min_t: float = PROMOTE_MIN_T,
) -> Decision:
    if candidate_mase is None:
        return Decision(False, "candidate has no walk-forward MASE")
    if not candidate_mase < max_mase:
        return Decision(
            False, f"MASE {candidate_mase:.3f} does not beat naive (needs < {max_mase:.2f})"
        )
    if advantage_t is not None and not advantage_t > min_t:
        return Decision(
            False,
            f"MASE {candidate_mase:.3f} beats naive by no more than noise "
            f"(t {advantage_t:.2f}, needs > {min_t:g})",
        )
    if champion_mase is not None and not candidate_mase < champion_mase:
        return Decision(
            False,
            f"MASE {candidate_mase:.3f} does not beat the champion's {champion_mase:.3f}",
        )
    vs = "no champion" if champion_mase is None else f"champion {champion_mase:.3f}"
    return Decision(True, f"MASE {candidate_mase:.3f} beats naive and {vs}")
