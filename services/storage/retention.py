"""Retention of raw ticks: ticks older than ``tick_retention_days`` go, bars stay.

TimescaleDB: the retention policy created by migration 0002 drops whole chunks; the
continuous aggregates keep their bars. Plain PostgreSQL: :func:`drop_old_ticks` deletes in
bounded batches per symbol (index range on (symbol, ts)), one short transaction per batch so
it never holds long locks against the writer. Bars are maintained on INSERT only, so deleting
ticks leaves them untouched.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime, timedelta

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from services.storage.path import storage_path

log = logging.getLogger(__name__)

_SYMBOLS = """
WITH RECURSIVE syms(symbol) AS (
    (SELECT symbol FROM price_ticks ORDER BY symbol LIMIT 1)
    UNION ALL
    SELECT (SELECT p.symbol FROM price_ticks p WHERE p.symbol > s.symbol
            ORDER BY p.symbol LIMIT 1)
    FROM syms s WHERE s.symbol IS NOT NULL
)
SELECT symbol FROM syms WHERE symbol IS NOT NULL
"""

_DELETE_BATCH = """
DELETE FROM price_ticks WHERE ctid = ANY (ARRAY(
    SELECT ctid FROM price_ticks WHERE symbol = :symbol AND ts < :cutoff LIMIT :n
))
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
) -> int:
    """Delete ticks older than the retention window on the plain path; returns how many.

    On TimescaleDB this does nothing and returns 0: the retention policy job drops chunks.
    """
    cutoff = retention_cutoff(retention_days, now)
    with engine.connect() as conn:
        if storage_path(conn) == "timescaledb":
            return 0
        symbols = [row[0] for row in conn.execute(sa.text(_SYMBOLS))]
    deleted = 0
    for symbol in symbols:
        while True:
            with engine.begin() as conn:
                n = conn.execute(
                    sa.text(_DELETE_BATCH), {"symbol": symbol, "cutoff": cutoff, "n": batch_size}
                ).rowcount
            deleted += n
            if n < batch_size:
                break
    if deleted:
        log.info("retention: deleted %d ticks older than %s", deleted, cutoff.isoformat())
    return deleted
