"""End to end on the real broker, PostgreSQL and Redis: ticks in, bar closes, forecasts for
every horizon in the database, Redis and Kafka; ARIMA with its reason for a 45-day symbol,
ERR_PRED_001 state for a 10-day one; /health/detailed on the service's port."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import httpx
import orjson
import redis
import sqlalchemy as sa
from prediction_helpers import (
    count_predictions,
    history_ticks,
    midnight,
    produce_ticks,
    read_topic,
    store_ticks,
    wait_until,
)
from sqlalchemy.engine import Engine

from services.common.cache import prediction_key, status_key
from services.common.config import Settings
from services.common.schemas import PredictionRecord, PredictionStatus

ETH, NEW = "E2E-ETH", "E2E-NEW"


async def test_ticks_to_forecasts_everywhere(
    run_service, isolated_settings: Settings, clean_db: Engine, redis_client: redis.Redis
) -> None:
    s = isolated_settings
    d0 = midnight()
    hour = timedelta(hours=1)
    store_ticks(
        clean_db,
        history_ticks(
            ETH, d0 - timedelta(days=45), d0 - timedelta(hours=2), timedelta(hours=1), seed=1
        ),
    )
    store_ticks(
        clean_db,
        history_ticks(
            NEW, d0 - timedelta(days=10), d0 - timedelta(hours=2), timedelta(hours=1), seed=2
        ),
    )
    service = await run_service()

    # live: ticks in the last hour before midnight, in the previous hour, then one at the
    # start of the current hour: that closes the 1d bar (d0 - 1d) and the 1h bar (h0 - 1h)
    h0 = datetime.now(UTC).replace(minute=0, second=0, microsecond=0)
    minutes = [timedelta(minutes=m) for m in (50, 40, 30, 20, 10)]
    times = [d0 - m for m in minutes]
    if h0 - hour >= d0:
        times += [h0 - m for m in minutes]
    times.append(h0)
    live = [(sym, t, 100.0 + i / 10) for i, t in enumerate(times) for sym in (ETH, NEW)]
    store_ticks(clean_db, live)
    await produce_ticks(s, live)

    h_as_of, d_as_of = h0 - hour, d0 - timedelta(days=1)
    await wait_until(
        lambda: (
            count_predictions(clean_db, ETH, "1h", h_as_of) == 24
            and count_predictions(clean_db, ETH, "1d", d_as_of) == 7
        ),
        limit_s=60,
        what="ETH forecasts for every horizon",
    )

    # database: full provenance, ARIMA with the reason why not LSTM
    with clean_db.connect() as conn:
        rows = (
            conn.execute(
                sa.text(
                    "SELECT * FROM predictions WHERE symbol = :s AND interval = '1h' "
                    "AND as_of = :a ORDER BY horizon"
                ),
                {"s": ETH, "a": h_as_of},
            )
            .mappings()
            .all()
        )
    assert [r["horizon"] for r in rows] == list(range(1, 25))
    for r in rows:
        assert r["model"] == "arima"
        assert r["model_version"].startswith("arima(")
        assert "required for lstm" in r["fallback_reason"]
        assert r["target_time"] == h_as_of + timedelta(hours=r["horizon"])
        assert r["lower_bound"] <= r["predicted_price"] <= r["upper_bound"]
        assert r["generated_at"] is not None

    # Redis: the same record, TTL ending at the next bar close plus the margin
    raw = redis_client.get(prediction_key(ETH, "1h", 24))
    assert raw is not None
    cached = PredictionRecord.model_validate_json(raw)
    assert cached.as_of == h_as_of and cached.horizon == 24 and cached.model == "arima"
    ttl = redis_client.ttl(prediction_key(ETH, "1h", 24))
    expiry = h_as_of + timedelta(hours=2, seconds=s.prediction_ttl_margin_s)
    assert 0 < ttl <= (expiry - cached.generated_at).total_seconds() + 1
    daily = PredictionRecord.model_validate_json(redis_client.get(prediction_key(ETH, "1d", 7)))
    assert daily.as_of == d_as_of and daily.target_time == d_as_of + timedelta(days=7)

    # ERR_PRED_001 state for the 10-day symbol: database row and Redis status key
    await wait_until(lambda: redis_client.get(status_key(NEW, "1d")) is not None, what="NEW status")
    status = PredictionStatus.model_validate_json(redis_client.get(status_key(NEW, "1d")))
    assert status.status == "insufficient_history"
    assert status.required_days == 30 and status.available_days in (10, 11)
    assert redis_client.get(prediction_key(NEW, "1d", 1)) is None
    with clean_db.connect() as conn:
        db_status = conn.execute(
            sa.text("SELECT status, required_days FROM prediction_status WHERE symbol = :s"),
            {"s": NEW},
        ).all()
        assert count_predictions(clean_db, NEW, "1d", d_as_of) == 0
    assert {tuple(r) for r in db_status} == {("insufficient_history", 30)}

    # Kafka: every horizon of the closed bars, the same JSON the cache holds
    messages = await read_topic(s, s.topic_predictions)
    hourly = [
        m
        for m in messages
        if m["symbol"] == ETH
        and m["interval"] == "1h"
        and PredictionRecord.model_validate(m).as_of == h_as_of
    ]
    assert sorted(m["horizon"] for m in hourly) == list(range(1, 25))
    assert all(m["model"] == "arima" and m["fallback_reason"] for m in hourly)
    assert not [m for m in messages if m["symbol"] == NEW]
    assert orjson.loads(raw) in [m for m in hourly if m["horizon"] == 24]

    # health on the service's own port
    async with httpx.AsyncClient() as client:
        resp = await client.get(f"http://127.0.0.1:{service.health_port}/health/detailed")
    body = resp.json()
    assert resp.status_code == 200
    assert body["services"] == {"database": "healthy", "redis": "healthy", "kafka": "healthy"}
    pred = body["prediction"]
    assert pred["consumer_lag"] == 0
    assert pred["symbols_waiting"] == []
    assert pred["last_forecast_age_s"] is not None and pred["forecasts_total"] >= 2
    metrics = (
        await httpx.AsyncClient().get(f"http://127.0.0.1:{service.health_port}/metrics")
    ).text
    assert 'pricecast_forecasts_total{interval="1h",model="arima"}' in metrics
