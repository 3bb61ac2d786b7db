"""Time-series storage: bar relations price_1m, price_1h, price_1d on one of two paths.

* TimescaleDB (when the extension can be created): ``price_ticks`` and ``predictions`` become
  hypertables; hierarchical continuous aggregates 1m (from ticks) -> 1h (from 1m) -> 1d
  (from 1h) with refresh policies and real-time aggregation; ticks are compressed after
  ``tick_compress_after_days`` (segmented by symbol) and dropped after ``tick_retention_days``.
* Plain PostgreSQL: tables maintained incrementally by a statement-level AFTER INSERT trigger
  on ``price_ticks``. The trigger aggregates only the rows the statement really inserted (the
  transition table; ``ON CONFLICT DO NOTHING`` duplicates are not in it) and merges them into
  the touched buckets of all three levels. Every bar keeps mergeable state (first/last tick
  key, sums), so late ticks correct their bucket without re-reading raw ticks, and bars stay
  when retention deletes ticks.

On both paths ``price_1m``/``price_1h``/``price_1d`` are views with the same columns:
symbol, bucket, open, high, low, close, volume, trade_count, vwap. Open/close are the prices of
the earliest/latest tick by (ts, source) (source compared bytewise, collation "C"). The active path is recorded in ``pricecast_meta``
under ``storage_path``. ``PRICECAST_STORAGE_PATH=auto|timescaledb|postgres`` chooses.
"""

from __future__ import annotations

import logging

import sqlalchemy as sa
from alembic import op

from services.common.config import Settings
from services.storage.path import recorded_storage_path

revision = "0002_storage"
down_revision = "0001_core"

log = logging.getLogger("alembic.runtime.migration")

ORIGIN = "TIMESTAMPTZ '2000-01-01 00:00:00+00'"
LEVELS = (("1m", "1 minute"), ("1h", "1 hour"), ("1d", "1 day"))
PUBLIC_COLUMNS = "symbol, bucket, open, high, low, close, volume, trade_count, vwap"


# --------------------------------------------------------------------------------------
# plain PostgreSQL path
# --------------------------------------------------------------------------------------
def _merge_set() -> str:
    """ON CONFLICT update that folds a delta bar (EXCLUDED) into the stored bar (b)."""
    newer_open = "(EXCLUDED.open_ts, EXCLUDED.open_src) < (b.open_ts, b.open_src)"
    newer_close = "(EXCLUDED.close_ts, EXCLUDED.close_src) > (b.close_ts, b.close_src)"
    return f"""
        open = CASE WHEN {newer_open} THEN EXCLUDED.open ELSE b.open END,
        open_src = CASE WHEN {newer_open} THEN EXCLUDED.open_src ELSE b.open_src END,
        open_ts = LEAST(b.open_ts, EXCLUDED.open_ts),
        high = GREATEST(b.high, EXCLUDED.high),
        low = LEAST(b.low, EXCLUDED.low),
        close = CASE WHEN {newer_close} THEN EXCLUDED.close ELSE b.close END,
        close_src = CASE WHEN {newer_close} THEN EXCLUDED.close_src ELSE b.close_src END,
        close_ts = GREATEST(b.close_ts, EXCLUDED.close_ts),
        volume = b.volume + EXCLUDED.volume,
        trade_count = b.trade_count + EXCLUDED.trade_count,
        pv = b.pv + EXCLUDED.pv"""


def _upsert(level: str, source: str) -> str:
    cols = "symbol, bucket, open, open_ts, open_src, high, low, close, close_ts, close_src, "
    cols += "volume, trade_count, pv"
    return f"""
        INSERT INTO pricecast_bars_{level} AS b ({cols})
        SELECT symbol, bucket, (o).price, (o).ts, (o).source, high, low,
               (c).price, (c).ts, (c).source, volume, trade_count, pv
        FROM {source} ORDER BY symbol, bucket
        ON CONFLICT (symbol, bucket) DO UPDATE SET {_merge_set()}"""


