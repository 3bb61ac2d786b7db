"""Trade identity: ``price_ticks`` gets ``trade_id``; the key is (symbol, ts, source, trade_id).

Exchanges print several trades in one millisecond. Under the key ``(symbol, ts, source)`` the
writer's ``ON CONFLICT DO NOTHING`` kept only the first of them, and the bars lost the others'
volume. Now a tick carries the venue's trade id (empty for ticks without one: synthetic, CSV,
HTTP quotes), and the key is ``(symbol, ts, source, trade_id)``:

* distinct trades of the same millisecond are distinct rows, so the bars (the plain path's
  statement trigger and TimescaleDB's continuous aggregates both aggregate the rows really
  inserted) count every trade's volume;
* a trade delivered twice (Kafka redelivery, a gap repaired from a REST endpoint that returns
  a trade the stream had too) has the same key and is stored once.

Existing rows get the empty trade id (one row per old key, as before), so nothing is lost or
counted twice and the bars stay as they are.

* Plain PostgreSQL: the column is added with a constant default (no table rewrite), the
  primary key is rebuilt, and the statement trigger of 0004 (which deletes late ticks by
  primary key) matches on the new key.
* TimescaleDB: the primary key of a hypertable cannot change while chunks are compressed, so
  the compressed chunks are decompressed first (this takes time and disk in proportion to the
  compressed history), compression is switched off, the column and key are changed, and
  compression comes back with ``trade_id`` in ``compress_orderby`` and the same policy
  (``tick_compress_after_days``): the policy compresses the chunks again on its next runs.

Downgrade: trades that share (symbol, ts, source) are folded back to one row each (the
smallest trade id is kept; the bars keep counting all of them), then the old key returns.
"""

from __future__ import annotations

from alembic import op

from services.common.config import Settings
from services.storage.migrations import earlier_revision
from services.storage.path import recorded_storage_path

revision = "0007_trade_identity"
down_revision = "0006_forecast_levels"

OLD_KEY = "symbol, ts, source"
NEW_KEY = "symbol, ts, source, trade_id"
# 0004's trigger deletes the late ticks its statement inserted, by primary key.
OLD_LATE_DELETE = """USING (SELECT symbol, ts, source FROM pricecast_new_ticks
                         WHERE ts < horizon) n
                 WHERE p.symbol = n.symbol AND p.ts = n.ts AND p.source = n.source;"""
NEW_LATE_DELETE = """USING (SELECT symbol, ts, source, trade_id FROM pricecast_new_ticks
                         WHERE ts < horizon) n
                 WHERE p.symbol = n.symbol AND p.ts = n.ts AND p.source = n.source
                   AND p.trade_id = n.trade_id;"""


def _storage_path() -> str:
    return recorded_storage_path(op.get_bind()) or "postgres"


def _rekey(columns: str) -> None:
    """Replace the primary key of ``price_ticks`` (whatever its name) by ``columns``."""
    op.execute(
        f"""
        DO $do$
        DECLARE c text;
        BEGIN
            SELECT conname INTO c FROM pg_constraint
             WHERE conrelid = 'price_ticks'::regclass AND contype = 'p';
            IF c IS NOT NULL THEN
                EXECUTE format('ALTER TABLE price_ticks DROP CONSTRAINT %I', c);
            END IF;
            ALTER TABLE price_ticks ADD CONSTRAINT price_ticks_pkey PRIMARY KEY ({columns});
        END
        $do$;
        """
    )


def _late_ticks_trigger(rekeyed: bool) -> str:
    """0004's trigger function; ``rekeyed``: its late-tick delete matches the new key."""
    late = earlier_revision(__file__, "0004_late_ticks_after_retention.py")
    storage = earlier_revision(__file__, "0002_storage.py")
    body = str(
        late._trigger_function(
            storage._rollup_statement("pricecast_new_ticks"),
            storage._rollup_statement("(SELECT * FROM pricecast_new_ticks WHERE ts >= horizon)"),
        )
    )
    if OLD_LATE_DELETE not in body:
        raise RuntimeError("0004's trigger function changed: update 0007's late-tick delete")
    return body.replace(OLD_LATE_DELETE, NEW_LATE_DELETE) if rekeyed else body


def _timescale_compression(on: bool, orderby: str, s: Settings) -> None:
    if not on:
        op.execute(
            """
            SELECT decompress_chunk(c, if_compressed => true) FROM show_chunks('price_ticks') c;
            SELECT remove_compression_policy('price_ticks', if_exists => true);
            ALTER TABLE price_ticks SET (timescaledb.compress = false);
            """
        )
        return
    storage = earlier_revision(__file__, "0002_storage.py")
    op.execute(
        f"""
        {storage.compression_statements(orderby, s)}
        """
    )


def upgrade() -> None:
    path = _storage_path()
    if path == "timescaledb":
        _timescale_compression(False, "", Settings())
    op.execute("ALTER TABLE price_ticks ADD COLUMN trade_id text NOT NULL DEFAULT ''")
    op.execute(
        "COMMENT ON COLUMN price_ticks.trade_id IS"
        " 'The venue''s trade id (empty: the source gives none); part of the key'"
    )
    _rekey(NEW_KEY)
    if path == "timescaledb":
        _timescale_compression(True, "ts DESC, source, trade_id", Settings())
    else:
        op.execute(_late_ticks_trigger(rekeyed=True))


def downgrade() -> None:
    path = _storage_path()
    if path == "timescaledb":
        _timescale_compression(False, "", Settings())
    op.execute(
        """
        DELETE FROM price_ticks p USING price_ticks q
         WHERE p.symbol = q.symbol AND p.ts = q.ts AND p.source = q.source
           AND p.trade_id > q.trade_id;
        """
    )
    if path != "timescaledb":
        op.execute(_late_ticks_trigger(rekeyed=False))
    _rekey(OLD_KEY)
    op.execute("ALTER TABLE price_ticks DROP COLUMN trade_id")
    if path == "timescaledb":
        _timescale_compression(True, "ts DESC, source", Settings())
