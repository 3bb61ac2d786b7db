"""Benchmark ``prediction_freshness``: bar close -> forecast readable in Redis, and forecasts/s.

* Freshness: 200 symbols with 35 days of hourly history (ARIMA); the service runs in this
  process against a fresh database, Redis and Tansu broker. In 10 rounds, 20 symbols each
  get the tick that closes their hourly bar (stored by the "writer", then published on
  ``prices``); the latency is from the publish to the moment Redis holds the forecast of that
  bar (``prediction:{symbol}:1h:1`` with the new ``as_of``). Rounds follow each other as
  soon as the previous one is readable, so a round may wait for the tail of the previous
  batch (Kafka acknowledgements, database, accuracy scoring); the warm-up (a resume forecast
  of every symbol) is committed before the first round. Baseline: the same path with no
  forecast at all (consume the tick, SET a key), the physical limit of Kafka -> Redis here.
* Throughput: 1,000 symbols with daily history; every forecast job of the engine (read bars,
  choose and run the model, Redis + Kafka + database writes: ``PredictionEngine.forecast_jobs``,
  ARIMA in the engine's worker processes) with ARIMA (40 days) and with a promoted global
  LSTM (100 days), against the model alone in one thread.
"""

from __future__ import annotations

import asyncio
import os
import time
import uuid
from datetime import UTC, datetime, timedelta

import numpy as np
import sqlalchemy as sa

from bench.common import bench_settings, latency_extra, percentile, write_result
from ml import registry
from ml.lstm import LSTMConfig, LSTMForecaster
from ml.selection import SelectionPolicy
from ml.serving import LoadedModel, serve_forecast
from services.common.cache import make_async_redis, prediction_key
from services.common.config import Settings
from services.common.db import copy_ticks, make_engine, tick_tsv
from services.common.kafka import dumps, ensure_topics, make_consumer, make_producer
from services.common.schemas import PredictionRecord
from services.prediction.champions import ModelProvider
from services.prediction.engine import Job, PredictionEngine, forecast_processes
from services.prediction.service import PredictionService

HOUR = timedelta(hours=1)
DAY = timedelta(days=1)
FRESH_SYMBOLS, ROUND = 200, 20
THROUGHPUT_SYMBOLS = 1000


