"""Forecast intervals at every offered level, and the online calibration state.

* ``predictions.intervals`` (jsonb): ``[{"level": 0.5, "lower": ..., "upper": ...}, ...]``,
  one entry per offered level (``PRICECAST_FORECAST_LEVELS``). ``lower_bound`` and
  ``upper_bound`` stay the default level's (0.8). Rows written before this revision have
  NULL: they answer their one level. Accuracy scores each level from this column.
* ``forecast_calibration``: the adaptive conformal state per (symbol, interval, horizon,
  level): ``alpha`` (the band is built at level ``1 - alpha``), the forecasts scored into it
  and the newest target scored. The prediction service reads it before forecasting and
  updates it when it scores a forecast, so calibration survives restarts.

Both storage paths run the same statements: on TimescaleDB ``predictions`` is a hypertable
(not compressed), where adding a nullable column is a catalog change on every chunk;
``forecast_calibration`` is a small plain table on both.
"""

from __future__ import annotations

from alembic import op

revision = "0006_forecast_levels"
down_revision = "0005_scored_index"


def upgrade() -> None:
    op.execute("ALTER TABLE predictions ADD COLUMN IF NOT EXISTS intervals jsonb")
    op.execute(
        """
        CREATE TABLE IF NOT EXISTS forecast_calibration (
            symbol      text NOT NULL,
            interval    text NOT NULL CHECK (interval IN ('1h', '1d')),
            horizon     integer NOT NULL CHECK (horizon >= 1),
            level       double precision NOT NULL CHECK (level > 0 AND level < 1),
            alpha       double precision NOT NULL,
            scored      bigint NOT NULL DEFAULT 0,
            misses      bigint NOT NULL DEFAULT 0,
            coverage    double precision,
            last_target timestamptz,
            updated_at  timestamptz NOT NULL DEFAULT now(),
            PRIMARY KEY (symbol, interval, horizon, level)
        )
        """
    )


def downgrade() -> None:
    op.execute("DROP TABLE IF EXISTS forecast_calibration")
    op.execute("ALTER TABLE predictions DROP COLUMN IF EXISTS intervals")
