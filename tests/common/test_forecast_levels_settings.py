"""Settings of the forecast intervals validate themselves; staleness of a record."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from pydantic import ValidationError

from services.common.config import Settings
from services.common.schemas import IntervalBand, PredictionRecord
from services.common.staleness import with_freshness


def test_levels_parse_sorted_and_default_offered() -> None:
    s = Settings(forecast_levels="0.95, 0.5,0.8")
    assert s.offered_levels() == (0.5, 0.8, 0.95)
    assert Settings(forecast_levels="0.9", forecast_default_level=0.9).offered_levels() == (0.9,)


@pytest.mark.parametrize(
    ("levels", "default"),
    [("0.5,0.9", 0.8), ("0.5,abc", 0.8), ("0.5,1.0", 0.5), ("", 0.8), ("0,0.8", 0.8)],
)
def test_bad_levels_are_refused(levels: str, default: float) -> None:
    with pytest.raises(ValidationError):
        Settings(forecast_levels=levels, forecast_default_level=default)


def _record(as_of: datetime, interval: str = "1d") -> PredictionRecord:
    return PredictionRecord(
        symbol="X",
        interval=interval,  # type: ignore[arg-type]
        horizon=1,
        as_of=as_of,
        target_time=as_of + timedelta(days=1),
        predicted_price=10.0,
        lower_bound=9.0,
        upper_bound=11.0,
        model="arima",
        model_version="v",
        generated_at=as_of,
        intervals=(IntervalBand(level=0.95, lower=8.0, upper=12.0),),
    )


def test_stale_after_n_intervals_and_age_of_the_close() -> None:
    as_of = datetime(2026, 1, 10, tzinfo=UTC)
    fresh = with_freshness(_record(as_of), as_of + timedelta(days=3), 3.0)
    assert fresh.stale is False and fresh.as_of_age_s == 2 * 86400
    old = with_freshness(_record(as_of), as_of + timedelta(days=4, seconds=1), 3.0)
    assert old.stale is True and old.as_of_age_s == 3 * 86400 + 1
    hourly = with_freshness(_record(as_of, "1h"), as_of + timedelta(hours=5), 3.0)
    assert hourly.stale is True and hourly.as_of_age_s == 4 * 3600


def test_at_level_swaps_the_bounds() -> None:
    rec = _record(datetime(2026, 1, 10, tzinfo=UTC))
    wide = rec.at_level(0.95)
    assert (wide.lower_bound, wide.upper_bound, wide.confidence_level) == (8.0, 12.0, 0.95)
    assert rec.at_level(0.8) is rec
    with pytest.raises(KeyError):
        rec.at_level(0.5)