def _walk(n: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return 100.0 * np.exp(np.cumsum(rng.normal(0.0, 0.01, n)))


def _insert(engine: sa.Engine, rows: list[tuple[str, datetime, float]]) -> None:
    for i in range(0, len(rows), 10_000):
        chunk = rows[i : i + 10_000]
        tsv = tick_tsv((symbol, ts, price, 1.0, "bench") for symbol, ts, price in chunk)
        with engine.begin() as conn:
            copy_ticks(conn, tsv, on_conflict=True)


def _materialize(engine: sa.Engine) -> None:
    """On TimescaleDB, refresh the continuous aggregates over the inserted history, as the
    refresh policies do in steady state (otherwise every bar read aggregates raw ticks in
    real time: ~30 ms per 840-bar read instead of ~2 ms, measured)."""
    with engine.connect() as conn:
        if not conn.execute(
            sa.text("SELECT 1 FROM pg_extension WHERE extname = 'timescaledb'")
        ).scalar():
            return
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        conn.execute(sa.text("SET statement_timeout = 0"))
        for level in ("1m", "1h", "1d"):
            conn.execute(
                sa.text(f"CALL refresh_continuous_aggregate('pricecast_cagg_{level}', NULL, NULL)")
            )


def _history(
    symbols: list[str], first: datetime, last: datetime, every: timedelta
) -> list[tuple[str, datetime, float]]:
    n = int((last - first) / every) + 1
    rows: list[tuple[str, datetime, float]] = []
    for k, sym in enumerate(symbols):
        prices = _walk(n, k)
        rows.extend((sym, first + i * every, float(prices[i])) for i in range(n))
    return rows


async def _produce(s: Settings, producer, ticks: list[tuple[str, datetime, float]]) -> None:
    for sym, ts, price in ticks:
        payload = {"symbol": sym, "ts": ts, "price": price, "volume": 1.0, "source": "bench"}
        await producer.send(s.topic_prices, dumps(payload), key=sym.encode())
    await producer.flush()


async def freshness(s: Settings) -> tuple[list[float], list[float]]:
    db = make_engine(s)
    h0 = datetime.now(UTC).replace(minute=0, second=0, microsecond=0)
    bar = h0 - HOUR
    tag = uuid.uuid4().hex[:6]  # Redis db 15 outlives the run: never read an old run's keys
    symbols = [f"FR{tag}{i:04d}" for i in range(FRESH_SYMBOLS)]
    _insert(db, _history(symbols, h0 - 35 * DAY, bar - HOUR, HOUR))
    _materialize(db)
    await ensure_topics(s)
    service = PredictionService(s, health_port=0)
    stop = asyncio.Event()
    task = asyncio.create_task(service.run(stop))
    await service.ready.wait()
    redis = make_async_redis(s)
    producer = make_producer(s, linger_ms=0)
    await producer.start()
    try:
        # warm-up: one tick per symbol in the open bar (its resume forecast is done first)
        opening = [(sym, bar + timedelta(minutes=1), 100.0) for sym in symbols]
        _insert(db, opening)
        await _produce(s, producer, opening)
        assert service.engine is not None
        while service.engine.forecasts_total < len(symbols):  # noqa: ASYNC110 - polling
            await asyncio.sleep(0.05)
        await _idle(service)  # the warm-up batch also scores and commits: not a close's cost
        samples: list[float] = []
        for r in range(0, len(symbols), ROUND):
            group = symbols[r : r + ROUND]
            closing = [(sym, h0, 101.0) for sym in group]
            _insert(db, closing)
            sent = time.perf_counter()
            await _produce(s, producer, closing)
            pending = set(group)
            while pending:
                if task.done():
                    task.result()
                    raise RuntimeError("the prediction service stopped")
                if time.perf_counter() - sent > 60:
                    engine = service.engine
                    raise RuntimeError(
                        f"no forecast for {sorted(pending)[:3]} after 60 s (round {r // ROUND}; "
                        f"waiting={sorted(engine.waiting)[:3]}, forecasts={engine.forecasts_total})"
                    )
                async with redis.pipeline(transaction=False) as pipe:
                    for sym in sorted(pending):
                        pipe.get(prediction_key(sym, "1h", 1))
                    values = await pipe.execute()
                now = time.perf_counter()
                for sym, raw in zip(sorted(pending), values, strict=True):
                    if raw and PredictionRecord.model_validate_json(raw).as_of == bar:
                        samples.append((now - sent) * 1000)
                        pending.discard(sym)
                await asyncio.sleep(0.002)
    finally:
        stop.set()
        await task
    try:
        baseline = await _kafka_to_redis(s, producer, redis)
    finally:
        await producer.stop()
        await redis.aclose()  # type: ignore[attr-defined]
        db.dispose()
    return samples, baseline


async def _idle(service: PredictionService, limit_s: float = 120.0) -> None:
    """Until the service has committed everything it fetched (the batch is finished)."""
    deadline = time.monotonic() + limit_s
    while time.monotonic() < deadline:
        consumer = None if service.consumer is None else service.consumer.consumer
        if consumer is not None and consumer.assignment():
            done = True
            for tp in consumer.assignment():
                high = consumer.highwater(tp)
                committed = await consumer.committed(tp)
                if high is None or committed is None or committed < high:
                    done = False
            if done:
                return
        await asyncio.sleep(0.05)
    raise RuntimeError("the prediction service did not commit its warm-up batch")


async def _kafka_to_redis(s: Settings, producer, redis) -> list[float]:
    """Publish a tick, consume it, SET a key: no forecast at all."""
    topic = s.topic_prices_dlq  # a topic nobody else consumes in this run
    # the service's consumer configuration (fetch wait etc.): the same Kafka leg
    consumer = make_consumer(
        s,
        topic,
        group_id="bench-baseline",
        auto_offset_reset="latest",
        fetch_max_wait_ms=s.prediction_fetch_max_wait_ms,
    )
    await consumer.start()
    while not consumer.assignment():
        await consumer.getmany(timeout_ms=100)
    for tp in consumer.assignment():
        await consumer.position(tp)

    async def relay() -> None:
        while True:
            batch = await consumer.getmany(timeout_ms=50)
            for records in batch.values():
                for rec in records:
                    await redis.set(f"bench:{rec.key.decode()}", rec.value)
            if batch:
                await consumer.commit()

    relay_task = asyncio.create_task(relay())
    samples = []
    tag = uuid.uuid4().hex[:6]
    try:
        for i in range(200):
            key = f"BASE{tag}{i % ROUND}"
            await redis.delete(f"bench:{key}")
            sent = time.perf_counter()
            payload = {
                "symbol": key,
                "ts": datetime.now(UTC),
                "price": 1.0,
                "volume": 1.0,
                "source": "bench",
            }
            await producer.send_and_wait(topic, dumps(payload), key=key.encode())
            while not await redis.exists(f"bench:{key}"):  # noqa: ASYNC110 - polling
                await asyncio.sleep(0.002)
            samples.append((time.perf_counter() - sent) * 1000)
    finally:
        relay_task.cancel()
        await consumer.stop()
    return samples


async def throughput(s: Settings) -> dict[str, float]:
    db = make_engine(s, pool_size=s.prediction_workers + 2)
    d0 = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    as_of = d0 - DAY
    arima = [f"TA{i:04d}" for i in range(THROUGHPUT_SYMBOLS)]
    lstm = [f"TL{i:04d}" for i in range(THROUGHPUT_SYMBOLS)]
    _insert(db, _history(arima, as_of - 39 * DAY, as_of, DAY))
    _insert(db, _history(lstm, as_of - 99 * DAY, as_of, DAY))
    _materialize(db)
    # a small global LSTM champion for 1d
    model = LSTMForecaster(LSTMConfig(epochs=2, max_horizon=7, max_train_seconds=30))
    model.fit_many([_walk(100, k) for k in range(20)])
    with db.begin() as conn:
        v = registry.register_candidate(
            conn,
            model="lstm",
            scope="*",
            interval="1d",
            artifact=model.to_bytes(),
            metrics={"mase": 0.9},
        )
        registry.promote(conn, v.id)
    await ensure_topics(s)
    redis = make_async_redis(s)
    producer = make_producer(s)
    await producer.start()
    provider = ModelProvider(s, db, ["1d"])
    provider.reload()
    engine = PredictionEngine(s, db, redis, producer, provider, intervals=["1d"])
    engine.start()  # the service warms its forecast processes before it reports ready
    out: dict[str, float] = {}
    try:
        for name, symbols in (("arima", arima), ("lstm", lstm)):
            jobs = [Job(sym, "1d", as_of, "close") for sym in symbols]
            start = time.perf_counter()
            outcomes = await engine.forecast_jobs(jobs)
            elapsed = time.perf_counter() - start
            served = {o.records[0].model for o in outcomes if o.ok}
            assert served == {name}, f"expected {name}, served {served}"
            out[f"forecasts_per_s_{name}"] = round(len(jobs) / elapsed, 1)
        # the model alone, one thread, closes already in memory
        policy = SelectionPolicy()
        loaded = LoadedModel(model, "bench", None)
        for name, n, days, lm in (("arima", 40, 40, None), ("lstm", 100, 100, loaded)):
            series = [_walk(n, k) for k in range(200)]
            start = time.perf_counter()
            for y in series:
                serve_forecast(y, 7, days, lm, policy)
            out[f"model_only_per_s_{name}"] = round(len(series) / (time.perf_counter() - start), 1)
    finally:
        engine.close()
        await producer.stop()
        await redis.aclose()  # type: ignore[attr-defined]
        db.dispose()
    return out


def main() -> None:
    load_before = os.getloadavg()[0]
    with bench_settings() as s:
        samples, baseline = asyncio.run(freshness(s))
    load_freshness = os.getloadavg()[0]
    with bench_settings() as s:
        rates = asyncio.run(throughput(s))
    p99, base_p99 = percentile(samples, 99), percentile(baseline, 99)
    write_result(
        "prediction_freshness",
        p99,
        "ms",
        {"name": "kafka_to_redis_no_forecast_p99", "value": round(base_p99, 3), "unit": "ms"},
        {
            "bars": len(samples),
            "symbols_per_close": ROUND,
            "interval": "1h",
            "horizons": 24,
            "throughput_symbols": THROUGHPUT_SYMBOLS,
            "prediction_workers": Settings().prediction_workers,
            "prediction_processes": forecast_processes(Settings()),
            "fetch_max_wait_ms": Settings().prediction_fetch_max_wait_ms,
            # 1-min load average before the run, after the freshness part and at the end
            # (this run itself adds ~2-3 on 2 cores: its service, workers, Tansu, PostgreSQL)
            "load_avg_1m_before": round(load_before, 2),
            "load_avg_1m_after_freshness": round(load_freshness, 2),
            "load_avg_1m": round(os.getloadavg()[0], 2),
        },
        {
            **latency_extra(samples),
            "baseline": latency_extra(baseline),
            "target_p99_ms": 1000,
            **rates,
        },
    )


if __name__ == "__main__":
    main()
