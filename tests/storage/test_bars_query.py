"""The bar query layer (services.common.bars) on every storage path."""

from __future__ import annotations

import gc
from datetime import UTC, datetime, timedelta

import numpy as np
import pytest
import sqlalchemy as sa
from _storage_helpers import settle, write_batch
from sqlalchemy.engine import Engine

from services.common.bars import (
    Bar,
    BarColumns,
    get_bar_columns,
    get_bars,
    history_days,
    latest_bar,
    relation,
)

T0 = datetime(2024, 1, 1, tzinfo=UTC)


@pytest.fixture
def hourly(storage: Engine) -> Engine:
    """BTC-USD: one tick at 00:30 of every hour for 3 days (72 hours); ETH-USD: 2 days."""
    ticks = [
        ("BTC-USD", T0 + timedelta(hours=h, minutes=30), 100.0 + h, 1.0 + h, "s") for h in range(72)
    ]
    ticks += [("ETH-USD", T0 + timedelta(days=d, hours=3), 10.0, 2.0, "s") for d in range(2)]
    write_batch(storage, ticks)
    settle(storage)
    return storage


def test_range_is_ascending_and_half_open(hourly: Engine) -> None:
    with hourly.connect() as conn:
        bars = get_bars(conn, "BTC-USD", "1h", T0 + timedelta(hours=5), T0 + timedelta(hours=10))
    assert [b.bucket for b in bars] == [T0 + timedelta(hours=h) for h in range(5, 10)]
    first = bars[0]
    assert first == Bar(T0 + timedelta(hours=5), 105.0, 105.0, 105.0, 105.0, 6.0, 1, 105.0)
    assert first.bucket.tzinfo is not None


def test_limit_without_start_gives_newest_bars_ascending(hourly: Engine) -> None:
    with hourly.connect() as conn:
        newest = get_bars(conn, "BTC-USD", "1h", limit=3)
        before = get_bars(conn, "BTC-USD", "1h", end=T0 + timedelta(hours=10), limit=2)
        from_start = get_bars(conn, "BTC-USD", "1h", start=T0, limit=2)
    assert [b.bucket for b in newest] == [T0 + timedelta(hours=h) for h in (69, 70, 71)]
    assert [b.bucket for b in before] == [T0 + timedelta(hours=h) for h in (8, 9)]
    assert [b.bucket for b in from_start] == [T0, T0 + timedelta(hours=1)]


def test_daily_bars_history_days_and_latest(hourly: Engine) -> None:
    with hourly.connect() as conn:
        days = get_bars(conn, "BTC-USD", "1d")
        assert [b.trade_count for b in days] == [24, 24, 24]
        assert days[1].open == 124.0 and days[1].close == 147.0
        assert history_days(conn, "BTC-USD") == 3
        assert history_days(conn, "ETH-USD") == 2
        assert history_days(conn, "NOPE-USD") == 0
        latest = latest_bar(conn, "BTC-USD", "1m")
        assert latest is not None and latest.bucket == T0 + timedelta(hours=71, minutes=30)
        assert latest_bar(conn, "NOPE-USD", "1d") is None
        assert get_bars(conn, "NOPE-USD", "1h") == []


def test_rejects_unknown_interval_and_bad_limit(hourly: Engine) -> None:
    with pytest.raises(ValueError, match="unknown interval"):
        relation("5m; DROP TABLE price_ticks")
    with hourly.connect() as conn, pytest.raises(ValueError):
        get_bars(conn, "BTC-USD", "1h", limit=0)


def test_columns_match_rows_and_zero_volume_gives_no_vwap(storage: Engine) -> None:
    t = datetime(2024, 2, 1, tzinfo=UTC)
    write_batch(
        storage, [("Z-USD", t, 5.0, 0.0, "s"), ("Z-USD", t + timedelta(hours=2), 6.0, 2.0, "s")]
    )
    settle(storage)
    with storage.connect() as conn:
        cols = get_bar_columns(conn, "Z-USD", "1h")
        bars = get_bars(conn, "Z-USD", "1h")
    assert len(cols) == 2 and cols.bucket.tolist() == [
        int(t.timestamp()),
        int(t.timestamp()) + 7200,
    ]
    assert bars[0].vwap is None and bars[1].vwap == 6.0
    assert cols.to_bars() == bars


def test_symbol_is_quoted_not_interpolated(storage: Engine) -> None:
    """get_bar_columns inlines parameters into COPY (it takes no bind parameters): a quote
    in the symbol is data, and the bars read equal a plain SELECT of the relation."""
    odd = "Q'X); DROP TABLE price_ticks; --"
    write_batch(storage, [(odd, T0 + timedelta(minutes=m), 1.0 + m, 1.0, "s") for m in range(3)])
    settle(storage)
    with storage.connect() as conn:
        bars = get_bars(conn, odd, "1m")
        rows = conn.execute(
            sa.text(
                "SELECT bucket, open, high, low, close, volume, trade_count, vwap "
                "FROM price_1m WHERE symbol = :s ORDER BY bucket"
            ),
            {"s": odd},
        ).all()
        assert conn.execute(sa.text("SELECT count(*) FROM price_ticks")).scalar() == 3
    assert [tuple(b) for b in bars] == [tuple(r) for r in rows]
    assert len(bars) == 3


@pytest.mark.parametrize("enabled_before", [True, False])
def test_to_bars_leaves_the_garbage_collector_as_it_found_it(enabled_before: bool) -> None:
    """to_bars pauses the cyclic collector while it builds the tuples (GC passes were the p99
    of a year of hourly bars) and restores exactly the state it found."""
    n = 3
    floats = np.array([1.0, 2.0, float("nan")])
    cols = BarColumns(
        np.array([0, 3600, 7200], dtype=np.int64),
        floats,
        floats,
        floats,
        floats,
        floats,
        np.ones(n, dtype=np.int64),
        floats,
    )
    was = gc.isenabled()
    try:
        gc.enable() if enabled_before else gc.disable()
        bars = cols.to_bars()
        assert gc.isenabled() is enabled_before
    finally:
        gc.enable() if was else gc.disable()
    assert [b.bucket for b in bars] == [datetime(1970, 1, 1, h, tzinfo=UTC) for h in (0, 1, 2)]
    assert bars[2].vwap is None and bars[0].vwap == 1.0
