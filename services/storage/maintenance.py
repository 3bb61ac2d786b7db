"""Periodic storage upkeep and the storage part of health/doctor reports.

``storage_status`` is what ``/health/detailed`` and ``pricecast doctor`` show (active path,
aggregate lag, whether bar maintenance runs, age of the newest daily bar, days of backfilled
ticks not yet materialised, the retention horizon and the late ticks ignored behind it).
``maintenance_loop`` runs :func:`maintenance_once` periodically: TimescaleDB path:
materialise backfilled days, then drop old tick chunks (never those of days not yet
materialised); plain path: delete old ticks (after recording the horizon). Then it refreshes
the storage gauges. The ingestion service runs the loop in its writer role (every writer
replica; a database advisory lock lets one round run at a time); ``pricecast storage
maintain`` runs one round. On TimescaleDB the database job ``pricecast_storage_job``
(migration 0003) does the same on its own schedule, so the bars are safe even where no worker
runs this loop.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import math
from collections.abc import Callable
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from services.common.config import Settings
from services.common.metrics import AGGREGATE_LAG, BAR_AGE
from services.storage.materialize import backlog, materialize_backfill
from services.storage.path import aggregate_lag, bar_maintenance_enabled, storage_path
from services.storage.retention import drop_old_chunks, drop_old_ticks

log = logging.getLogger(__name__)

_DAY_BAR_AGE = "SELECT extract(epoch FROM now() - max(bucket))::float8 FROM price_1d"
_META = """
SELECT (SELECT value::timestamptz FROM pricecast_meta WHERE key = 'ticks_dropped_before'),
       (SELECT value::bigint FROM pricecast_meta WHERE key = 'late_ticks_ignored')
"""
# Session-level advisory lock held for a whole round: one round at a time across the
# writer replicas (and `pricecast storage maintain`) sharing a database.
_LOCK_KEY = "hashtext('pricecast.storage.maintenance')"


def storage_status(conn: sa.Connection) -> dict[str, Any]:
    """Path, aggregate lag (seconds), maintenance state, newest daily bar's age, the backlog
    of backfilled days not yet materialised (always 0 on the plain path), how far retention
    deleted ticks (``ticks_dropped_before``, ISO time or None) and ``late_ticks_ignored``:
    ticks that arrived older than that horizon and were discarded (plain path; None on
    TimescaleDB, which does not count them: its server log has a WARNING per day)."""
    lag = aggregate_lag(conn)
    day_age = conn.execute(sa.text(_DAY_BAR_AGE)).scalar()
    pending = backlog(conn)
    path = storage_path(conn)
    horizon, late = conn.execute(sa.text(_META)).one()
    return {
        "storage_path": path,
        "aggregate_lag_s": None if math.isinf(lag) else round(lag, 3),
        "bars_missing": math.isinf(lag),
        "bar_maintenance": bar_maintenance_enabled(conn),
        "newest_1d_bar_age_s": None if day_age is None else round(float(day_age), 1),
        "unmaterialized_days": pending.days,
        "oldest_unmaterialized_day": (
            None if pending.oldest_day is None else pending.oldest_day.isoformat()
        ),
        "ticks_dropped_before": None if horizon is None else horizon.isoformat(),
        "late_ticks_ignored": None if path == "timescaledb" else int(late or 0),
    }


def maintenance_once(
    engine: Engine, settings: Settings, *, should_stop: Callable[[], bool] | None = None
) -> dict[str, Any]:
    """One round: materialise backfilled days, tick retention, the storage gauges; returns
    what it did (``days_materialized`` and ``chunks_dropped`` are 0 on the plain path,
    ``ticks_deleted`` is 0 on TimescaleDB). Materialisation runs first so that retention
    can drop what it just materialised.

    One round at a time per database: the round holds a session advisory lock
    (``pg_try_advisory_lock``) on a connection of its own; when another replica holds it,
    nothing is done and ``{"skipped": True, "reason": ...}`` is returned. The lock goes with
    its session, so a crashed holder never blocks later rounds. ``should_stop`` is passed to
    the plain-path deletion (checked between batches).
    """
    with engine.connect() as lock_conn:
        if not lock_conn.execute(sa.text(f"SELECT pg_try_advisory_lock({_LOCK_KEY})")).scalar():
            lock_conn.rollback()
            log.info("storage maintenance: another round is running elsewhere; skipped")
            return {"skipped": True, "reason": "another maintenance round holds the lock"}
        lock_conn.commit()  # session lock: no transaction left open while the round runs
        try:
            result = _round(engine, settings, should_stop)
        finally:
            try:
                lock_conn.execute(sa.text(f"SELECT pg_advisory_unlock({_LOCK_KEY})"))
                lock_conn.commit()
            except sa.exc.SQLAlchemyError:
                lock_conn.invalidate()  # closing the session releases the lock
    return result


def _round(
    engine: Engine, settings: Settings, should_stop: Callable[[], bool] | None
) -> dict[str, Any]:
    materialized = materialize_backfill(engine)
    chunks = drop_old_chunks(engine, settings.tick_retention_days)
    deleted = drop_old_ticks(engine, settings.tick_retention_days, should_stop=should_stop)
    with engine.connect() as conn:
        status = storage_status(conn)
    lag = status["aggregate_lag_s"]
    AGGREGATE_LAG.set(float("inf") if lag is None else lag)
    if status["newest_1d_bar_age_s"] is not None:
        BAR_AGE.labels(interval="1d").set(status["newest_1d_bar_age_s"])
    return {
        **status,
        "skipped": False,
        "days_materialized": materialized,
        "chunks_dropped": chunks,
        "ticks_deleted": deleted,
    }


async def maintenance_loop(
    engine: Engine,
    settings: Settings,
    stop: asyncio.Event,
    *,
    initial_delay_s: float = 0.0,
    on_round: Callable[[dict[str, Any] | None, BaseException | None], None] | None = None,
) -> None:
    """Run :func:`maintenance_once` every ``storage_maintenance_interval_s`` until ``stop``,
    the first round after ``initial_delay_s``.

    A failing round (database away, lock or statement timeout, anything) is logged and
    retried next round: the loop itself never ends before ``stop``, so the service running
    it is not affected. ``on_round(result, error)`` is told the outcome of every round (for
    health details). A round in progress when ``stop`` is set ends after its current
    deletion batch.
    """
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stop.wait(), timeout=initial_delay_s)
    while not stop.is_set():
        result: dict[str, Any] | None = None
        error: BaseException | None = None
        try:
            result = await asyncio.to_thread(
                maintenance_once, engine, settings, should_stop=stop.is_set
            )
        except Exception as exc:  # any failure: logged, retried next round
            error = exc
            log.exception("storage maintenance failed; retrying next round")
        if on_round is not None:
            on_round(result, error)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), timeout=settings.storage_maintenance_interval_s)


def main(args: argparse.Namespace) -> int:
    """``pricecast storage maintain``: one round, printed as JSON."""
    from services.common.config import get_settings
    from services.common.db import make_engine

    settings = get_settings()
    engine = make_engine(settings)
    try:
        print(json.dumps(maintenance_once(engine, settings)))
    finally:
        engine.dispose()
    return 0
