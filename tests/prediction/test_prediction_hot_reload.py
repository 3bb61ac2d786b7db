"""A ``model_promoted`` event makes the service use the new version, no restart: the newest
closed bar is re-forecast at once (no new tick), and the next bar's forecast uses it too."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import numpy as np
import redis
import sqlalchemy as sa
from prediction_helpers import (
    count_predictions,
    history_ticks,
    produce_ticks,
    read_topic,
    store_ticks,
    wait_until,
)
from sqlalchemy.engine import Engine

from ml import registry
from ml.lstm import LSTMConfig, LSTMForecaster
from services.common.cache import prediction_key
from services.common.config import Settings
from services.common.kafka import dumps, make_producer
from services.common.schemas import PredictionRecord

SYM = "HOT-USD"


def _models(engine: Engine, bar: datetime) -> set[tuple[str, str]]:
    with engine.connect() as conn:
        rows = conn.execute(
            sa.text(
                "SELECT DISTINCT model, model_version FROM predictions "
                "WHERE symbol = :s AND interval = '1h' AND as_of = :a"
            ),
            {"s": SYM, "a": bar},
        ).all()
    return {(r[0], r[1]) for r in rows}


def _cached(client: redis.Redis, horizon: int = 1) -> PredictionRecord | None:
    raw = client.get(prediction_key(SYM, "1h", horizon))
    return None if raw is None else PredictionRecord.model_validate_json(raw)


async def test_promotion_event_switches_the_next_forecast(
    run_service, isolated_settings: Settings, clean_db: Engine, redis_client: redis.Redis
) -> None:
    s = isolated_settings
    hour = timedelta(hours=1)
    h0 = datetime.now(UTC).replace(minute=0, second=0, microsecond=0)
    bars = [h0 - 3 * hour, h0 - 2 * hour, h0 - hour]
    history = history_ticks(SYM, h0 - timedelta(days=100), bars[0] - hour, hour, seed=5)
    store_ticks(clean_db, history)
    closes = np.array([t[2] for t in history])
    lstm = LSTMForecaster(LSTMConfig(epochs=1, hidden=8, max_train_seconds=10)).fit(closes)
    artifact = lstm.to_bytes()
    service = await run_service()
    assert service.provider is not None

    async def close_bar(i: int) -> None:
        ticks = [(SYM, bars[i] + timedelta(minutes=m), 100.0 + m) for m in (5, 35)]
        ticks.append((SYM, bars[i] + hour, 101.0))
        store_ticks(clean_db, ticks)
        await produce_ticks(s, ticks)
        await wait_until(lambda: count_predictions(clean_db, SYM, "1h", bars[i]) == 24)

    async def promote(event_names_symbol: bool) -> str:
        with clean_db.begin() as conn:
            version = registry.register_candidate(
                conn,
                model="lstm",
                scope=registry.GLOBAL_SCOPE,
                interval="1h",
                artifact=artifact,
                metrics={"mase": 0.6, "per_series": {SYM: {"mase": 0.6}}},
            )
            registry.promote(conn, version.id)
        producer = make_producer(s)
        await producer.start()
        event: dict[str, object] = {
            "type": "model_promoted",
            "model": "lstm",
            "interval": "1h",
            "version": version.label,
        }
        if event_names_symbol:  # what training.py publishes: one event per asset
            event["symbol"] = SYM
        else:  # a global promotion naming no asset: every symbol with enough history
            event["scope"] = "*"
        key = SYM.encode() if event_names_symbol else b"*"
        await producer.send_and_wait(s.topic_model_events, dumps(event), key=key)
        await producer.stop()
        await wait_until(
            lambda: service.provider.versions().get("*:1h") == version.label,
            what="hot reload",
        )
        return version.label

    async def reforecast_stored(bar: datetime, version: str, cached: bool) -> None:
        """Without any new tick, the newest bar is forecast again with ``version``."""

        def done() -> bool:
            if _models(clean_db, bar) != {("lstm", version)}:
                return False
            if not cached:
                return True
            entries = [_cached(redis_client, h) for h in (1, 24)]
            return all(
                c is not None and c.as_of == bar and c.model_version == version for c in entries
            )

        await wait_until(done, what=f"re-forecast of {bar} with {version}")
        assert count_predictions(clean_db, SYM, "1h", bar) == 24

    await close_bar(0)
    assert {m for m, _ in _models(clean_db, bars[0])} == {"arima"}

    # A global promotion naming no asset; bar 0's cache life is over (DB only).
    v1 = await promote(event_names_symbol=False)
    await reforecast_stored(bars[0], v1, cached=False)
    await close_bar(1)
    assert _models(clean_db, bars[1]) == {("lstm", v1)}  # the next bar uses it too
    await close_bar(2)
    cached = _cached(redis_client)
    assert cached is not None and cached.as_of == bars[2] and cached.model_version == v1

    # What training.py publishes (one event per asset): bar 2, still cached, is re-forecast.
    v2 = await promote(event_names_symbol=True)
    assert v2 != v1
    await reforecast_stored(bars[2], v2, cached=True)
    assert _models(clean_db, bars[1]) == {("lstm", v1)}  # older bars are not rewritten
    published = await read_topic(s, s.topic_predictions)
    mine = [m for m in published if m["symbol"] == SYM and m["model_version"] == v2]
    assert sorted(m["horizon"] for m in mine) == list(range(1, 25))
    assert service.events is not None and service.events.promotions_seen == 2
    assert service.engine is not None and service.engine.reforecasts_total == 2
