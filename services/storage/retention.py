"""Retention of raw ticks: ticks older than ``tick_retention_days`` go, bars stay.

TimescaleDB: :func:`drop_old_chunks` (and the daily ``pricecast_storage_job`` of migration
0003, which replaced 0002's retention policy) drops whole chunks older than the cutoff, but
never past the oldest day whose ticks are not yet materialised into the bars (see
:mod:`services.storage.materialize`); the continuous aggregates keep their bars. Plain
PostgreSQL: :func:`drop_old_ticks` deletes in bounded batches per symbol (index range on
(symbol, ts)), one short transaction per batch so it never holds long locks against the
writer. Bars are maintained on INSERT only, so deleting ticks leaves them untouched.

Both paths record how far ticks were deleted in ``pricecast_meta.ticks_dropped_before``
(the horizon; it only moves forward). Ticks older than the horizon that arrive later (a
Kafka re-delivery, a backfill run again) never change the bars and are not kept: their
originals may have been merged already, and ``ON CONFLICT`` cannot see deleted rows
(migrations 0003 and 0004; plain path: counted in ``pricecast_meta.late_ticks_ignored``).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from services.storage.path import SYMBOLS_CTE, storage_path

log = logging.getLogger(__name__)

# Symbols having ticks older than :cutoff: loose index scan over the symbols, then one
# probe of the (symbol, ts) index each.
_SYMBOLS_WITH_OLD_TICKS = f"""{SYMBOLS_CTE}SELECT symbol FROM syms
WHERE symbol IS NOT NULL
  AND EXISTS (SELECT 1 FROM price_ticks p WHERE p.symbol = syms.symbol AND p.ts < :cutoff)
"""

_DELETE_BATCH = """
DELETE FROM price_ticks WHERE ctid = ANY (ARRAY(
    SELECT ctid FROM price_ticks WHERE symbol = :symbol AND ts < :cutoff LIMIT :batch_size
))
"""

# Same upsert as pricecast_drop_old_ticks (0003): the horizon never moves back.
_RECORD_HORIZON = """
INSERT INTO pricecast_meta AS m (key, value)
VALUES ('ticks_dropped_before', CAST(:cutoff AS timestamptz)::text)
ON CONFLICT (key) DO UPDATE
   SET value = GREATEST(m.value::timestamptz, EXCLUDED.value::timestamptz)::text,
       updated_at = now()
"""


def retention_cutoff(retention_days: int, now: datetime | None = None) -> datetime:
    if retention_days < 1:
        raise ValueError("tick_retention_days must be >= 1")
    return (now or datetime.now(UTC)) - timedelta(days=retention_days)


def drop_old_ticks(
    engine: Engine,
    retention_days: int,
    *,
    now: datetime | None = None,
    batch_size: int = 20_000,
    should_stop: Callable[[], bool] | None = None,
) -> int:
    """Delete ticks older than the retention window on the plain path; returns how many.

    When there is anything to delete, the cutoff is first committed as the horizon
    ``pricecast_meta.ticks_dropped_before`` (kept if already later), and only then are the
    ticks deleted: every insert that can still meet a deleted tick's key runs after that
    commit, so its bar trigger (0004) sees the horizon and ignores the tick instead of
    merging it a second time. Nothing to delete: the horizon is left alone, so history older
    than the window can still be loaded into a database where retention never deleted
    anything. ``should_stop`` is checked between batches (a stopping service does not wait
    for a long sweep; the rest goes next round).

    On TimescaleDB this does nothing and returns 0: see :func:`drop_old_chunks`.
    """
    cutoff = retention_cutoff(retention_days, now)
    with engine.connect() as conn:
        if storage_path(conn) == "timescaledb":
            return 0
        symbols = [
            row[0] for row in conn.execute(sa.text(_SYMBOLS_WITH_OLD_TICKS), {"cutoff": cutoff})
        ]
    if not symbols:
        return 0
    with engine.begin() as conn:
        conn.execute(sa.text(_RECORD_HORIZON), {"cutoff": cutoff})
    deleted = 0
    for symbol in symbols:
        while not (should_stop is not None and should_stop()):
            with engine.begin() as conn:
                batch_deleted = conn.execute(
                    sa.text(_DELETE_BATCH),
                    {"symbol": symbol, "cutoff": cutoff, "batch_size": batch_size},
                ).rowcount
            deleted += batch_deleted
            if batch_deleted < batch_size:
                break
    if deleted:
        log.info("retention: deleted %d ticks older than %s", deleted, cutoff.isoformat())
    return deleted


def drop_old_chunks(engine: Engine, retention_days: int, *, now: datetime | None = None) -> int:
    """TimescaleDB: drop the tick chunks older than the retention window; returns how many.

    First the continuous aggregates are refreshed over ``[ticks_dropped_before, cutoff)``, the
    ticks about to go (see :func:`materialize_before_drop`); then ``pricecast_drop_old_ticks``
    (migration 0003) drops the chunks, keeping every chunk reaching into a day still waiting
    for materialisation, and records how far ticks were dropped
    (``pricecast_meta.ticks_dropped_before``). Returns 0 on the plain path (see
    :func:`drop_old_ticks`).
    """
    cutoff = retention_cutoff(retention_days, now)
    with engine.connect() as conn:
        if storage_path(conn) != "timescaledb":
            return 0
    materialize_before_drop(engine, cutoff)
    with engine.begin() as conn:
        dropped = int(
            conn.execute(
                sa.text("SELECT pricecast_drop_old_ticks(:cutoff)"), {"cutoff": cutoff}
            ).scalar_one()
        )
    if dropped:
        log.info("retention: dropped %d tick chunk(s) older than %s", dropped, cutoff.isoformat())
    return dropped


# Bucket widths of the continuous aggregates, finest first (each level reads the one before).
_CAGG_LEVELS = (
    ("pricecast_cagg_1m", timedelta(minutes=1)),
    ("pricecast_cagg_1h", timedelta(hours=1)),
    ("pricecast_cagg_1d", timedelta(days=1)),
)


def materialize_before_drop(engine: Engine, cutoff: datetime) -> None:
    """TimescaleDB: roll the ticks older than ``cutoff`` up into every bar level before their
    chunks are dropped.

    The refresh policies only cover their window (the migration-time retention minus a day),
    and the backfill bookkeeping of 0003 only books days below that window. A retention run
    with a shorter ``tick_retention_days`` than the migration's would otherwise drop ticks that
    were never materialised. The refresh starts at ``ticks_dropped_before``: below it the raw
    ticks are gone, and refreshing a bucket there would rebuild it from nothing. Buckets are
    refreshed only where invalidated or never materialised, so a repeated run costs little.
    """
    with engine.connect() as conn:
        start = conn.execute(
            sa.text(
                "SELECT value::timestamptz FROM pricecast_meta WHERE key = 'ticks_dropped_before'"
            )
        ).scalar()
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        for cagg, width in _CAGG_LEVELS:
            if start is not None and cutoff - start < width:
                continue  # no whole bucket in the window
            conn.execute(
                sa.text(
                    "CALL refresh_continuous_aggregate(CAST(:cagg AS regclass),"
                    " CAST(:start AS timestamptz), CAST(:end AS timestamptz))"
                ),
                {"cagg": cagg, "start": start, "end": cutoff},
            )
