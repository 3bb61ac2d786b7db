"""Accuracy: closing a target bar scores its forecasts; a degraded model queues exactly one
retrain request (table + ``model-events``), however many bars close afterwards."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import sqlalchemy as sa
from prediction_helpers import history_ticks, read_topic, store_ticks
from sqlalchemy.engine import Engine

from services.common.bars import get_bars
from services.common.cache import make_async_redis
from services.common.config import Settings
from services.common.kafka import ensure_topics, make_producer
from services.prediction.champions import ModelProvider
from services.prediction.clock import INTERVALS
from services.prediction.engine import PredictionEngine

SYM = "ACC-USD"
HOUR = timedelta(hours=1)


def _insert_prediction(
    conn: sa.Connection, as_of: datetime, predicted: float, scored: tuple[float, float] | None
) -> None:
    actual, naive = scored if scored else (None, None)
    conn.execute(
        sa.text(
            "INSERT INTO predictions (symbol, interval, horizon, as_of, target_time, "
            "predicted_price, lower_bound, upper_bound, model, model_version, actual_price, "
            "abs_error, naive_abs_error) VALUES (:s, '1h', 1, :a, :t, :p, :p - 1, :p + 1, "
            "'arima', 'arima(0,1,0)', :actual, abs(:actual - :p), :naive)"
        ),
        {"s": SYM, "a": as_of, "t": as_of + HOUR, "p": predicted, "actual": actual, "naive": naive},
    )


async def test_scoring_and_exactly_one_retrain_request(
    isolated_settings: Settings, clean_db: Engine
) -> None:
    s = isolated_settings
    await ensure_topics(s)
    h0 = datetime.now(UTC).replace(minute=0, second=0, microsecond=0)
    first_live = h0 - 3 * HOUR
    store_ticks(clean_db, history_ticks(SYM, h0 - timedelta(days=35), first_live - HOUR, HOUR))
    with clean_db.begin() as conn:
        # 30 already scored forecasts, 10x worse than naive, from the past week
        for k in range(30):
            _insert_prediction(conn, h0 - (100 + k) * HOUR, 100.0, (110.0, 1.0))
        # one open forecast targeting the bar that closes first (the engine's resume step
        # re-forecasts it: that bar's forecast was missing from the service's view)
        _insert_prediction(conn, first_live - HOUR, 123.0, None)

    redis = make_async_redis(s)
    producer = make_producer(s)
    await producer.start()
    provider = ModelProvider(s, clean_db, INTERVALS)
    provider.reload()
    engine = PredictionEngine(s, clean_db, redis, producer, provider, intervals=["1h"])
    try:
        requests = []
        for i in range(3):  # three bar closes, each checks accuracy
            ticks = [
                (SYM, first_live + i * HOUR + timedelta(minutes=m), 120.0 + i + m / 60)
                for m in (1, 30)
            ]
            ticks.append((SYM, first_live + (i + 1) * HOUR, 121.0 + i))
            store_ticks(clean_db, ticks)
            report = await engine.handle([(sym, ts, 0) for sym, ts, _ in ticks])
            requests.extend(report.retrain_requests)
            if i == 0:
                assert report.scored >= 1
    finally:
        engine.close()
        await producer.stop()
        await redis.aclose()

    # the open forecast was scored against the closed bar, and the naive forecast too
    with clean_db.connect() as conn:
        row = conn.execute(
            sa.text(
                "SELECT predicted_price, actual_price, abs_error, naive_abs_error FROM predictions "
                "WHERE symbol = :s AND as_of = :a AND horizon = 1"
            ),
            {"s": SYM, "a": first_live - HOUR},
        ).one()
        bars = {b.bucket: b.close for b in get_bars(conn, SYM, "1h", start=first_live - HOUR)}
        queued = conn.execute(
            sa.text("SELECT symbol, interval, status, reason FROM retrain_requests")
        ).all()
    actual = bars[first_live]
    assert row.actual_price == actual
    assert abs(row.abs_error - abs(actual - row.predicted_price)) < 1e-9
    assert abs(row.naive_abs_error - abs(actual - bars[first_live - HOUR])) < 1e-9

    assert len(queued) == 1 and len(requests) == 1
    assert (queued[0].symbol, queued[0].interval, queued[0].status) == (SYM, "1h", "queued")
    assert "rolling MASE" in queued[0].reason
    events = [e for e in await read_topic(s, s.topic_model_events) if e["symbol"] == SYM]
    assert [e["type"] for e in events] == ["retrain_requested"]
    assert events[0]["request_id"] == requests[0].request_id


def _brute_force_rolling(
    rows: list[tuple[str, datetime, int, float, float | None, float | None]], window: int
) -> dict[str, tuple[int, float, float, float]]:
    """Reference: per model, the newest ``window`` scored rows (target_time desc, horizon)."""
    out: dict[str, tuple[int, float, float, float]] = {}
    for model in sorted({r[0] for r in rows}):
        scored = [r for r in rows if r[0] == model and r[4] is not None and r[5] is not None]
        scored.sort(key=lambda r: (-r[1].timestamp(), r[2]))
        top = scored[:window]
        if not top:
            continue
        errors = [abs(float(r[4]) - r[3]) for r in top]  # type: ignore[arg-type]
        naive = [float(r[5]) for r in top]  # type: ignore[arg-type]
        mape = sum(e / float(r[4]) for e, r in zip(errors, top, strict=True)) / len(top)  # type: ignore[arg-type]
        mase = (sum(errors) / len(top)) / (sum(naive) / len(top))
        coverage = sum(1 for r in top if r[3] - 1 <= float(r[4]) <= r[3] + 1) / len(top)  # type: ignore[arg-type]
        out[model] = (len(top), mape, mase, coverage)
    return out


def test_rolling_accuracy_is_the_newest_window_of_each_model(clean_db: Engine) -> None:
    """The index-bounded query (migration 0005) gives what numbering every row gave: ties on
    target_time broken by horizon, unscored rows and rows without a naive error left out."""
    from services.prediction.accuracy import rolling_accuracy

    t0 = datetime(2026, 1, 1, tzinfo=UTC)
    rows: list[tuple[str, datetime, int, float, float | None, float | None]] = []
    for k in range(60):
        for horizon in (1, 2, 3):
            model = ("lstm", "arima", "naive")[(k + horizon) % 3]
            actual = None if k % 11 == 0 else 100.0 + (k * 7 + horizon) % 5
            naive = None if k % 13 == 0 else 0.5 + (k % 4) / 4
            rows.append((model, t0 + k * HOUR, horizon, 100.0 + k % 3, actual, naive))
    with clean_db.begin() as conn:
        conn.execute(
            sa.text(
                "INSERT INTO predictions (symbol, interval, horizon, as_of, target_time, "
                "predicted_price, lower_bound, upper_bound, model, actual_price, abs_error, "
                "naive_abs_error) VALUES (:s, '1h', :h, :t - make_interval(hours => :h), :t, "
                ":p, :p - 1, :p + 1, :m, :a, abs(:a - :p), :n)"
            ),
            [
                {"s": SYM, "h": h, "t": t, "p": p, "m": m, "a": a, "n": n}
                for m, t, h, p, a, n in rows
            ],
        )
    for window in (1, 7, 200):
        with clean_db.connect() as conn:
            got = {
                r.model: (r.n, r.mape, r.mase, r.coverage)
                for r in rolling_accuracy(conn, SYM, "1h", window)
            }
        want = _brute_force_rolling(rows, window)
        assert got.keys() == want.keys() == {"lstm", "arima", "naive"}
        for model, (n, mape, mase, coverage) in want.items():
            g = got[model]
            assert g[0] == n
            assert g[1] is not None and abs(g[1] - mape) < 1e-9
            assert g[2] is not None and abs(g[2] - mase) < 1e-9
            assert g[3] is not None and abs(g[3] - coverage) < 1e-9


def test_rolling_accuracy_reads_an_index_not_the_table(clean_db: Engine) -> None:
    """With a year of hourly forecasts stored, the plan takes each model's window from
    ``ix_predictions_scored`` instead of numbering every scored row."""
    from services.prediction.accuracy import _ROLLING, MODELS

    with clean_db.begin() as conn:
        conn.execute(
            sa.text(
                "INSERT INTO predictions (symbol, interval, horizon, as_of, target_time, "
                "predicted_price, lower_bound, upper_bound, model, actual_price, abs_error, "
                "naive_abs_error) "
                "SELECT :s, '1h', h, t - make_interval(hours => h), t, 100, 99, 101, "
                "(ARRAY['lstm','arima','naive'])[1 + (h % 3)], 100.5, 0.5, 0.4 "
                "FROM generate_series(:t0, :t0 + interval '364 days', interval '1 hour') AS t, "
                "generate_series(1, 24) AS h"
            ),
            {"s": SYM, "t0": datetime(2025, 1, 1, tzinfo=UTC)},
        )
        conn.execute(sa.text("ANALYZE predictions"))
        plan = "\n".join(
            conn.execute(
                sa.text(f"EXPLAIN {_ROLLING.text}"),
                {"symbol": SYM, "interval": "1h", "window": 200, "models": list(MODELS)},
            ).scalars()
        )
    assert "ix_predictions_scored" in plan, plan
    assert "WindowAgg" not in plan and "Seq Scan on predictions" not in plan, plan
