"""Served forecasts become records with full provenance."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from ml.serving import ServedForecast
from services.prediction.records import build_records, insufficient_status

AS_OF = datetime(2026, 3, 4, tzinfo=UTC)
NOW = datetime(2026, 3, 5, 0, 0, 2, tzinfo=UTC)


def test_one_record_per_horizon_with_provenance() -> None:
    served = ServedForecast("arima", "arima(0,1,0)", (10.0, 11.0), (9.0, 9.5), (11.0, 12.5), "why")
    records = build_records("ETH-USD", "1d", AS_OF, served, NOW)
    assert [r.horizon for r in records] == [1, 2]
    second = records[1]
    assert second.target_time == datetime(2026, 3, 6, tzinfo=UTC)
    assert (second.lower_bound, second.predicted_price, second.upper_bound) == (9.5, 11.0, 12.5)
    assert second.model == "arima" and second.model_version == "arima(0,1,0)"
    assert second.fallback_reason == "why" and second.generated_at == NOW
    assert second.confidence_level == 0.8


def test_non_finite_forecasts_are_refused() -> None:
    served = ServedForecast("arima", "v", (float("nan"),), (1.0,), (2.0,), None)
    with pytest.raises(ValueError, match="non-finite"):
        build_records("X", "1h", AS_OF, served, NOW)


def test_insufficient_status_says_required_and_available() -> None:
    status = insufficient_status("NEW-USD", "1d", 30, 10)
    assert status.status == "insufficient_history"
    assert status.detail == "Insufficient history. Required: 30 days, Available: 10 days"
