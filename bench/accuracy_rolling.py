"""accuracy_rolling: the rolling accuracy query run after every scored bar close, against a
year of hourly forecasts.

Data: 10 symbols x 365 days x 24 hourly bars x 24 horizons (2.1M scored forecasts, 210k per
symbol), the three models in turn. Figure: median latency of
``services.prediction.accuracy.rolling_accuracy`` (window 200 per model, the default).
Baseline, same data and run: the query before migration 0005, which numbered every scored
forecast of the symbol with a window function and kept the newest 200 per model.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from datetime import UTC, datetime

import sqlalchemy as sa

from bench.common import bench_settings, latency_extra, percentile, write_result
from services.prediction.accuracy import rolling_accuracy

SYMBOLS = [f"ACC{i}-USD" for i in range(10)]
DAYS = 365
WINDOW = 200
CALLS = 200
BASELINE_CALLS = 20

# The query of migration 0004's time, kept here as the baseline.
_BEFORE = sa.text(
    """
    SELECT model, count(*) AS n,
           avg(abs_error / NULLIF(actual_price, 0)) AS mape,
           avg(abs_error) / NULLIF(avg(naive_abs_error), 0) AS mase,
           avg(CASE WHEN actual_price BETWEEN lower_bound AND upper_bound THEN 1.0 ELSE 0.0 END)
               AS coverage
    FROM (
        SELECT model, abs_error, naive_abs_error, actual_price, lower_bound, upper_bound,
               row_number() OVER (PARTITION BY model ORDER BY target_time DESC, horizon) AS rn
        FROM predictions
        WHERE symbol = :symbol AND interval = :interval AND actual_price IS NOT NULL
          AND naive_abs_error IS NOT NULL
    ) scored
    WHERE rn <= :window
    GROUP BY model
    ORDER BY model
    """
)


def _fill(engine: sa.Engine) -> int:
    with engine.begin() as conn:
        for symbol in SYMBOLS:
            conn.execute(
                sa.text(
                    "INSERT INTO predictions (symbol, interval, horizon, as_of, target_time, "
                    "predicted_price, lower_bound, upper_bound, model, actual_price, abs_error, "
                    "naive_abs_error) "
                    "SELECT :s, '1h', h, t - make_interval(hours => h), t, 100, 99, 101, "
                    "(ARRAY['lstm','arima','naive'])[1 + ((extract(epoch FROM t)::bigint / 3600 "
                    "+ h) % 3)], 100 + random(), 0.5 * random(), 0.5 * random() "
                    "FROM generate_series(:t0, :t0 + make_interval(days => :days - 1), "
                    "interval '1 hour') AS t, generate_series(1, 24) AS h"
                ),
                {"s": symbol, "t0": datetime(2025, 1, 1, tzinfo=UTC), "days": DAYS},
            )
        conn.execute(sa.text("ANALYZE predictions"))
        return int(conn.execute(sa.text("SELECT count(*) FROM predictions")).scalar_one())


def _timed(
    engine: sa.Engine, calls: int, run: Callable[[sa.Connection, str], object]
) -> list[float]:
    samples: list[float] = []
    with engine.connect() as conn:
        for i in range(calls):
            symbol = SYMBOLS[i % len(SYMBOLS)]
            t0 = time.perf_counter()
            run(conn, symbol)
            samples.append((time.perf_counter() - t0) * 1000)
    return samples


def main() -> None:
    load_start = os.getloadavg()[0]
    with bench_settings() as s:
        engine = sa.create_engine(s.database_url)
        rows = _fill(engine)
        params = {"interval": "1h", "window": WINDOW}
        for symbol in SYMBOLS:  # warm both plans and the buffer cache
            with engine.connect() as conn:
                rolling_accuracy(conn, symbol, "1h", WINDOW)
                conn.execute(_BEFORE, {"symbol": symbol, **params}).all()
        ours = _timed(engine, CALLS, lambda c, sym: rolling_accuracy(c, sym, "1h", WINDOW))

        def before_query(conn: sa.Connection, symbol: str) -> object:
            return conn.execute(_BEFORE, {"symbol": symbol, **params}).all()

        before = _timed(engine, BASELINE_CALLS, before_query)
        engine.dispose()
    value = percentile(ours, 50)
    baseline = percentile(before, 50)
    write_result(
        "accuracy_rolling",
        value,
        "ms",
        {"name": "window_function_over_every_scored_forecast", "value": baseline, "unit": "ms"},
        {
            "symbols": len(SYMBOLS),
            "days_of_hourly_forecasts": DAYS,
            "horizons": 24,
            "scored_forecasts": rows,
            "per_symbol": rows // len(SYMBOLS),
            "window": WINDOW,
        },
        extra={
            **latency_extra(ours),
            "baseline": latency_extra(before),
            "loadavg": {"start": round(load_start, 2), "end": round(os.getloadavg()[0], 2)},
        },
    )


if __name__ == "__main__":
    main()
