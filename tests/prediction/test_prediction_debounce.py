"""1,000 ticks for one bar make one forecast per horizon, and the forecast waits for the
writer: nothing is forecast before the tick that closed the bar is in the database."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import prediction_helpers as helpers
from sqlalchemy.engine import Engine

from services.common.bars import get_bars
from services.common.config import Settings
from services.common.schemas import PredictionRecord

SYM = "DEB-USD"


async def test_thousand_ticks_one_forecast_per_horizon_after_the_writer(
    run_service, isolated_settings: Settings, clean_db: Engine
) -> None:
    s = isolated_settings
    hour = timedelta(hours=1)
    h0 = datetime.now(UTC).replace(minute=0, second=0, microsecond=0)
    bar = h0 - hour
    helpers.store_ticks(
        clean_db, helpers.history_ticks(SYM, h0 - timedelta(days=35), bar - hour, hour, seed=3)
    )
    service = await run_service()

    live = [(SYM, bar + timedelta(seconds=3 * i + 1), 100.0 + (i % 7)) for i in range(1000)]
    live.append((SYM, h0, 104.5))
    await helpers.produce_ticks(s, live)  # on Kafka, but the "writer" has not stored them yet

    engine = service.engine
    assert engine is not None
    await helpers.wait_until(
        lambda: engine.waiting == {SYM}, what="the batch to wait for the writer"
    )
    await asyncio.sleep(1.0)
    assert engine.waiting == {SYM}
    assert helpers.count_predictions(clean_db, SYM, "1h", bar) == 0

    helpers.store_ticks(clean_db, live)  # the writer catches up
    await helpers.wait_until(
        lambda: helpers.count_predictions(clean_db, SYM, "1h", bar) == 24,
        what="forecast of the bar",
    )
    messages = [
        PredictionRecord.model_validate(m) for m in await helpers.read_topic(s, s.topic_predictions)
    ]
    of_bar = [m for m in messages if m.interval == "1h" and m.as_of == bar]
    assert sorted(m.horizon for m in of_bar) == list(range(1, 25))  # once each, not 1,000x
    assert engine.waiting == set()
    # the forecast saw the whole bar: its close is the last tick's price
    with clean_db.connect() as conn:
        closed = get_bars(conn, SYM, "1h", start=bar, end=h0)
    assert closed[-1].close == 100.0 + (999 % 7) and closed[-1].trade_count == 1000
