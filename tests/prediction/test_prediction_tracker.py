"""Bar-close detection and debouncing from tick timestamps."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from services.prediction.tracker import BarTracker

T0 = datetime(2026, 3, 4, 10, tzinfo=UTC)


def ticks(*offsets_min: float, symbol: str = "BTC-USD") -> list[tuple[str, datetime, int]]:
    return [(symbol, T0 + timedelta(minutes=m), 0) for m in offsets_min]


def test_first_tick_asks_to_resume_from_the_database() -> None:
    tracker = BarTracker(["1h"])
    plans = tracker.plan(ticks(5, 6))
    plan = plans[("BTC-USD", "1h")]
    assert plan.resume_before == T0
    assert plan.closed == []
    assert plan.need_ts == T0 + timedelta(minutes=5)
    tracker.resolve_resume(("BTC-USD", "1h"), T0 - timedelta(hours=1))
    assert tracker.last_closed(("BTC-USD", "1h")) == T0 - timedelta(hours=1)


def test_a_thousand_ticks_for_one_bar_close_it_once() -> None:
    tracker = BarTracker(["1h"])
    tracker.plan(ticks(0))
    batch = ticks(*[i * 0.05 for i in range(1, 1001)]) + ticks(61, 62, 63)
    plan = tracker.plan(batch)[("BTC-USD", "1h")]
    assert plan.closed == [T0]
    assert plan.need_ts == T0 + timedelta(minutes=61)
    assert tracker.open_bar(("BTC-USD", "1h")) == T0 + timedelta(hours=1)
    # further ticks in the new bar ask for nothing
    assert tracker.plan(ticks(70, 80)) == {}


def test_every_bar_crossed_in_a_batch_is_named_once_in_order() -> None:
    tracker = BarTracker(["1h", "1d"])
    tracker.plan(ticks(0))
    plans = tracker.plan(ticks(30, 65, 70, 130, 190, 24 * 60 + 1))
    hourly = plans[("BTC-USD", "1h")]
    assert hourly.closed == [T0 + timedelta(hours=h) for h in (0, 1, 2, 3)]
    daily = plans[("BTC-USD", "1d")]
    assert daily.closed == [datetime(2026, 3, 4, tzinfo=UTC)]


def test_late_tick_marks_the_closed_bar_changed_and_refreshes_the_latest() -> None:
    tracker = BarTracker(["1h"])
    tracker.plan(ticks(0))
    tracker.plan(ticks(61))  # closes T0
    plan = tracker.plan(ticks(30, 31))[("BTC-USD", "1h")]  # two late ticks into T0
    assert plan.changed == {T0}
    assert plan.refresh
    assert plan.closed == []
    assert tracker.last_closed(("BTC-USD", "1h")) == T0


def test_symbols_are_tracked_independently_and_forgotten_by_partition() -> None:
    tracker = BarTracker(["1h"])
    tracker.plan([("A", T0, 0), ("B", T0, 1)])
    plans = tracker.plan([("A", T0 + timedelta(hours=1), 0), ("B", T0 + timedelta(minutes=1), 1)])
    assert set(plans) == {("A", "1h")}
    tracker.forget_partitions([1])
    assert tracker.open_bar(("B", "1h")) is None
    assert tracker.open_bar(("A", "1h")) == T0 + timedelta(hours=1)
    again = tracker.plan([("B", T0 + timedelta(minutes=2), 1)])
    assert again[("B", "1h")].resume_before == T0
