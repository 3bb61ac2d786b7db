"""A ``model_promoted`` event makes the next forecast use the new version, no restart."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import numpy as np
import sqlalchemy as sa
from prediction_helpers import (
    count_predictions,
    history_ticks,
    produce_ticks,
    store_ticks,
    wait_until,
)
from sqlalchemy.engine import Engine

from ml import registry
from ml.lstm import LSTMConfig, LSTMForecaster
from services.common.config import Settings
from services.common.kafka import dumps, make_producer

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


async def test_promotion_event_switches_the_next_forecast(
    run_service, isolated_settings: Settings, clean_db: Engine
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

    async def promote() -> str:
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
        event = {
            "type": "model_promoted",
            "model": "lstm",
            "scope": "*",
            "interval": "1h",
            "version": version.version,
        }
        await producer.send_and_wait(s.topic_model_events, dumps(event), key=b"*")
        await producer.stop()
        await wait_until(
            lambda: service.provider.versions().get("*:1h") == version.label,
            what="hot reload",
        )
        return version.label

    await close_bar(0)
    assert {m for m, _ in _models(clean_db, bars[0])} == {"arima"}

    v1 = await promote()
    await close_bar(1)
    assert _models(clean_db, bars[1]) == {("lstm", v1)}

    v2 = await promote()
    assert v2 != v1
    await close_bar(2)
    assert _models(clean_db, bars[2]) == {("lstm", v2)}
    assert service.events is not None and service.events.promotions_seen == 2
