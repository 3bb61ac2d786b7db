"""Bars of ticks stored below the TimescaleDB refresh window (history backfill, late data).

TimescaleDB path: the continuous aggregates' refresh policies only cover the last
``tick_retention_days - 1`` days and real-time aggregation only covers data above the
materialisation watermark, so older ticks would never reach price_1m/1h/1d (and retention
would then drop them). Migration 0003 bookkeeps the UTC days of such ticks in
``pricecast_unmaterialized_days`` (statement trigger on ``price_ticks``);
:func:`materialize_backfill` refreshes them 1m -> 1h -> 1d and clears them, and retention
(:func:`services.storage.retention.drop_old_chunks`) never drops ticks of a pending day.

The database job ``pricecast_storage_job`` does the same every 10 minutes; call
:func:`materialize_backfill` (or :func:`materialize_backfill_for`) after loading history to
have the bars right away. Plain PostgreSQL path: bars are maintained in the inserting
transaction, so these are no-ops returning 0.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from services.common.config import Settings
from services.storage.path import storage_path

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Backlog:
    """Days of ticks not yet materialised (TimescaleDB path; always empty on the plain one)."""

    days: int
    oldest_day: datetime | None


def materialize_backfill(engine: Engine) -> int:
    """Materialise every pending day into price_1m, then price_1h, then price_1d; returns
    how many days were refreshed (0 on the plain path or when nothing is pending).

    Runs ``CALL pricecast_materialize_backfill()`` on an autocommit connection (the
    refresh procedure cannot run inside a transaction block), without statement timeout
    (a year of history takes seconds to minutes); one transaction per run of at most 31
    consecutive days. Days written again while it runs stay pending for the next call.
    Days older than what retention already dropped are discarded with a server WARNING
    (refreshing them would delete their bars). Safe to run concurrently with writers.
    """
    with engine.connect() as conn:
        if storage_path(conn) != "timescaledb":
            return 0
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        conn.execute(sa.text("SET statement_timeout = 0"))
        try:
            days = conn.execute(sa.text("CALL pricecast_materialize_backfill(NULL)")).scalar()
        finally:
            conn.execute(sa.text("RESET statement_timeout"))
    done = int(days or 0)
    if done:
        log.info("materialised bars of %d backfilled day(s)", done)
    return done


def materialize_backfill_for(settings: Settings) -> int:
    """:func:`materialize_backfill` on a short-lived engine for ``settings.database_url``
    (for callers without an engine, e.g. ``pricecast backfill`` once the writer stored
    the history)."""
    from services.common.db import make_engine

    engine = make_engine(settings, pool_size=1)
    try:
        return materialize_backfill(engine)
    finally:
        engine.dispose()


def backlog(conn: sa.Connection) -> Backlog:
    """How many days wait for :func:`materialize_backfill`, and the oldest of them."""
    if storage_path(conn) != "timescaledb":
        return Backlog(0, None)
    row = conn.execute(
        sa.text("SELECT count(*), min(day) FROM pricecast_unmaterialized_days")
    ).one()
    return Backlog(int(row[0]), row[1])
