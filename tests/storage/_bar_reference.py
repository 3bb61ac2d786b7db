"""Brute-force bar aggregation of raw ticks in Python: the oracle the storage paths must match."""

from __future__ import annotations

import math
from collections import defaultdict
from datetime import UTC, datetime, timedelta
from typing import Any

SECONDS = {"1m": 60, "1h": 3600, "1d": 86400}
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)

Tick = tuple[str, datetime, float, float, str]  # symbol, ts, price, volume, source
BarRow = tuple[float, float, float, float, float, int, float | None]


def bucket_of(ts: datetime, interval: str) -> datetime:
    step = SECONDS[interval]
    seconds = int((ts - EPOCH).total_seconds() // step) * step
    return EPOCH + timedelta(seconds=seconds)


def aggregate(ticks: list[Tick], interval: str) -> dict[tuple[str, datetime], BarRow]:
    """(symbol, bucket) -> (open, high, low, close, volume, trade_count, vwap); open/close
    are the earliest/latest tick by (ts, source); vwap is None when volume is 0."""
    groups: dict[tuple[str, datetime], list[Tick]] = defaultdict(list)
    for tick in ticks:
        groups[(tick[0], bucket_of(tick[1], interval))].append(tick)
    out: dict[tuple[str, datetime], BarRow] = {}
    for key, rows in groups.items():
        rows.sort(key=lambda t: (t[1], t[4]))
        prices = [t[2] for t in rows]
        volume = math.fsum(t[3] for t in rows)
        pv = math.fsum(t[2] * t[3] for t in rows)
        vwap = pv / volume if volume else None
        out[key] = (prices[0], max(prices), min(prices), prices[-1], volume, len(rows), vwap)
    return out


def assert_bars_equal(
    actual: dict[tuple[str, datetime], Any], expected: dict[tuple[str, datetime], BarRow]
) -> None:
    """Exact open/high/low/close/count; volume and VWAP equal up to summation order."""
    assert actual.keys() == expected.keys(), (
        f"missing {sorted(expected.keys() - actual.keys())[:5]}, "
        f"extra {sorted(actual.keys() - expected.keys())[:5]}"
    )
    for key, exp in expected.items():
        got = tuple(actual[key])
        assert got[:4] == exp[:4], (key, got, exp)
        assert math.isclose(got[4], exp[4], rel_tol=1e-12, abs_tol=1e-12), (key, got, exp)
        assert got[5] == exp[5], (key, got, exp)
        if exp[6] is None:
            assert got[6] is None, (key, got, exp)
        else:
            assert got[6] is not None and math.isclose(got[6], exp[6], rel_tol=1e-12), (
                key,
                got,
                exp,
            )
