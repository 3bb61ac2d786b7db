"""Helpers for prediction tests on the real PostgreSQL, Redis and Tansu broker.

History is inserted straight into ``price_ticks`` (fast); live ticks go through Kafka
``prices``. The ingestion writer is another service: :func:`store_ticks` does its database
half (same ``ON CONFLICT DO NOTHING`` insert, one transaction per call), so a test controls
exactly when the writer "catches up".
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
import sqlalchemy as sa
from aiokafka import AIOKafkaConsumer
from sqlalchemy.engine import Engine

from services.common.config import Settings
from services.common.db import copy_ticks, tick_tsv
from services.common.kafka import dumps, loads, make_producer

TickRow = tuple[str, datetime, float]


def random_walk(n: int, start: float = 100.0, seed: int = 0, vol: float = 0.01) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return start * np.exp(np.cumsum(rng.normal(0.0, vol, n)))


def history_ticks(
    symbol: str, first: datetime, last: datetime, every: timedelta, seed: int = 0
) -> list[TickRow]:
    n = int((last - first) / every) + 1
    prices = random_walk(n, seed=seed)
    return [(symbol, first + i * every, float(prices[i])) for i in range(n)]


def store_ticks(engine: Engine, ticks: Sequence[TickRow], source: str = "test") -> None:
    """What the ingestion writer does with a batch: one transaction, duplicates ignored."""
    if not ticks:
        return
    tsv = tick_tsv((symbol, ts, price, 1.0, source) for symbol, ts, price in ticks)
    with engine.begin() as conn:
        copy_ticks(conn, tsv, on_conflict=True)
        conn.execute(
            sa.text(
                "INSERT INTO assets (symbol, first_seen) SELECT DISTINCT s, now() "
                "FROM unnest(CAST(:s AS text[])) AS s ON CONFLICT DO NOTHING"
            ),
            {"s": sorted({t[0] for t in ticks})},
        )


async def produce_ticks(settings: Settings, ticks: Sequence[TickRow], source: str = "test") -> None:
    producer = make_producer(settings)
    await producer.start()
    try:
        for symbol, ts, price in ticks:
            payload = {"symbol": symbol, "ts": ts, "price": price, "volume": 1.0, "source": source}
            await producer.send(settings.topic_prices, dumps(payload), key=symbol.encode())
        await producer.flush()
    finally:
        await producer.stop()


async def wait_until(
    check: Callable[[], Awaitable[bool] | bool], limit_s: float = 30.0, what: str = "condition"
) -> None:
    deadline = time.monotonic() + limit_s
    while time.monotonic() < deadline:
        result = check()
        if isinstance(result, Awaitable):
            result = await result
        if result:
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"timed out after {limit_s}s waiting for {what}")


def count_predictions(engine: Engine, symbol: str, interval: str, as_of: datetime) -> int:
    with engine.connect() as conn:
        return int(
            conn.execute(
                sa.text(
                    "SELECT count(*) FROM predictions WHERE symbol = :s AND interval = :i "
                    "AND as_of = :a"
                ),
                {"s": symbol, "i": interval, "a": as_of},
            ).scalar_one()
        )


async def read_topic(settings: Settings, topic: str, idle_s: float = 1.0) -> list[Any]:
    """Every message on ``topic`` from the beginning (values decoded)."""
    consumer = AIOKafkaConsumer(
        topic,
        bootstrap_servers=settings.kafka_bootstrap_servers,
        group_id=None,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
    )
    await consumer.start()
    out: list[Any] = []
    try:
        while True:
            batch = await consumer.getmany(timeout_ms=int(idle_s * 1000))
            if not batch:
                break
            for records in batch.values():
                out.extend(loads(r.value) for r in records)
    finally:
        await consumer.stop()
    return out


def midnight() -> datetime:
    now = datetime.now(UTC)
    return now.replace(hour=0, minute=0, second=0, microsecond=0)
