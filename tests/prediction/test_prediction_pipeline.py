"""The engine's forecast pipeline on the real PostgreSQL, Redis and broker: one query reads
the bars of many jobs (same rows as the bar query layer), forecasts run in worker processes
or threads with the same answers, Redis holds the newest forecast of each key, and the
database -- the durable marker -- is written only after Redis and Kafka."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime, timedelta

import pytest
import sqlalchemy as sa
from aiokafka.errors import ProducerClosed
from prediction_helpers import history_ticks, read_topic, store_ticks
from sqlalchemy.engine import Engine

from services.common.bars import bar_closes_many, get_bar_columns
from services.common.cache import make_async_redis, prediction_key, status_key
from services.common.config import Settings
from services.common.kafka import ensure_topics, make_producer
from services.common.schemas import PredictionRecord, PredictionStatus
from services.prediction import store
from services.prediction.champions import ModelProvider
from services.prediction.engine import Job, PredictionEngine

HOUR = timedelta(hours=1)
DAY = timedelta(days=1)


def _hour() -> datetime:
    return datetime.now(UTC).replace(minute=0, second=0, microsecond=0)


def test_bar_closes_many_reads_what_the_bar_layer_reads(clean_db: Engine) -> None:
    h0 = _hour()
    store_ticks(clean_db, history_ticks("BC-A", h0 - 5 * DAY, h0 - HOUR, HOUR, seed=1))
    store_ticks(clean_db, history_ticks("BC-B", h0 - 2 * DAY, h0 - HOUR, HOUR, seed=2))
    requests = [
        ("BC-A", h0),
        ("BC-B", h0 - 10 * HOUR),
        ("BC-NONE", h0),  # no bars at all
        ("BC-A", h0 - 3 * DAY),  # the same symbol twice, another end
        ("BC-B", h0 - 3 * DAY),  # before its first bar
    ]
    with clean_db.connect() as conn:
        for interval, limit in (("1h", 30), ("1h", 1000), ("1d", 3)):
            got = bar_closes_many(conn, interval, requests, limit)
            assert len(got) == len(requests)
            for (symbol, end), closes in zip(requests, got, strict=True):
                want = get_bar_columns(conn, symbol, interval, end=end, limit=limit)
                assert closes.bucket.tolist() == want.bucket.tolist()
                assert closes.close.tolist() == want.close.tolist()
            assert len(got[0]) == min(limit, len(get_bar_columns(conn, "BC-A", interval)))
            assert len(got[2]) == 0 and len(got[4]) == 0
        assert bar_closes_many(conn, "1h", [], 10) == []


@pytest.fixture
async def make_engine_for(
    isolated_settings: Settings, clean_db: Engine
) -> AsyncIterator[Callable[[int], PredictionEngine]]:
    """Engines on the real stack with ``n`` forecast processes (0: threads only)."""
    await ensure_topics(isolated_settings)
    redis = make_async_redis(isolated_settings)
    producer = make_producer(isolated_settings)
    await producer.start()
    engines: list[PredictionEngine] = []

    def make(processes: int) -> PredictionEngine:
        s = isolated_settings.model_copy(update={"prediction_processes": processes})
        provider = ModelProvider(s, clean_db, ["1h"])
        provider.reload()
        engine = PredictionEngine(s, clean_db, redis, producer, provider, intervals=["1h"])
        engines.append(engine)
        return engine

    yield make
    for e in engines:
        e.close()
    await producer.stop()
    await redis.aclose()  # type: ignore[attr-defined]


HOURLY_FORECASTS = sa.text(
    "SELECT as_of, horizon, predicted_price FROM predictions WHERE symbol = :s AND interval = '1h'"
)


def _rows(db: Engine, symbol: str) -> dict[datetime, dict[int, float]]:
    """The stored hourly forecasts of ``symbol``: as_of -> horizon -> price."""
    with db.connect() as conn:
        rows = conn.execute(HOURLY_FORECASTS, {"s": symbol}).all()
    out: dict[datetime, dict[int, float]] = {}
    for as_of, horizon, price in rows:
        out.setdefault(as_of, {})[int(horizon)] = float(price)
    return out


@pytest.mark.parametrize("processes", [2, 0])
async def test_forecast_jobs_sinks_and_outcomes(
    processes: int,
    isolated_settings: Settings,
    clean_db: Engine,
    make_engine_for: Callable[[int], PredictionEngine],
) -> None:
    s = isolated_settings
    h0 = _hour()
    bar = h0 - HOUR
    ok = [f"PL{processes}-OK{i}" for i in range(5)]
    for k, sym in enumerate(ok):
        store_ticks(clean_db, history_ticks(sym, h0 - 35 * DAY, bar, HOUR, seed=k))
    short = f"PL{processes}-SHORT"
    store_ticks(clean_db, history_ticks(short, h0 - 10 * DAY, bar, HOUR, seed=9))
    missing = f"PL{processes}-MISSING"
    store_ticks(clean_db, history_ticks(missing, h0 - 35 * DAY, bar - 5 * HOUR, HOUR, seed=8))

    engine = make_engine_for(processes)
    assert (engine.dispatcher.processes is None) == (processes == 0)
    jobs = [Job(sym, "1h", bar, "close") for sym in ok]
    jobs.insert(1, Job(ok[0], "1h", bar - HOUR, "late"))  # two bars of one key
    jobs += [Job(short, "1h", bar, "close"), Job(missing, "1h", bar, "close")]
    outcomes = await engine.forecast_jobs(jobs)

    # outcomes in job order, with provenance
    assert [(o.symbol, o.as_of) for o in outcomes] == [(j.symbol, j.as_of) for j in jobs]
    served = [o for o in outcomes if o.ok]
    assert len(served) == 6
    for o in served:
        assert len(o.records) == s.horizons_1h
        assert {r.model for r in o.records} == {"arima"}
        reason = o.records[0].fallback_reason
        assert reason is not None and "< 90d required for lstm" in reason
    assert outcomes[-2].status.status == "insufficient_history"
    assert outcomes[-2].status.required_days == s.min_history_days_arima
    assert outcomes[-1].status.status == "error"
    assert "not in the database" in (outcomes[-1].status.detail or "")
    assert engine.forecasts_total == 6

    # Redis: the newest bar of each key, equal to the database; statuses for the others
    r = engine.redis
    for sym in ok:
        raw = await r.get(prediction_key(sym, "1h", 1))
        assert raw is not None
        record = PredictionRecord.model_validate_json(raw)
        assert record.as_of == bar
        assert record.predicted_price == pytest.approx(_rows(clean_db, sym)[bar][1])
    raw_status = await r.get(status_key(short, "1h"))
    assert raw_status is not None
    assert PredictionStatus.model_validate_json(raw_status).status == "insufficient_history"
    assert await r.get(prediction_key(short, "1h", 1)) is None

    # database: every horizon of both bars of the first key; statuses of every key
    rows = _rows(clean_db, ok[0])
    assert set(rows) == {bar - HOUR, bar}
    assert all(len(v) == s.horizons_1h for v in rows.values())
    with clean_db.connect() as conn:
        statuses = {st.symbol: st.status for st in store.statuses(conn, [*ok, short, missing])}
    assert statuses == {**dict.fromkeys(ok, "ok"), short: "insufficient_history", missing: "error"}

    # Kafka: every record of every served forecast
    messages = await read_topic(s, s.topic_predictions)
    mine = [m for m in messages if m["symbol"].startswith(f"PL{processes}-")]
    assert len(mine) == 6 * s.horizons_1h


async def test_database_is_written_after_redis_and_kafka(
    isolated_settings: Settings,
    clean_db: Engine,
    make_engine_for: Callable[[int], PredictionEngine],
) -> None:
    """A Kafka failure fails the run before the database write: the forecast may be in the
    cache (it is a cache), but the durable marker is not, so the batch is redone."""
    h0 = _hour()
    bar = h0 - HOUR
    sym = "ORDER-1"
    store_ticks(clean_db, history_ticks(sym, h0 - 35 * DAY, bar, HOUR, seed=3))
    engine = make_engine_for(2)
    await engine.producer.stop()  # every send now fails
    with pytest.raises(ProducerClosed):
        await engine.forecast_jobs([Job(sym, "1h", bar, "close")])
    raw = await engine.redis.get(prediction_key(sym, "1h", 1))
    assert raw is not None and PredictionRecord.model_validate_json(raw).as_of == bar
    assert _rows(clean_db, sym) == {}
    assert engine.forecasts_total == 0
