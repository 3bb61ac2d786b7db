"""Where a forecast goes besides the database: the Redis cache and the ``predictions`` topic.

The Redis value and the Kafka message are the same bytes: the JSON of
:class:`services.common.schemas.PredictionRecord`, what the API returns. A forecast's cache
entry expires when the next bar closes plus ``prediction_ttl_margin_s`` (a newer forecast
replaces it before that). Redis is a cache: a failure is logged and counted, never fatal.
Kafka is a contract: a failed send raises, so the batch is retried and not committed.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from datetime import datetime
from typing import Any

import redis.asyncio as aioredis
from aiokafka import AIOKafkaProducer

from services.common.cache import prediction_key, status_key
from services.common.config import Settings
from services.common.metrics import FORECAST_ERRORS
from services.common.schemas import PredictionRecord, PredictionStatus
from services.prediction.clock import step, ttl_seconds
from services.prediction.records import Outcome

log = logging.getLogger(__name__)


def encode(record: PredictionRecord | PredictionStatus) -> bytes:
    return record.model_dump_json().encode()


Payloads = dict[int, bytes]  # id(record) -> encode(record), for records encoded once


def encode_records(outcomes: Sequence[Outcome]) -> Payloads:
    """The bytes of every record of ``outcomes`` (one encoding for Redis and Kafka)."""
    return {id(record): encode(record) for outcome in outcomes for record in outcome.records}


def _payload(record: PredictionRecord, payloads: Payloads | None) -> bytes:
    return payloads[id(record)] if payloads is not None else encode(record)


def status_ttl(interval: str, margin_s: int) -> int:
    return int(2 * step(interval).total_seconds()) + margin_s


async def cache_outcomes(
    client: aioredis.Redis,
    settings: Settings,
    outcomes: Sequence[Outcome],
    now: datetime,
    payloads: Payloads | None = None,
) -> int:
    """Write forecasts and statuses to Redis in one pipeline; return the keys written."""
    margin = settings.prediction_ttl_margin_s
    written = 0
    try:
        async with client.pipeline(transaction=False) as pipe:
            for outcome in outcomes:
                for record in outcome.records:
                    ttl = ttl_seconds(record.as_of, record.interval, margin, now)
                    if ttl > 0:
                        key = prediction_key(record.symbol, record.interval, record.horizon)
                        pipe.set(key, _payload(record, payloads), ex=ttl)
                        written += 1
                pipe.set(
                    status_key(outcome.symbol, outcome.interval),
                    encode(outcome.status),
                    ex=status_ttl(outcome.interval, margin),
                )
                written += 1
            await pipe.execute()
    except (TimeoutError, aioredis.RedisError, OSError) as exc:
        FORECAST_ERRORS.labels("cache_write").inc()
        log.warning("redis write failed (forecasts stay in the database): %s", exc)
        return 0
    return written


async def send_outcomes(
    producer: AIOKafkaProducer,
    topic: str,
    outcomes: Sequence[Outcome],
    payloads: Payloads | None = None,
) -> list[asyncio.Future[Any]]:
    """Hand every record (key: symbol) to the producer; the returned futures resolve when
    the broker acknowledged them (await them before anything that must come after)."""
    futures: list[asyncio.Future[Any]] = []
    for outcome in outcomes:
        for record in outcome.records:
            value = _payload(record, payloads)
            futures.append(await producer.send(topic, value, key=record.symbol.encode()))
    return futures
