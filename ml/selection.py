"""The docs/architecture.md model-choice rule, with the reason for every fallback."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

ModelName = Literal["lstm", "arima", "naive"]


class InsufficientHistory(Exception):
    """Fewer days of history than the ARIMA minimum (the API's ERR_PRED_001)."""

    def __init__(self, required_days: int, available_days: int) -> None:
        self.required_days = required_days
        self.available_days = available_days
        super().__init__(f"Required: {required_days} days, Available: {available_days} days")


def noise_margin_mase(max_mase: float, horizon: int) -> float:
    """The MASE to beat when validated at ``horizon``: the 1-step margin ``1 - max_mase``
    times sqrt(horizon). Overlapping h-step holdout targets hold about 1/h as much
    independent evidence, so the noise of their MASE grows like sqrt(h) (0.98 at h = 1,
    0.955 at h = 5)."""
    return 1.0 - (1.0 - max_mase) * math.sqrt(max(1, horizon))


@dataclass(frozen=True)
class SelectionPolicy:
    """Thresholds (the services pass ``min_history_days_arima`` / ``..._lstm`` settings)."""

    min_arima_days: int = 30
    min_lstm_days: int = 90
    # A promoted LSTM is not served for an asset whose own validation MASE is not below this.
    max_lstm_mase: float = 0.98  # same margin as promotion (ml.promotion.PROMOTE_MAX_MASE)

    def __post_init__(self) -> None:
        if not 0 < self.min_arima_days <= self.min_lstm_days:
            raise ValueError("need 0 < min_arima_days <= min_lstm_days")


@dataclass(frozen=True)
class Selection:
    model: ModelName
    reason: str | None


def select_model(
    available_days: int,
    has_promoted_lstm: bool,
    policy: SelectionPolicy,
    lstm_validation_mase: float | None = None,
    validation_horizon: int = 1,
) -> Selection:
    """LSTM with enough history and a promoted version; ARIMA with enough history; else raise.

    The LSTM's own validation MASE on the asset (measured at ``validation_horizon``) must
    beat naive by more than noise: ``policy.max_lstm_mase`` at horizon 1, the margin
    widened by sqrt(horizon) beyond (:func:`noise_margin_mase`)."""
    if available_days < policy.min_arima_days:
        raise InsufficientHistory(policy.min_arima_days, available_days)
    if available_days < policy.min_lstm_days:
        return Selection(
            "arima", f"history {available_days}d < {policy.min_lstm_days}d required for lstm"
        )
    if not has_promoted_lstm:
        return Selection("arima", "no promoted lstm version")
    limit = noise_margin_mase(policy.max_lstm_mase, validation_horizon)
    if lstm_validation_mase is not None and not lstm_validation_mase < limit:
        return Selection(
            "arima",
            f"lstm validation MASE {lstm_validation_mase:.3f} >= {limit:g} for this asset",
        )
    return Selection("lstm", None)