def _delta_rollup(width: str, finer: str) -> str:
    """The deltas of ``finer`` (a CTE of deltas one level down) rolled into ``width`` buckets."""
    return f"""
        SELECT symbol, date_bin('{width}', bucket, {ORIGIN}) AS bucket,
               (array_agg(o ORDER BY bucket))[1] AS o,
               (array_agg(c ORDER BY bucket DESC))[1] AS c,
               max(high) AS high, min(low) AS low, sum(volume) AS volume,
               sum(trade_count)::bigint AS trade_count, sum(pv) AS pv
        FROM {finer} GROUP BY 1, 2"""


def _rollup_statement(ticks: str) -> str:
    """One statement: aggregate the tick set ``ticks`` into 1m deltas, roll those into 1h
    and 1d deltas, and merge each level into its table (upserts ordered by key, so
    concurrent writers lock buckets in the same order)."""
    return f"""
    WITH m AS (
        -- one sort of the batch by (symbol, minute, ts, source); window aggregates over
        -- each minute give the first/last tick and the sums; no join, so no plan can go
        -- quadratic whatever the batch looks like.
        SELECT DISTINCT ON (symbol, bucket) symbol, bucket,
               first_value(ROW(ts, source, price)::pricecast_pt) OVER w AS o,
               last_value(ROW(ts, source, price)::pricecast_pt) OVER w AS c,
               max(price) OVER w AS high, min(price) OVER w AS low,
               sum(volume) OVER w AS volume, count(*) OVER w AS trade_count,
               sum(price * volume) OVER w AS pv
        FROM (
            SELECT symbol, ts, source, price, volume,
                   date_bin('1 minute', ts, {ORIGIN}) AS bucket
            FROM {ticks} x
        ) t
        WINDOW w AS (PARTITION BY symbol, bucket ORDER BY ts, source COLLATE "C"
                     ROWS BETWEEN UNBOUNDED PRECEDING AND UNBOUNDED FOLLOWING)
        ORDER BY symbol, bucket
    ), up_m AS ({_upsert("1m", "m")}
    ), h AS ({_delta_rollup("1 hour", "m")}
    ), up_h AS ({_upsert("1h", "h")}
    ), d AS ({_delta_rollup("1 day", "h")}
    ){_upsert("1d", "d")}"""


