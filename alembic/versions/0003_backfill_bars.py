"""TimescaleDB path: bars of ticks older than the refresh window are materialised before
retention may drop those ticks.

The refresh policies of migration 0002 only refresh ``[now - refresh window, now)`` and
real-time aggregation only covers data above the materialisation watermark, so ticks stored
below the window (a history backfill, very late data) never reached price_1m/1h/1d; the
retention policy then dropped them and their bars were lost. This revision (TimescaleDB path
only; the plain path maintains bars in the inserting transaction and is left unchanged):

* ``pricecast_unmaterialized_days`` (day, version): UTC days holding ticks older than the
  policy window (minus a margin of two days for the 1d bucket at the window's edge and the
  policies' schedule) that are not yet materialised. Filled by the statement-level trigger
  ``pricecast_backfill_mark`` on ``price_ticks`` (transition table: only rows really
  inserted); every statement touching a day gives it a new ``version``.
* ``CALL pricecast_materialize_backfill(NULL)``: refreshes the pending days, runs of at most
  31 consecutive days, in the order 1m -> 1h -> 1d (each level reads the one below), one
  transaction per run, then deletes the rows of the run whose version it read (a day written
  again meanwhile stays pending). Returns the number of days done. Must be CALLed outside a
  transaction block (autocommit), as refresh_continuous_aggregate requires.
* ``pricecast_drop_old_ticks(older_than)``: replaces the TimescaleDB retention policy. Drops
  chunks older than ``least(older_than, oldest pending day)``, so ticks of days not yet
  materialised are never dropped, and records the end of the dropped range in
  ``pricecast_meta.ticks_dropped_before``. It first takes a SHARE lock on price_ticks
  (waits for in-flight inserts, so their pending days are visible; holds new ones off for
  the few milliseconds of the drop).
* Days older than ``ticks_dropped_before`` are never refreshed: a refresh recomputes a bucket
  from the raw ticks of *all* symbols, and the ticks of such days are gone, so refreshing
  would delete their bars. Ticks arriving for such days are discarded from the bookkeeping
  (with a WARNING) and do not change the bars: a documented limitation of this path (the
  plain path merges them).
* Background jobs ``pricecast_storage_job``: materialise pending days every 10 minutes;
  materialise then apply retention once a day (config ``retention_days``). The same calls
  run in ``services.storage.maintenance`` and ``services.storage.backfill``.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from services.common.config import Settings
from services.storage.path import recorded_storage_path

revision = "0003_backfill_bars"
down_revision = "0002_storage"

ORIGIN = "TIMESTAMPTZ '2000-01-01 00:00:00+00'"
# Longest run of consecutive days refreshed in one transaction.
MAX_RUN_DAYS = 31


def _mark_threshold_days(s: Settings) -> int:
    """Ticks older than this many days are bookkept: the policy window (0002:
    retention - 1 days) minus two days, so the day bucket cut by the window's start and the
    time until the hourly 1d policy next runs are covered; always at least one day."""
    refresh_window = max(s.tick_retention_days - 1, 1)
    return max(refresh_window - 2, 1)


def upgrade() -> None:
    conn = op.get_bind()
    if recorded_storage_path(conn) != "timescaledb":
        return  # plain path: bars are maintained by the insert trigger of 0002
    s = Settings()
    threshold = f"{_mark_threshold_days(s)} days"
    op.execute(
        f"""
        CREATE SEQUENCE pricecast_unmaterialized_version;
        CREATE TABLE pricecast_unmaterialized_days (
            day       timestamptz PRIMARY KEY,
            version   bigint NOT NULL,
            marked_at timestamptz NOT NULL DEFAULT now()
        );
        COMMENT ON TABLE pricecast_unmaterialized_days IS
            'UTC days with ticks older than the refresh-policy window, not yet materialised '
            'into price_1m/1h/1d; retention keeps their ticks (TimescaleDB path).';

        CREATE FUNCTION pricecast_backfill_mark() RETURNS trigger
        LANGUAGE plpgsql AS $fn$
        BEGIN
            INSERT INTO pricecast_unmaterialized_days AS u (day, version)
            SELECT day, nextval('pricecast_unmaterialized_version')
            FROM (SELECT DISTINCT date_bin('1 day', ts, {ORIGIN}) AS day
                  FROM pricecast_new_ticks
                  WHERE ts < now() - INTERVAL '{threshold}') d
            ORDER BY day
            ON CONFLICT (day) DO UPDATE SET version = EXCLUDED.version, marked_at = now();
            RETURN NULL;
        END
        $fn$;

        CREATE TRIGGER pricecast_backfill_mark
            AFTER INSERT ON price_ticks
            REFERENCING NEW TABLE AS pricecast_new_ticks
            FOR EACH STATEMENT EXECUTE FUNCTION pricecast_backfill_mark();

        CREATE FUNCTION pricecast_ticks_dropped_before() RETURNS timestamptz
        LANGUAGE sql STABLE AS $fn$
            SELECT value::timestamptz FROM pricecast_meta WHERE key = 'ticks_dropped_before'
        $fn$;

        CREATE PROCEDURE pricecast_materialize_backfill(INOUT days_done integer DEFAULT NULL)
        LANGUAGE plpgsql AS $fn$
        DECLARE
            dropped_before timestamptz := pricecast_ticks_dropped_before();
            discarded integer;
            days timestamptz[];
            versions bigint[];
            n integer;
            i integer := 1;
            j integer;
        BEGIN
            days_done := 0;
            IF dropped_before IS NOT NULL THEN
                DELETE FROM pricecast_unmaterialized_days WHERE day < dropped_before;
                GET DIAGNOSTICS discarded = ROW_COUNT;
                IF discarded > 0 THEN
                    RAISE WARNING 'pricecast: % day(s) of ticks older than % (ticks already '
                        'dropped by retention) not materialised: bars of those days are kept '
                        'as they are', discarded, dropped_before;
                END IF;
            END IF;
            SELECT array_agg(day ORDER BY day), array_agg(version ORDER BY day)
              INTO days, versions FROM pricecast_unmaterialized_days;
            COMMIT;
            n := coalesce(array_length(days, 1), 0);
            WHILE i <= n LOOP
                j := i;
                WHILE j < n AND days[j + 1] = days[j] + INTERVAL '24 hours'
                      AND j - i + 1 < {MAX_RUN_DAYS} LOOP
                    j := j + 1;
                END LOOP;
                CALL refresh_continuous_aggregate('pricecast_cagg_1m', days[i],
                    days[j] + INTERVAL '24 hours', options => '{{"buckets_per_batch": 0}}');
                CALL refresh_continuous_aggregate('pricecast_cagg_1h', days[i],
                    days[j] + INTERVAL '24 hours', options => '{{"buckets_per_batch": 0}}');
                CALL refresh_continuous_aggregate('pricecast_cagg_1d', days[i],
                    days[j] + INTERVAL '24 hours', options => '{{"buckets_per_batch": 0}}');
                DELETE FROM pricecast_unmaterialized_days u
                 USING unnest(days[i:j], versions[i:j]) AS v(day, version)
                 WHERE u.day = v.day AND u.version = v.version;
                COMMIT;
                days_done := days_done + (j - i + 1);
                i := j + 1;
            END LOOP;
        END
        $fn$;

        CREATE FUNCTION pricecast_drop_old_ticks(older_than timestamptz) RETURNS integer
        LANGUAGE plpgsql SET lock_timeout = '10s' AS $fn$
        DECLARE
            oldest_pending timestamptz;
            cutoff timestamptz;
            dropped_end timestamptz;
            n integer;
        BEGIN
            LOCK TABLE price_ticks IN SHARE MODE;
            SELECT min(day) INTO oldest_pending FROM pricecast_unmaterialized_days;
            cutoff := LEAST(older_than, oldest_pending);
            SELECT max(range_end) INTO dropped_end FROM timescaledb_information.chunks
             WHERE hypertable_name = 'price_ticks' AND range_end <= cutoff;
            SELECT count(*) INTO n FROM drop_chunks('price_ticks', older_than => cutoff);
            IF dropped_end IS NOT NULL THEN
                INSERT INTO pricecast_meta AS m (key, value)
                VALUES ('ticks_dropped_before', dropped_end::text)
                ON CONFLICT (key) DO UPDATE
                   SET value = GREATEST(m.value::timestamptz, EXCLUDED.value::timestamptz)::text,
                       updated_at = now();
            END IF;
            RETURN n;
        END
        $fn$;

        CREATE PROCEDURE pricecast_storage_job(job_id integer, config jsonb)
        LANGUAGE plpgsql AS $fn$
        DECLARE
            days integer;
        BEGIN
            CALL pricecast_materialize_backfill(days);
            IF config ? 'retention_days' THEN
                PERFORM pricecast_drop_old_ticks(
                    now() - make_interval(days => (config ->> 'retention_days')::integer));
            END IF;
        END
        $fn$;
        """
    )
    # The retention policy of 0002 dropped chunks whatever their materialisation state.
    # Where it has already run, it dropped up to (last run - drop_after): days before that
    # must not be refreshed any more.
    conn.execute(
        sa.text(
            """
            INSERT INTO pricecast_meta (key, value)
            SELECT 'ticks_dropped_before',
                   (s.last_successful_finish - (j.config ->> 'drop_after')::interval)::text
            FROM timescaledb_information.jobs j
            JOIN timescaledb_information.job_stats s USING (job_id)
            WHERE j.proc_name = 'policy_retention' AND j.hypertable_name = 'price_ticks'
              AND s.last_successful_finish > '-infinity'
            ON CONFLICT (key) DO NOTHING
            """
        )
    )
    op.execute("SELECT remove_retention_policy('price_ticks', if_exists => true)")
    # History stored before this revision below the window was never materialised: book it.
    op.execute(
        f"""
        INSERT INTO pricecast_unmaterialized_days (day, version)
        SELECT day, nextval('pricecast_unmaterialized_version')
        FROM (SELECT DISTINCT date_bin('1 day', ts, {ORIGIN}) AS day FROM price_ticks
              WHERE ts < now() - INTERVAL '{threshold}'
                AND ts >= coalesce(pricecast_ticks_dropped_before(), '-infinity')) d
        ORDER BY day
        """
    )
    op.execute(
        f"""
        SELECT add_job('pricecast_storage_job', INTERVAL '10 minutes',
                       config => '{{"task": "materialize_backfill"}}');
        SELECT add_job('pricecast_storage_job', INTERVAL '1 day',
                       config => '{{"task": "retention",
                                    "retention_days": {s.tick_retention_days}}}');
        """
    )


def downgrade() -> None:
    conn = op.get_bind()
    if recorded_storage_path(conn) != "timescaledb":
        return
    s = Settings()
    op.execute(
        f"""
        SELECT delete_job(job_id) FROM timescaledb_information.jobs
         WHERE proc_name = 'pricecast_storage_job';
        DROP PROCEDURE IF EXISTS pricecast_storage_job(integer, jsonb);
        DROP FUNCTION IF EXISTS pricecast_drop_old_ticks(timestamptz);
        DROP PROCEDURE IF EXISTS pricecast_materialize_backfill(integer);
        DROP FUNCTION IF EXISTS pricecast_ticks_dropped_before();
        DROP TRIGGER IF EXISTS pricecast_backfill_mark ON price_ticks;
        DROP FUNCTION IF EXISTS pricecast_backfill_mark();
        DROP TABLE IF EXISTS pricecast_unmaterialized_days;
        DROP SEQUENCE IF EXISTS pricecast_unmaterialized_version;
        DELETE FROM pricecast_meta WHERE key = 'ticks_dropped_before';
        SELECT add_retention_policy('price_ticks', INTERVAL '{s.tick_retention_days} days',
                                    if_not_exists => true);
        """
    )
