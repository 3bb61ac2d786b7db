"""Plain PostgreSQL path: ticks older than what retention already deleted are ignored.

Before this revision a tick re-delivered by Kafka (or a history backfill run a second time)
*after* retention had deleted its original was inserted again (``ON CONFLICT DO NOTHING``
cannot see deleted rows) and the bar trigger merged it a second time: volume, trade_count
and VWAP counted it twice. Now both paths share one rule, keyed on
``pricecast_meta.ticks_dropped_before`` (written by the TimescaleDB retention of 0003 and,
since this revision's companion change in ``services.storage.retention.drop_old_ticks``, by
the plain-path retention before it deletes anything):

* Ticks with ``ts < ticks_dropped_before`` do not change the bars and are not kept as raw
  ticks. On this path the statement trigger ``pricecast_bars_maintain`` drops them from the
  rows it merges, deletes exactly those rows again (by primary key: they were inserted by the
  same statement, so no other session can hold them), adds their number to
  ``pricecast_meta.late_ticks_ignored`` and raises a server WARNING.
* Everything else is unchanged: only rows really inserted (the transition table) are merged;
  the horizon is read once per statement (one primary-key probe of ``pricecast_meta``), and
  only when it is set is the batch scanned once more for ``ts < horizon`` (no per-row query).
  Without a recorded horizon (retention never deleted anything) the trigger runs exactly the
  statement of 0002.

Consequence (both paths): history older than the horizon can no longer be loaded once
retention has deleted ticks; that range's bars stay as they are.

The TimescaleDB path is left as 0003 made it (late ticks for dropped days do not change the
bars there; they stay as raw ticks until the next retention round and are not counted).

Downgrade restores the trigger function of 0002 and keeps both ``pricecast_meta`` keys (what
retention deleted stays true).
"""

from __future__ import annotations

from types import ModuleType

from alembic import op

from services.storage.migrations import earlier_revision
from services.storage.path import recorded_storage_path

revision = "0004_late_ticks"
down_revision = "0003_backfill_bars"


def _storage_revision() -> ModuleType:
    """Migration 0002: its rollup statement is what the trigger runs."""
    return earlier_revision(__file__, "0002_storage.py")


def _is_plain() -> bool:
    return recorded_storage_path(op.get_bind()) == "postgres"


def _trigger_function(rollup: str, rollup_recent: str) -> str:
    return f"""
    CREATE OR REPLACE FUNCTION pricecast_bars_after_insert() RETURNS trigger
    LANGUAGE plpgsql AS $fn$
    DECLARE
        horizon timestamptz;
        late bigint;
    BEGIN
        -- How far retention deleted ticks (NULL: never). Read once per statement.
        horizon := (SELECT value::timestamptz FROM pricecast_meta
                     WHERE key = 'ticks_dropped_before');
        IF horizon IS NOT NULL THEN
            SELECT count(*) INTO late FROM pricecast_new_ticks WHERE ts < horizon;
            IF late > 0 THEN
                -- Their originals may have been merged already and then deleted: merging
                -- them again would count them twice. Not kept as raw ticks either.
                DELETE FROM price_ticks p
                 USING (SELECT symbol, ts, source FROM pricecast_new_ticks
                         WHERE ts < horizon) n
                 WHERE p.symbol = n.symbol AND p.ts = n.ts AND p.source = n.source;
                INSERT INTO pricecast_meta AS m (key, value)
                VALUES ('late_ticks_ignored', late::text)
                ON CONFLICT (key) DO UPDATE
                   SET value = (m.value::bigint + EXCLUDED.value::bigint)::text,
                       updated_at = now();
                RAISE WARNING 'pricecast: % tick(s) older than % ignored: retention already '
                    'deleted the ticks of that range, its bars are kept as they are',
                    late, horizon;
                {rollup_recent};
                RETURN NULL;
            END IF;
        END IF;
        {rollup};
        RETURN NULL;
    END
    $fn$;
    """


def upgrade() -> None:
    if not _is_plain():
        return  # TimescaleDB: 0003 already keeps late ticks of dropped days out of the bars
    storage = _storage_revision()
    op.execute(
        _trigger_function(
            storage._rollup_statement("pricecast_new_ticks"),
            storage._rollup_statement("(SELECT * FROM pricecast_new_ticks WHERE ts >= horizon)"),
        )
    )


def downgrade() -> None:
    if not _is_plain():
        return
    storage = _storage_revision()
    op.execute(
        f"""
        CREATE OR REPLACE FUNCTION pricecast_bars_after_insert() RETURNS trigger
        LANGUAGE plpgsql AS $fn$
        BEGIN
            {storage._rollup_statement("pricecast_new_ticks")};
            RETURN NULL;
        END
        $fn$;
        """
    )
