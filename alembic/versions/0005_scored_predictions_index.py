"""Rolling accuracy reads only its window: an index on the scored forecasts per model.

Before this revision the rolling metrics (``services.prediction.accuracy.rolling_accuracy``,
run after every bar close that scored something) numbered *every* scored forecast of a
symbol and interval with a window function and kept the newest ``accuracy_window`` per model.
Its cost grew with the table: 24 forecasts per hourly bar is about 210,000 rows per symbol
and year, read on each close. With this partial index the query takes the newest
``accuracy_window`` rows of each model straight from the index (one bounded index scan per
model), whatever the table holds.

The index is partial (scored rows only, the rows the query reads); ``ix_predictions_target_open``
already makes scoring a non-HOT update, so this adds one index entry per scored row.
On TimescaleDB ``predictions`` is a hypertable and the index is created on every chunk.
"""

from __future__ import annotations

from alembic import op

revision = "0005_scored_index"
down_revision = "0004_late_ticks"


def upgrade() -> None:
    op.execute(
        """
        CREATE INDEX IF NOT EXISTS ix_predictions_scored
            ON predictions (symbol, interval, model, target_time DESC, horizon)
            WHERE actual_price IS NOT NULL AND naive_abs_error IS NOT NULL
        """
    )


def downgrade() -> None:
    op.execute("DROP INDEX IF EXISTS ix_predictions_scored")
