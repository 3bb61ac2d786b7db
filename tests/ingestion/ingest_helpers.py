"""Helper functions for the ingestion tests."""

from __future__ import annotations

import asyncio
import os
import sys
import time
from typing import Any

import orjson
import sqlalchemy as sa
from aiokafka import AIOKafkaConsumer
from polling import wait_for  # noqa: F401 - used by the tests that import it from here
from sqlalchemy.engine import Engine

from services.common import infra
from services.common.config import Settings
from services.ingestion.producer import TickPublisher
from services.ingestion.sink import TickSink
from services.ingestion.writer import TickWriter


def raw_tick(symbol: str, /, **fields: object) -> dict[str, object]:
    """A valid raw tick of ``symbol`` (wire-form timestamp, trade); ``fields`` replace any."""
    payload: dict[str, object] = {
        "symbol": symbol,
        "ts": "2025-06-01T11:59:00Z",
        "price": 100.0,
        "volume": 1.5,
        "source": "synthetic",
    }
    payload.update(fields)
    return payload


def count_ticks(engine: Engine, where: str = "TRUE", **params: Any) -> int:
    with engine.connect() as conn:
        return int(
            conn.execute(
                sa.text(f"SELECT count(*) FROM price_ticks WHERE {where}"), params
            ).scalar_one()
        )


class RunningWriter:
    def __init__(self, settings: Settings, engine: Engine) -> None:
        self.settings = settings
        self.stop = asyncio.Event()
        self.publisher = TickPublisher(settings)
        self.writer = TickWriter(settings, TickSink(engine), self.publisher)
        self.task: asyncio.Task[None] | None = None

    async def start(self) -> RunningWriter:
        assert await self.publisher.start()
        self.task = asyncio.create_task(self.writer.run(self.stop))
        return self

    async def close(self) -> None:
        self.stop.set()
        if self.task is not None:
            await asyncio.wait_for(self.task, 30)
        await self.publisher.stop()


async def read_topic(settings: Settings, topic: str, n: int, timeout_s: float = 20.0) -> list[Any]:
    """The first ``n`` records of ``topic`` (decoded JSON values), read without a group."""
    consumer = AIOKafkaConsumer(
        topic, bootstrap_servers=settings.kafka_bootstrap_servers, auto_offset_reset="earliest"
    )
    await consumer.start()
    out: list[Any] = []
    try:
        deadline = time.monotonic() + timeout_s
        while len(out) < n and time.monotonic() < deadline:
            batch = await consumer.getmany(timeout_ms=200)
            for records in batch.values():
                out.extend(records)
    finally:
        await consumer.stop()
    return out


def decode_value(record: Any) -> Any:
    return orjson.loads(record.value)


def service_env(settings: Settings, **extra: str) -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        DATABASE_URL=settings.database_url,
        REDIS_URL=settings.redis_url,
        KAFKA_BOOTSTRAP_SERVERS=settings.kafka_bootstrap_servers,
        PRICECAST_TOPIC_PRICES=settings.topic_prices,
        PRICECAST_TOPIC_PRICES_DLQ=settings.topic_prices_dlq,
        PRICECAST_TOPIC_PREDICTIONS=settings.topic_predictions,
        PRICECAST_TOPIC_MODEL_EVENTS=settings.topic_model_events,
        PRICECAST_CONSUMER_GROUP_WRITER=settings.consumer_group_writer,
        PRICECAST_KAFKA_PARTITIONS=str(settings.kafka_partitions),
        PRICECAST_INGEST_HEALTH_PORT=str(infra.free_port()),
        PRICECAST_WRITER_BATCH_TIMEOUT_MS="50",
        PRICECAST_WRITER_SESSION_TIMEOUT_MS="2000",
        PRICECAST_WRITER_HEARTBEAT_INTERVAL_MS="200",
        PRICECAST_LOG_LEVEL="INFO",
    )
    env.update(extra)
    return env


PRICECAST = [sys.executable, "-m", "services.cli"]
