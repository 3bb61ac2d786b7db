"""Producing and judging LSTM candidates (used by the retraining job and the backtest).

A candidate is trained on every series minus a held-out tail, then scored walk-forward on
that tail (no refit). It is promoted only when its MASE beats naive by a margin *and* beats
the current champion scored on the same tail.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from ml.base import Forecaster
from ml.evaluation import Metrics, holdout_metrics
from ml.lstm import LSTMConfig, LSTMForecaster
from ml.selection import noise_margin_mase

PROMOTE_MAX_MASE = 0.98  # must beat naive by 2%: guards against noise on random walks


def holdout_size(n: int, max_holdout: int = 60, fraction: float = 0.2) -> int:
    return max(1, min(max_holdout, int(n * fraction)))


@dataclass(frozen=True)
class Scored:
    per_series: dict[str, Metrics]

    @property
    def mase(self) -> float | None:
        """Mean of the per-series MASE (series without a defined MASE are left out)."""
        vals = [m.mase for m in self.per_series.values() if m.mase is not None]
        return float(np.mean(vals)) if vals else None

    def to_dict(self) -> dict[str, object]:
        return {
            "mase": self.mase,
            "per_series": {k: v.to_dict() for k, v in self.per_series.items()},
        }


def score(
    model: Forecaster, series: Mapping[str, np.ndarray], holdouts: Mapping[str, int], horizon: int
) -> Scored:
    return Scored(
        {
            key: holdout_metrics(model, y, horizon=horizon, test_size=holdouts[key])
            for key, y in series.items()
            if key in holdouts
        }
    )


def train_candidate(
    series: Mapping[str, np.ndarray],
    *,
    horizon: int = 1,
    config: LSTMConfig | None = None,
    max_holdout: int = 60,
) -> tuple[LSTMForecaster, dict[str, int]]:
    """Fit one global LSTM on every series minus its held-out tail; return it and the tails."""
    holdouts = {k: holdout_size(len(y), max_holdout) for k, y in series.items()}
    model = LSTMForecaster(config)
    model.fit_many([np.asarray(y)[: -holdouts[k]] for k, y in series.items()])
    return model, holdouts


@dataclass(frozen=True)
class Decision:
    promote: bool
    reason: str


def decide_promotion(
    candidate_mase: float | None,
    champion_mase: float | None,
    max_mase: float = PROMOTE_MAX_MASE,
    horizon: int = 1,
) -> Decision:
    """Promote when the candidate beats naive by more than noise at the validated
    ``horizon`` (:func:`noise_margin_mase`) and beats the champion on the same tails."""
    max_mase = noise_margin_mase(max_mase, horizon)
    if candidate_mase is None:
        return Decision(False, "candidate has no walk-forward MASE")
    if not candidate_mase < max_mase:
        return Decision(
            False, f"MASE {candidate_mase:.3f} does not beat naive (needs < {max_mase:g})"
        )
    if champion_mase is not None and not candidate_mase < champion_mase:
        return Decision(
            False,
            f"MASE {candidate_mase:.3f} does not beat the champion's {champion_mase:.3f}",
        )
    vs = "no champion" if champion_mase is None else f"champion {champion_mase:.3f}"
    return Decision(True, f"MASE {candidate_mase:.3f} beats naive and {vs}")
