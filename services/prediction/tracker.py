"""Bar-close detection and debouncing from tick timestamps (pure, no I/O).

Per symbol and interval the tracker remembers the *open* bar (the newest bucket a tick fell
in) and the last *closed* one. A tick in a later bucket closes the open bar; a tick in an
earlier bucket is late data that changed a closed bar. However many ticks a batch holds, the
plan names each closed bar once, so each bar is forecast once (debounce).

State is lost on restart or partition reassignment; the first tick seen for a key then asks
the engine to *resume*: find the newest bar before it in the database and forecast it if
that work is missing (see ``services.prediction.planning``).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime

from services.prediction.clock import INTERVALS, as_utc, bucket

Key = tuple[str, str]  # (symbol, interval)


@dataclass
class KeyPlan:
    """What one batch of ticks asks of one (symbol, interval)."""

    symbol: str
    interval: str
    closed: list[datetime] = field(default_factory=list)  # bars closed, oldest first
    changed: set[datetime] = field(default_factory=set)  # closed bars late data changed
    resume_before: datetime | None = None  # state was unknown: bars before this may be due
    refresh: bool = False  # re-forecast the latest closed bar (its inputs changed)
    need_ts: datetime | None = None  # newest tick the work depends on (must be stored)

    @property
    def key(self) -> Key:
        return (self.symbol, self.interval)

    def needs(self, ts: datetime) -> None:
        if self.need_ts is None or ts > self.need_ts:
            self.need_ts = ts


@dataclass
class _State:
    open_bar: datetime
    last_closed: datetime | None = None
    partition: int | None = None


class BarTracker:
    def __init__(self, intervals: Iterable[str] = INTERVALS) -> None:
        self.intervals = tuple(intervals)
        self._state: dict[Key, _State] = {}

    def __len__(self) -> int:
        return len(self._state)

    def plan(self, ticks: Iterable[tuple[str, datetime, int | None]]) -> dict[Key, KeyPlan]:
        """Feed ``(symbol, ts, partition)`` ticks in partition order; return the work per key."""
        plans: dict[Key, KeyPlan] = {}
        for symbol, raw_ts, partition in ticks:
            ts = as_utc(raw_ts)
            for interval in self.intervals:
                self._observe(plans, symbol, interval, ts, partition)
        return plans

    def _observe(
        self,
        plans: dict[Key, KeyPlan],
        symbol: str,
        interval: str,
        ts: datetime,
        partition: int | None,
    ) -> None:
        key = (symbol, interval)
        bar = bucket(ts, interval)
        state = self._state.get(key)
        if state is None:
            self._state[key] = _State(open_bar=bar, partition=partition)
            plan = plans.setdefault(key, KeyPlan(symbol, interval))
            plan.resume_before = bar
            plan.needs(ts)
            return
        state.partition = partition
        if bar == state.open_bar:
            return
        plan = plans.setdefault(key, KeyPlan(symbol, interval))
        if bar > state.open_bar:
            plan.closed.append(state.open_bar)
            state.last_closed = state.open_bar
            state.open_bar = bar
            plan.needs(ts)
        else:  # late data: a tick for a bar that has already closed
            plan.changed.add(bar)
            plan.refresh = True
            plan.needs(ts)

    # ------------------------------------------------------------------------ queries
    def last_closed(self, key: Key) -> datetime | None:
        state = self._state.get(key)
        return None if state is None else state.last_closed

    def open_bar(self, key: Key) -> datetime | None:
        state = self._state.get(key)
        return None if state is None else state.open_bar

    def resolve_resume(self, key: Key, previous_bar: datetime | None) -> None:
        """The engine found ``previous_bar`` (newest bar before the first tick) in the DB."""
        state = self._state.get(key)
        if state is not None and state.last_closed is None and previous_bar is not None:
            state.last_closed = previous_bar

    def forget(self, key: Key) -> None:
        """Drop a key whose work failed, so that the next tick resumes it from the DB."""
        self._state.pop(key, None)

    def forget_partitions(self, partitions: Iterable[int]) -> None:
        """Drop state for partitions this replica no longer owns (rebalance)."""
        lost = set(partitions)
        for key in [key for key, state in self._state.items() if state.partition in lost]:
            del self._state[key]