def _plain_upgrade() -> None:
    op.execute(
        'CREATE TYPE pricecast_pt AS (ts timestamptz, source text COLLATE "C", price double precision)'
    )
    for level, _ in LEVELS:
        # 1h/1d: the key covers the read columns, so a long range (a year of hourly bars is
        # 8,760 rows, one per heap page as bars of all symbols interleave in time) is an
        # index-only scan of ~100 leaf pages instead of ~8,800 heap pages (~4x faster).
        # Their updates are then not HOT (one index tuple per touched bar per batch: ~100
        # per batch, cheap); 1m keeps HOT updates (most writes, short reads).
        cover = (
            "" if level == "1m" else (" INCLUDE (open, high, low, close, volume, trade_count, pv)")
        )
        op.execute(
            f"""
            CREATE TABLE pricecast_bars_{level} (
                symbol      text NOT NULL,
                bucket      timestamptz NOT NULL,
                open        double precision NOT NULL,
                open_ts     timestamptz NOT NULL,
                open_src    text COLLATE "C" NOT NULL,
                high        double precision NOT NULL,
                low         double precision NOT NULL,
                close       double precision NOT NULL,
                close_ts    timestamptz NOT NULL,
                close_src   text COLLATE "C" NOT NULL,
                volume      double precision NOT NULL,
                trade_count bigint NOT NULL,
                pv          double precision NOT NULL,
                PRIMARY KEY (symbol, bucket){cover}
            ) WITH (fillfactor = 80);
            COMMENT ON TABLE pricecast_bars_{level} IS
                'Mergeable {level} bar state (plain-PostgreSQL path); read price_{level}.';
            CREATE VIEW price_{level} AS
                SELECT symbol, bucket, open, high, low, close, volume, trade_count,
                       pv / NULLIF(volume, 0) AS vwap
                FROM pricecast_bars_{level};
            """
        )
    op.execute(
        f"""
        CREATE FUNCTION pricecast_bars_after_insert() RETURNS trigger
        LANGUAGE plpgsql AS $fn$
        BEGIN
            {_rollup_statement("pricecast_new_ticks")};
            RETURN NULL;
        END
        $fn$;

        CREATE TRIGGER pricecast_bars_maintain
            AFTER INSERT ON price_ticks
            REFERENCING NEW TABLE AS pricecast_new_ticks
            FOR EACH STATEMENT EXECUTE FUNCTION pricecast_bars_after_insert();

        -- Repair tool: recompute the bars of whole UTC days in [p_start, p_end) from the raw
        -- ticks (after a bulk load with the trigger disabled). Only exact where the ticks
        -- of those days are still retained.
        CREATE FUNCTION pricecast_rebuild_bars(
            p_start timestamptz, p_end timestamptz, p_symbol text DEFAULT NULL
        ) RETURNS bigint LANGUAGE plpgsql AS $fn$
        DECLARE
            s timestamptz := date_bin('1 day', p_start, {ORIGIN});
            e timestamptz := date_bin('1 day', p_end - interval '1 microsecond', {ORIGIN})
                             + interval '1 day';
            n bigint;
        BEGIN
            DELETE FROM pricecast_bars_1m
             WHERE bucket >= s AND bucket < e AND (p_symbol IS NULL OR symbol = p_symbol);
            DELETE FROM pricecast_bars_1h
             WHERE bucket >= s AND bucket < e AND (p_symbol IS NULL OR symbol = p_symbol);
            DELETE FROM pricecast_bars_1d
             WHERE bucket >= s AND bucket < e AND (p_symbol IS NULL OR symbol = p_symbol);
            {
            _rollup_statement(
                "(SELECT * FROM price_ticks WHERE ts >= s AND ts < e"
                " AND (p_symbol IS NULL OR symbol = p_symbol))"
            )
        };
            SELECT count(*) INTO n FROM pricecast_bars_1m
             WHERE bucket >= s AND bucket < e AND (p_symbol IS NULL OR symbol = p_symbol);
            RETURN n;
        END
        $fn$;

        CREATE FUNCTION pricecast_reset_bars() RETURNS void LANGUAGE sql AS $fn$
            TRUNCATE pricecast_bars_1m, pricecast_bars_1h, pricecast_bars_1d;
        $fn$;
        """
    )


def _plain_downgrade() -> None:
    op.execute(
        """
        DROP TRIGGER IF EXISTS pricecast_bars_maintain ON price_ticks;
        DROP FUNCTION IF EXISTS pricecast_bars_after_insert();
        DROP FUNCTION IF EXISTS pricecast_rebuild_bars(timestamptz, timestamptz, text);
        DROP FUNCTION IF EXISTS pricecast_reset_bars();
        DROP VIEW IF EXISTS price_1m, price_1h, price_1d;
        DROP TABLE IF EXISTS pricecast_bars_1m, pricecast_bars_1h, pricecast_bars_1d;
        DROP TYPE IF EXISTS pricecast_pt;
        """
    )


