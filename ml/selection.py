"""The docs/architecture.md model-choice rule, with the reason for every fallback."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from ml.errors import ForecastError

ModelName = Literal["lstm", "arima", "naive"]


class InsufficientHistory(ForecastError):
    """Fewer days of history than the ARIMA minimum (the API's ERR_PRED_001)."""

    def __init__(self, required_days: int, available_days: int) -> None:
        self.required_days = required_days
        self.available_days = available_days
        super().__init__(f"Required: {required_days} days, Available: {available_days} days")


@dataclass(frozen=True)
class SelectionPolicy:
    """Thresholds (the services pass ``min_history_days_arima`` / ``..._lstm`` settings)."""

    min_arima_days: int = 30
    min_lstm_days: int = 90
    # A promoted LSTM is not served for an asset whose own validation MASE is not below this.
    max_lstm_mase: float = 0.98  # same margin as promotion (ml.promotion.PROMOTE_MAX_MASE)
    # ... and, where the validation recorded it, the t of its advantage over naive must
    # clear this (ml.promotion.PROMOTE_MIN_T): beating naive by more than noise.
    min_lstm_advantage_t: float = 0.5

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
    lstm_validation_t: float | None = None,
) -> Selection:
    """LSTM with enough history and a promoted version; ARIMA with enough history; else raise."""
    if available_days < policy.min_arima_days:
        raise InsufficientHistory(policy.min_arima_days, available_days)
    if available_days < policy.min_lstm_days:
        return Selection(
            "arima", f"history {available_days}d < {policy.min_lstm_days}d required for lstm"
        )
    if not has_promoted_lstm:
        return Selection("arima", "no promoted lstm version")
    if lstm_validation_mase is not None and not lstm_validation_mase < policy.max_lstm_mase:
        return Selection(
            "arima",
            f"lstm validation MASE {lstm_validation_mase:.3f} >= {policy.max_lstm_mase:.2f} "
            "for this asset",
        )
    if lstm_validation_t is not None and not lstm_validation_t > policy.min_lstm_advantage_t:
        return Selection(
            "arima",
            f"lstm beats naive by no more than noise for this asset (t {lstm_validation_t:.2f}"
            f" <= {policy.min_lstm_advantage_t:g})",
        )
    return Selection("lstm", None)
