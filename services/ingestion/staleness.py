"""Age of the newest tick per symbol: the ``pricecast_tick_age_seconds`` gauge and stale list.

The writer reports what it stored (:meth:`observe`); :meth:`refresh_from_db` reads the newest
tick of every known asset (one index probe per asset), so a sources-only process or a freshly
started writer knows the ages too.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime
from functools import partial

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from services.common.metrics import STALE_AFTER, TICK_AGE

NEWEST_SQL = sa.text(
    "SELECT asset.symbol,"
    " (SELECT max(tick.ts) FROM price_ticks tick WHERE tick.symbol = asset.symbol) AS newest"
    " FROM assets asset WHERE asset.active"
)


class StalenessTracker:
    def __init__(self, stale_after_s: float) -> None:
        self.stale_after_s = stale_after_s
        STALE_AFTER.set(stale_after_s)
        self._newest: dict[str, float] = {}  # symbol -> epoch seconds

    def observe(self, symbol: str, ts: datetime) -> None:
        epoch = ts.timestamp()
        known = self._newest.get(symbol)
        if known is None:
            self._newest[symbol] = epoch
            TICK_AGE.labels(symbol).set_function(partial(self._age_or_zero, symbol))
        elif epoch > known:
            self._newest[symbol] = epoch

    def _age_or_zero(self, symbol: str) -> float:
        return self.age(symbol) or 0.0

    def age(self, symbol: str, now: float | None = None) -> float | None:
        newest = self._newest.get(symbol)
        if newest is None:
            return None
        return max(0.0, (now if now is not None else time.time()) - newest)

    def ages(self, now: float | None = None) -> dict[str, float]:
        current = now if now is not None else time.time()
        return {
            symbol: round(max(0.0, current - seen), 3)
            for symbol, seen in sorted(self._newest.items())
        }

    def stale(self, now: float | None = None) -> list[str]:
        return [symbol for symbol, age in self.ages(now).items() if age > self.stale_after_s]

    def refresh_from_db(self, engine: Engine) -> None:
        with engine.connect() as conn:
            for symbol, newest in conn.execute(NEWEST_SQL):
                if newest is not None:
                    self.observe(symbol, newest)

    def summary(self, now: float | None = None) -> dict[str, object]:
        ages = self.ages(now)
        return {
            "tick_age_seconds": ages,
            "stale_symbols": [symbol for symbol, age in ages.items() if age > self.stale_after_s],
            "stale_after_seconds": self.stale_after_s,
            "newest_tick": (
                datetime.fromtimestamp(max(self._newest.values()), UTC).isoformat()
                if self._newest
                else None
            ),
        }