# --------------------------------------------------------------------------------------
# TimescaleDB path
# --------------------------------------------------------------------------------------
# Ordering key of open/close in the 1m continuous aggregate: first()/last() by
# (ts, source COLLATE "C"), as on the plain path, packed into one bytea whose bytewise order
# is that order. A composite key cannot be used: first()/last() serialise their partial
# state when TimescaleDB aggregates chunk by chunk (any read or refresh spanning several
# chunks), and an anonymous ROW() cannot be read back ("input of anonymous composite types
# is not implemented"), while a named composite type has no "<" operator for first() to
# find. The key is the tick's microseconds since 2000 with the sign bit flipped (big-endian:
# bytewise order = signed order) followed by the UTF-8 bytes of source (bytewise order =
# collation "C"; the ts part has fixed width, so ts decides first). replace()::bytea turns
# text into its bytes (byteain's escape format only interprets backslashes, which are
# doubled); unlike convert_to() it is immutable, as continuous aggregates want. Inlined by
# the planner (immutable SQL body).
TICK_KEY_FUNCTION = r"""
CREATE FUNCTION pricecast_tick_key(ts timestamptz, source text) RETURNS bytea
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $fn$
    SELECT int8send((extract(epoch FROM ts - TIMESTAMPTZ '2000-01-01 00:00:00+00')
                     * 1000000)::int8 # (1::int8 << 63))
           || replace(source, '\', '\\')::bytea
$fn$;
COMMENT ON FUNCTION pricecast_tick_key(timestamptz, text) IS
    'Bytewise-ordered key of (ts, source COLLATE "C"): open/close order of the 1m aggregate.';
"""


def compression_statements(orderby: str, s: Settings) -> str:
    """Compress ``price_ticks`` (segmented by symbol, ordered by ``orderby``) after
    ``tick_compress_after_days``; 0007 switches it back on with its new key."""
    return f"""ALTER TABLE price_ticks SET (
            timescaledb.compress,
            timescaledb.compress_segmentby = 'symbol',
            timescaledb.compress_orderby = '{orderby}'
        );
        SELECT add_compression_policy('price_ticks',
                                      INTERVAL '{s.tick_compress_after_days} days',
                                      if_not_exists => true);"""


def _rolled_up_aggregate(level: str, below: str) -> str:
    """The continuous aggregate of ``level`` bars, rolled up from the one of ``below``."""
    return f"""CREATE MATERIALIZED VIEW pricecast_cagg_{level}
        WITH (timescaledb.continuous, timescaledb.materialized_only = false) AS
        SELECT symbol, time_bucket(INTERVAL '{dict(LEVELS)[level]}', bucket) AS bucket,
               first(open, bucket) AS open, max(high) AS high, min(low) AS low,
               last(close, bucket) AS close, sum(volume) AS volume,
               sum(trade_count) AS trade_count, sum(pv) AS pv
        FROM pricecast_cagg_{below} GROUP BY 1, 2 WITH NO DATA;"""


# Refresh policy of each level: how often it runs and the buckets of one batch.
REFRESH_SCHEDULE = (("1m", "1 minute", 1440), ("1h", "5 minutes", 168), ("1d", "1 hour", 31))


def _refresh_policies(refresh_window: str) -> str:
    """Each level refreshes ``[now - refresh_window, now - one bucket)`` on its schedule."""
    return "\n        ".join(
        f"SELECT add_continuous_aggregate_policy('pricecast_cagg_{level}',\n"
        f"            start_offset => INTERVAL '{refresh_window}',"
        f" end_offset => INTERVAL '{dict(LEVELS)[level]}',\n"
        f"            schedule_interval => INTERVAL '{schedule}', buckets_per_batch => {batch});"
        for level, schedule, batch in REFRESH_SCHEDULE
    )


