"""Which storage path is active and how far the bars are behind the raw ticks.

Used by ``pricecast doctor`` and ``/health/detailed``.
"""

from __future__ import annotations

from typing import Literal

import sqlalchemy as sa

StoragePath = Literal["timescaledb", "postgres"]
TRIGGER_NAME = "pricecast_bars_maintain"


def recorded_storage_path(conn: sa.Connection) -> str | None:
    """``pricecast_meta.storage_path`` as migration 0002 recorded it (None: not recorded)."""
    value = conn.execute(
        sa.text("SELECT value FROM pricecast_meta WHERE key = 'storage_path'")
    ).scalar()
    return None if value is None else str(value)


def storage_path(conn: sa.Connection) -> StoragePath:
    """The path recorded by migration 0002 (``pricecast_meta.storage_path``)."""
    value = recorded_storage_path(conn)
    if value not in ("timescaledb", "postgres"):
        raise RuntimeError("storage path not recorded: run `pricecast migrate`")
    return "timescaledb" if value == "timescaledb" else "postgres"


def bar_maintenance_enabled(conn: sa.Connection) -> bool:
    """Plain path: whether the trigger that maintains the bars fires. TimescaleDB: whether
    the 1m refresh policy job is scheduled."""
    if storage_path(conn) == "postgres":
        state = conn.execute(
            sa.text(
                "SELECT tgenabled FROM pg_trigger "
                "WHERE tgname = :trigger AND tgrelid = 'price_ticks'::regclass"
            ),
            {"trigger": TRIGGER_NAME},
        ).scalar()
        return state is not None and state != "D"
    scheduled = conn.execute(
        sa.text(
            "SELECT bool_and(scheduled) FROM timescaledb_information.jobs "
            "WHERE proc_name = 'policy_refresh_continuous_aggregate'"
        )
    ).scalar()
    return bool(scheduled)


# The symbols of price_ticks by a loose index scan (one probe of the (symbol, ts) index per
# symbol; a plain DISTINCT would read the table), as the CTE ``syms``.
SYMBOLS_CTE = """
WITH RECURSIVE syms(symbol) AS (
    (SELECT symbol FROM price_ticks ORDER BY symbol LIMIT 1)
    UNION ALL
    SELECT (SELECT p.symbol FROM price_ticks p WHERE p.symbol > s.symbol
            ORDER BY p.symbol LIMIT 1)
    FROM syms s WHERE s.symbol IS NOT NULL
)
"""

# Newest tick and newest 1m bar per symbol, via one index probe each (a plain max(ts) would
# scan the table).
_PLAIN_LAG = f"""{SYMBOLS_CTE}SELECT coalesce(max(CASE WHEN b.bucket IS NULL THEN 'Infinity'::float8
           ELSE greatest(0, extract(epoch FROM
                date_bin('1 minute', t.ts, TIMESTAMPTZ '2000-01-01 00:00:00+00') - b.bucket
           )::float8) END), 0)
FROM syms
CROSS JOIN LATERAL (SELECT ts FROM price_ticks p WHERE p.symbol = syms.symbol
                    ORDER BY ts DESC LIMIT 1) t
LEFT JOIN LATERAL (SELECT bucket FROM pricecast_bars_1m m WHERE m.symbol = syms.symbol
                   ORDER BY bucket DESC LIMIT 1) b ON true
WHERE syms.symbol IS NOT NULL
"""

# Materialisation watermark of the 1m continuous aggregate versus the newest tick. Reads
# stay fresh through real-time aggregation; this says how much of it is computed at read time.
_TIMESCALE_LAG = """
SELECT coalesce(greatest(0, extract(epoch FROM
           (SELECT max(ts) FROM price_ticks)
           - _timescaledb_functions.to_timestamp(
                 _timescaledb_functions.cagg_watermark(ca.mat_hypertable_id)))), 0)
FROM _timescaledb_catalog.continuous_agg ca
WHERE ca.user_view_name = 'pricecast_cagg_1m'
"""


def aggregate_lag(conn: sa.Connection) -> float:
    """Seconds the bars are behind the raw ticks.

    Plain path: the trigger updates bars in the tick's own transaction, so this is 0 unless
    maintenance was disabled (then it is the gap between the newest tick's minute and the
    newest 1m bar, worst symbol). TimescaleDB: newest tick minus the 1m materialisation
    watermark (bounded by the refresh policy; reads include the rest in real time).
    An infinite value means ticks exist without any bar.
    """
    sql = _PLAIN_LAG if storage_path(conn) == "postgres" else _TIMESCALE_LAG
    value = conn.execute(sa.text(sql)).scalar()
    return float(value or 0.0)
