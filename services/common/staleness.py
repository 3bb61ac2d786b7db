"""Is a forecast stale? Its as-of bar closed more than N intervals ago (the feed stopped).

One rule for everything that hands out a prediction: the prediction service when it writes
the record (a catch-up forecast of an old bar is stale from birth), the API when it answers
from the database (the feed stopped and no newer forecast came). ``as_of_age_s`` is the age
of the as-of bar's close when the record was produced or read.
"""

from __future__ import annotations

from datetime import UTC, datetime

from services.common.schemas import PredictionRecord

_STEP_S = {"1h": 3600.0, "1d": 86400.0}


def as_of_age_s(record: PredictionRecord, now: datetime) -> float:
    closed = record.as_of.timestamp() + _STEP_S[record.interval]
    return round(max(0.0, now.astimezone(UTC).timestamp() - closed), 3)


def with_freshness(
    record: PredictionRecord, now: datetime, stale_after_intervals: float
) -> PredictionRecord:
    """``record`` with ``stale`` and ``as_of_age_s`` as of ``now``."""
    age = as_of_age_s(record, now)
    stale = age > stale_after_intervals * _STEP_S[record.interval]
    if record.stale == stale and record.as_of_age_s == age:
        return record
    return record.model_copy(update={"stale": stale, "as_of_age_s": age})