def _timescale_upgrade(s: Settings) -> None:
    # Refresh window inside the tick retention: drop_chunks invalidates the dropped range,
    # so a refresh reaching it would delete the bars whose ticks retention removed.
    refresh_window = f"{max(s.tick_retention_days - 1, 1)} days"
    op.execute("CREATE EXTENSION IF NOT EXISTS timescaledb")
    op.execute(TICK_KEY_FUNCTION)
    op.execute(
        f"""
        SELECT create_hypertable('price_ticks', by_range('ts', INTERVAL '{s.tick_chunk_interval}'),
                                 migrate_data => true, if_not_exists => true);
        {compression_statements("ts DESC, source", s)}
        SELECT add_retention_policy('price_ticks', INTERVAL '{s.tick_retention_days} days',
                                    if_not_exists => true);
        SELECT create_hypertable('predictions',
                                 by_range('as_of', INTERVAL '{s.predictions_chunk_interval}'),
                                 migrate_data => true, if_not_exists => true);

        CREATE MATERIALIZED VIEW pricecast_cagg_1m
        WITH (timescaledb.continuous, timescaledb.materialized_only = false) AS
        SELECT symbol, time_bucket(INTERVAL '1 minute', ts) AS bucket,
               first(price, pricecast_tick_key(ts, source)) AS open, max(price) AS high,
               min(price) AS low, last(price, pricecast_tick_key(ts, source)) AS close,
               sum(volume) AS volume, count(*) AS trade_count, sum(price * volume) AS pv
        FROM price_ticks GROUP BY 1, 2 WITH NO DATA;

        {_rolled_up_aggregate("1h", "1m")}

        {_rolled_up_aggregate("1d", "1h")}

        -- Batches of a day of 1m buckets (a week of 1h, a month of 1d), not the default 10
        -- buckets: a backfill of history would otherwise take thousands of ~5 ms batches.
        {_refresh_policies(refresh_window)}
        """
    )
    for level, _ in LEVELS:
        op.execute(
            f"""
            CREATE VIEW price_{level} AS
                SELECT symbol, bucket, open, high, low, close, volume,
                       trade_count::bigint AS trade_count, pv / NULLIF(volume, 0) AS vwap
                FROM pricecast_cagg_{level};
            """
        )
    op.execute(
        """
        CREATE FUNCTION pricecast_reset_bars() RETURNS void LANGUAGE sql AS $fn$
            TRUNCATE pricecast_cagg_1m, pricecast_cagg_1h, pricecast_cagg_1d;
        $fn$;
        """
    )


def _timescale_downgrade() -> None:
    op.execute(
        """
        DROP FUNCTION IF EXISTS pricecast_reset_bars();
        DROP VIEW IF EXISTS price_1m, price_1h, price_1d;
        DROP MATERIALIZED VIEW IF EXISTS pricecast_cagg_1d;
        DROP MATERIALIZED VIEW IF EXISTS pricecast_cagg_1h;
        DROP MATERIALIZED VIEW IF EXISTS pricecast_cagg_1m;
        SELECT remove_retention_policy('price_ticks', if_exists => true);
        SELECT remove_compression_policy('price_ticks', if_exists => true);
        DROP FUNCTION IF EXISTS pricecast_tick_key(timestamptz, text);
        """
    )
    # price_ticks and predictions stay hypertables: TimescaleDB cannot turn them back.


# --------------------------------------------------------------------------------------
def _timescale_possible(conn: sa.Connection) -> tuple[bool, str]:
    available = conn.execute(
        sa.text("SELECT 1 FROM pg_available_extensions WHERE name = 'timescaledb'")
    ).scalar()
    if not available:
        return False, "extension timescaledb is not installed on the server"
    preload = str(conn.execute(sa.text("SHOW shared_preload_libraries")).scalar() or "")
    if "timescaledb" not in preload:
        return False, "timescaledb is installed but not in shared_preload_libraries"
    return True, "available"


def upgrade() -> None:
    settings = Settings()
    conn = op.get_bind()
    possible, why = _timescale_possible(conn)
    wanted = settings.storage_path
    if wanted == "timescaledb" and not possible:
        raise RuntimeError(f"PRICECAST_STORAGE_PATH=timescaledb but {why}")
    path = "timescaledb" if possible and wanted != "postgres" else "postgres"
    log.info("storage path: %s (%s)", path, why)
    if path == "timescaledb":
        _timescale_upgrade(settings)
    else:
        _plain_upgrade()
    conn.execute(
        sa.text(
            "INSERT INTO pricecast_meta (key, value) VALUES ('storage_path', :p) "
            "ON CONFLICT (key) DO UPDATE SET value = EXCLUDED.value, updated_at = now()"
        ),
        {"p": path},
    )


def downgrade() -> None:
    conn = op.get_bind()
    if recorded_storage_path(conn) == "timescaledb":
        _timescale_downgrade()
    else:
        _plain_downgrade()
    conn.execute(sa.text("DELETE FROM pricecast_meta WHERE key = 'storage_path'"))
