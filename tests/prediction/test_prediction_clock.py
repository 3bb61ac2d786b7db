"""Bar arithmetic: buckets, targets, cache expiry and staleness."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest

from services.common.config import Settings
from services.prediction import clock


def test_bucket_floors_to_interval_in_utc() -> None:
    ts = datetime(2026, 3, 4, 15, 42, 7, tzinfo=UTC)
    assert clock.bucket(ts, "1h") == datetime(2026, 3, 4, 15, tzinfo=UTC)
    assert clock.bucket(ts, "1d") == datetime(2026, 3, 4, tzinfo=UTC)
    # another offset is converted to UTC first; naive values count as UTC
    local = datetime(2026, 3, 5, 1, 30, tzinfo=timezone(timedelta(hours=10)))
    assert clock.bucket(local, "1d") == datetime(2026, 3, 4, tzinfo=UTC)
    assert clock.bucket(datetime(2026, 3, 4, 0, 0), "1h") == datetime(2026, 3, 4, tzinfo=UTC)


def test_unknown_interval_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown interval"):
        clock.step("5m")


def test_targets_and_horizons() -> None:
    as_of = datetime(2026, 3, 4, 10, tzinfo=UTC)
    assert clock.target_time(as_of, "1h", 24) == datetime(2026, 3, 5, 10, tzinfo=UTC)
    assert clock.target_time(as_of, "1d", 7) == datetime(2026, 3, 11, 10, tzinfo=UTC)
    s = Settings()
    assert clock.horizons(s, "1h") == 24
    assert clock.horizons(s, "1d") == 7


def test_cache_ttl_ends_at_next_bar_close_plus_margin() -> None:
    as_of = datetime(2026, 3, 4, 10, tzinfo=UTC)  # closes 11:00, next bar closes 12:00
    now = datetime(2026, 3, 4, 11, 0, 1, tzinfo=UTC)
    assert clock.ttl_seconds(as_of, "1h", 300, now) == 3600 - 1 + 300
    assert clock.ttl_seconds(as_of, "1h", 300, now + timedelta(hours=2)) == 0


def test_stale_means_every_target_already_closed() -> None:
    as_of = datetime(2026, 3, 4, 10, tzinfo=UTC)
    last_target_close = datetime(2026, 3, 5, 11, tzinfo=UTC)
    assert not clock.is_stale(as_of, "1h", 24, last_target_close - timedelta(seconds=1))
    assert clock.is_stale(as_of, "1h", 24, last_target_close)
