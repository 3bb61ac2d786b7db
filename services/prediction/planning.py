"""Which bars need a forecast: steps 2-3 of ``services.prediction.engine`` and the
re-forecast on promotion.

* :meth:`ForecastPlanner.wait_stored` waits (unbounded, interruptible) until the writer has
  stored, for every symbol with work, the tick that closed its bar (the writer race).
* :meth:`ForecastPlanner.resolve` turns the tracker's plans into :class:`Job` s: closed
  bars, the latest closed bar when late data changed it, and on resume the newest bar before
  the first tick unless its forecast is already stored. Bars older than the newest stored
  forecast are skipped; during catch-up a bar whose every target has closed is forecast only
  when it is the newest of its key. It also answers the closed bars whose forecasts are to
  be scored (``targets``).
* :meth:`ForecastPlanner.resolve_reforecast` turns queued :class:`Reforecast` s into jobs:
  the newest forecast bar of every affected key this replica owns whose stored forecast is
  not from the serving champion.

``newest`` (per key, the newest forecast bar stored; read from the database on first use)
is shared with ``services.prediction.results``, which advances it after each write.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from ml.errors import PricecastError
from services.common.config import Settings
from services.common.metrics import FORECAST_ERRORS
from services.prediction import store
from services.prediction.champions import ModelProvider
from services.prediction.clock import as_utc, bucket, horizons, is_stale
from services.prediction.tracker import BarTracker, Key, KeyPlan

log = logging.getLogger(__name__)


class Interrupted(PricecastError):
    """Stop was requested while the batch waited; nothing of it is committed."""


@dataclass(frozen=True)
class Job:
    symbol: str
    interval: str
    as_of: datetime
    reason: str  # close | late | resume | promotion


@dataclass(frozen=True)
class Reforecast:
    """Re-forecast the newest bar of ``symbols`` (None: every active symbol whose history
    reaches the LSTM threshold) for ``interval`` with the current champion."""

    interval: str
    symbols: frozenset[str] | None


Targets = dict[Key, set[datetime]]  # closed bars per key whose forecasts are scored


@dataclass
class ForecastPlanner:
    settings: Settings
    db: Engine
    provider: ModelProvider
    tracker: BarTracker
    newest: dict[Key, datetime | None] = field(default_factory=dict)
    # symbols whose closing tick the writer has not stored yet
    waiting: set[str] = field(default_factory=set)

    # ------------------------------------------------------------------ writer race
    async def wait_stored(self, plans: dict[Key, KeyPlan], stop: asyncio.Event | None) -> None:
        needs: dict[str, datetime] = {}
        for plan in plans.values():
            if plan.need_ts is not None:
                previous = needs.get(plan.symbol)
                needs[plan.symbol] = (
                    plan.need_ts if previous is None else max(previous, plan.need_ts)
                )
        delay, started, warned = 0.01, time.monotonic(), 0.0
        while True:
            missing = await asyncio.to_thread(self._unstored, needs)
            if not missing:
                self.waiting = set()
                return
            self.waiting = missing
            waited = time.monotonic() - started
            if waited - warned >= self.settings.prediction_writer_wait_s:
                warned = waited
                FORECAST_ERRORS.labels("writer_behind").inc()
                log.warning(
                    "%d symbols wait %.0fs for the writer to store their closing ticks "
                    "(e.g. %s); offsets stay uncommitted",
                    len(missing),
                    waited,
                    sorted(missing)[:5],
                )
            if stop is not None and stop.is_set():
                raise Interrupted("stopped while waiting for the writer")
            await asyncio.sleep(delay)
            delay = min(delay * 1.5, 0.2)

    def _unstored(self, needs: dict[str, datetime]) -> set[str]:
        with self.db.connect() as conn:
            return store.unstored(conn, needs)

    # ------------------------------------------------------------------------ batch
    def resolve(self, plans: dict[Key, KeyPlan], now: datetime) -> tuple[list[Job], Targets]:
        jobs: list[Job] = []
        targets: Targets = {}
        with self.db.connect() as conn:
            for key, plan in plans.items():
                jobs.extend(self._resolve_key(conn, key, plan, now, targets.setdefault(key, set())))
        return jobs, targets

    def _resolve_key(
        self, conn: sa.Connection, key: Key, plan: KeyPlan, now: datetime, settled: set[datetime]
    ) -> list[Job]:
        """The jobs of one key; adds the bars to score to ``settled``."""
        symbol, interval = key
        n_horizons = horizons(self.settings, interval)
        if key not in self.newest:
            self.newest[key] = store.newest_as_of(conn, symbol, interval)
        newest = self.newest[key]
        wanted: dict[datetime, str] = {}
        if plan.resume_before is not None:
            previous_tick = store.previous_tick_ts(conn, symbol, plan.resume_before)
            if previous_tick is not None:
                resumed = bucket(previous_tick, interval)
                self.tracker.resolve_resume(key, resumed)
                settled.add(resumed)
                done = newest is not None and (
                    resumed < newest
                    or (
                        resumed == newest
                        and store.forecast_complete(conn, *key, resumed, n_horizons)
                    )
                )
                if not done:
                    wanted[resumed] = "resume"
        for closed in plan.closed:
            wanted[closed] = "close"
            settled.add(closed)
        if plan.refresh:
            settled.update(plan.changed)
            last = self.tracker.last_closed(key)
            if last is not None:
                wanted.setdefault(last, "late")
        ordered = sorted(wanted)
        jobs = []
        for as_of in ordered:
            if newest is not None and as_of < newest:
                continue  # a newer forecast is already stored
            if as_of != ordered[-1] and is_stale(as_of, interval, n_horizons, now):
                continue  # catch-up: every target already closed
            jobs.append(Job(symbol, interval, as_of, wanted[as_of]))
        return jobs

    # -------------------------------------------------------------------- promotion
    def resolve_reforecast(
        self, requests: Sequence[Reforecast], owns: Callable[[str], bool] | None
    ) -> list[Job]:
        wanted: dict[str, set[str] | None] = {}
        for request in requests:
            if request.symbols is None or wanted.get(request.interval, set()) is None:
                wanted[request.interval] = None
            else:
                current = wanted.setdefault(request.interval, set())
                assert current is not None
                current.update(request.symbols)
        jobs: list[Job] = []
        with self.db.connect() as conn:
            for interval, named in sorted(wanted.items()):
                symbols = (
                    store.symbols_with_history(conn, interval, self.settings.min_history_days_lstm)
                    if named is None
                    else sorted(named)
                )
                symbols = [symbol for symbol in symbols if owns is None or owns(symbol)]
                stored = store.newest_versions(conn, symbols, interval)
                for symbol in symbols:
                    if symbol not in stored:
                        continue  # never forecast: its first forecast uses the champion
                    as_of, version = stored[symbol]
                    champion = self.provider.champion(symbol, interval)
                    if champion is not None and champion.version.label == version:
                        continue  # already served by this version
                    jobs.append(Job(symbol, interval, as_utc(as_of), "promotion"))
        return jobs
