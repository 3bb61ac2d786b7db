"""Finding holes in a venue's trade stream.

Venues that number their trades sequentially per symbol (Binance ``t``, Coinbase
``trade_id``, Kraken v2 ``trade_id``) make a missed trade visible: the next id seen is more
than one past the last. :class:`SequenceTracker` remembers the last id per symbol (across
reconnects: that is when trades are missed), reports each hole as a :class:`Gap` to repair
from the venue's REST endpoint, and drops trades it has already seen (a reconnect's snapshot
overlaps what came before) unless they fall into a hole still being repaired. Venues without
ids (Finnhub) get a time window instead: after a reconnect, the span from the last trade seen
to the first new one (:meth:`SequenceTracker.window`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime


@dataclass
class Gap:
    """Trades missing from ``symbol`` (a venue symbol): ids ``first_id``..``last_id``
    inclusive (None for a time window), between the trades at ``after`` and ``before``."""

    symbol: str
    after: datetime
    before: datetime
    first_id: int | None = None
    last_id: int | None = None

    @property
    def expected(self) -> int | None:
        if self.first_id is None or self.last_id is None:
            return None
        return self.last_id - self.first_id + 1

    def covers(self, trade_id: int | None, ts: datetime) -> bool:
        if self.first_id is not None and self.last_id is not None and trade_id is not None:
            return self.first_id <= trade_id <= self.last_id
        return self.after <= ts <= self.before

    def describe(self) -> str:
        if self.expected is not None:
            return f"{self.symbol} ids {self.first_id}..{self.last_id} ({self.expected} trades)"
        return f"{self.symbol} {self.after.isoformat()} .. {self.before.isoformat()}"


@dataclass
class SequenceTracker:
    last: dict[str, tuple[int, datetime]] = field(default_factory=dict)
    last_ts: dict[str, datetime] = field(default_factory=dict)
    open_gaps: dict[str, list[Gap]] = field(default_factory=dict)
    duplicates: int = 0

    def observe(self, symbol: str, trade_id: int, ts: datetime) -> tuple[bool, Gap | None]:
        """(keep the trade?, the hole it reveals, if any)."""
        prev = self.last.get(symbol)
        if prev is None or trade_id == prev[0] + 1:
            self.last[symbol] = (trade_id, ts)
            return True, None
        if trade_id > prev[0]:
            gap = Gap(symbol, prev[1], ts, prev[0] + 1, trade_id - 1)
            self.open_gaps.setdefault(symbol, []).append(gap)
            self.last[symbol] = (trade_id, ts)
            return True, gap
        if any(open_gap.covers(trade_id, ts) for open_gap in self.open_gaps.get(symbol, ())):
            return True, None  # the stream had it after all; the store keeps it once
        self.duplicates += 1
        return False, None

    def seen(self, symbol: str, ts: datetime) -> None:
        """A trade without a sequential id (time-window venues)."""
        last = self.last_ts.get(symbol)
        if last is None or ts > last:
            self.last_ts[symbol] = ts

    def window(self, symbol: str, ts: datetime) -> Gap | None:
        """After a reconnect: the span since the last trade seen of ``symbol``, if any."""
        last = self.last_ts.get(symbol)
        if last is None:
            return None
        gap = Gap(symbol, last, ts)
        self.open_gaps.setdefault(symbol, []).append(gap)
        return gap

    def close(self, gap: Gap) -> None:
        gaps = self.open_gaps.get(gap.symbol, [])
        if gap in gaps:
            gaps.remove(gap)
