"""Bar arithmetic for the intervals the service forecasts (``1h``, ``1d``), all in UTC.

A bar is named by its bucket start; it closes when its bucket ends. A forecast made from the
bar ``as_of`` targets the buckets ``as_of + h * interval`` (h = 1..horizons).
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from services.common.config import Settings
from services.common.schemas import Interval

INTERVALS: tuple[Interval, ...] = ("1h", "1d")
_STEP: dict[str, timedelta] = {"1h": timedelta(hours=1), "1d": timedelta(days=1)}
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def step(interval: str) -> timedelta:
    try:
        return _STEP[interval]
    except KeyError:
        raise ValueError(f"unknown interval {interval!r}; expected one of {INTERVALS}") from None


def as_utc(ts: datetime) -> datetime:
    """Aware UTC datetime (naive values are taken as UTC)."""
    return ts.replace(tzinfo=UTC) if ts.tzinfo is None else ts.astimezone(UTC)


def bucket(ts: datetime, interval: str) -> datetime:
    """Start of the bucket of ``interval`` that holds ``ts``."""
    size = step(interval)
    offset = (as_utc(ts) - _EPOCH) // size
    return _EPOCH + offset * size


def bar_close(as_of: datetime, interval: str) -> datetime:
    """When the bar starting at ``as_of`` closes."""
    return as_utc(as_of) + step(interval)


def target_time(as_of: datetime, interval: str, horizon: int) -> datetime:
    return as_utc(as_of) + horizon * step(interval)


def horizons(settings: Settings, interval: str) -> int:
    """How many steps ahead the service forecasts for ``interval`` (24 for 1h, 7 for 1d)."""
    if interval == "1h":
        return settings.horizons_1h
    if interval == "1d":
        return settings.horizons_1d
    raise ValueError(f"unknown interval {interval!r}")


def cache_expiry(as_of: datetime, interval: str, margin_s: int) -> datetime:
    """A forecast made from bar ``as_of`` is superseded when the next bar closes
    (``as_of + 2 * interval``); its cache entry lives ``margin_s`` longer."""
    return as_utc(as_of) + 2 * step(interval) + timedelta(seconds=margin_s)


def ttl_seconds(as_of: datetime, interval: str, margin_s: int, now: datetime) -> int:
    """Seconds until :func:`cache_expiry` from ``now``; 0 when already expired."""
    remaining = (cache_expiry(as_of, interval, margin_s) - as_utc(now)).total_seconds()
    return max(0, int(remaining))


def is_stale(as_of: datetime, interval: str, n_horizons: int, now: datetime) -> bool:
    """Every target of a forecast from ``as_of`` is already a closed bar at ``now``."""
    return bar_close(target_time(as_of, interval, n_horizons), interval) <= as_utc(now)
