"""Kafka plumbing shared by every service: topics, producers, consumers, JSON codec."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import IllegalStateError, KafkaError, TopicAlreadyExistsError

from services.common.config import Settings

log = logging.getLogger(__name__)


def all_topics(settings: Settings) -> list[str]:
    return [
        settings.topic_prices,
        settings.topic_prices_dlq,
        settings.topic_predictions,
        settings.topic_model_events,
    ]


def dumps(value: Any) -> bytes:
    return orjson.dumps(value, option=orjson.OPT_NAIVE_UTC | orjson.OPT_UTC_Z)


def loads(raw: bytes | None) -> Any:
    if raw is None:
        raise ValueError("empty message")
    return orjson.loads(raw)


async def ensure_topics(settings: Settings, timeout_s: float = 30.0) -> None:
    """Create the four topics if missing, waiting (bounded backoff) for the broker."""
    admin = AIOKafkaAdminClient(bootstrap_servers=settings.kafka_bootstrap_servers)
    await start_with_backoff(admin.start, timeout_s, what="kafka admin")
    try:
        existing = set(await admin.list_topics())
        replicas = settings.kafka_replication_factor
        # Replicated clusters: an acks=all write survives the loss of one broker.
        configs = {"min.insync.replicas": str(min(2, replicas - 1))} if replicas >= 3 else {}
        wanted = [
            NewTopic(
                name=t,
                num_partitions=settings.kafka_partitions,
                replication_factor=replicas,
                topic_configs=configs,
            )
            for t in all_topics(settings)
            if t not in existing
        ]
        if wanted:
            with contextlib.suppress(TopicAlreadyExistsError):
                await admin.create_topics(wanted)
    finally:
        await admin.close()


async def start_with_backoff(start: Any, timeout_s: float, what: str) -> None:
    """Call an aiokafka ``start()`` until it succeeds or ``timeout_s`` passes."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    delay = 0.1
    while True:
        try:
            await start()
            return
        except (KafkaError, OSError) as exc:
            if loop.time() + delay > deadline:
                raise
            log.warning("%s not reachable yet (%s); retrying in %.1fs", what, exc, delay)
            await asyncio.sleep(delay)
            delay = min(delay * 2, 5.0)


def make_producer(settings: Settings, **overrides: Any) -> AIOKafkaProducer:
    """Keyed, acks=all producer with batching tuned for throughput."""
    options: dict[str, Any] = {
        "bootstrap_servers": settings.kafka_bootstrap_servers,
        "acks": "all",
        "linger_ms": 5,
        "max_batch_size": 256 * 1024,
        "enable_idempotence": False,
        "request_timeout_ms": 15_000,
    }
    options.update(overrides)
    return AIOKafkaProducer(**options)


def make_consumer(
    settings: Settings, *topics: str, group_id: str, **overrides: Any
) -> AIOKafkaConsumer:
    """Manual-commit consumer: callers commit only after their work is durable."""
    options: dict[str, Any] = {
        "bootstrap_servers": settings.kafka_bootstrap_servers,
        "group_id": group_id,
        "enable_auto_commit": False,
        "auto_offset_reset": "earliest",
        "max_poll_records": 5000,
        "fetch_max_bytes": 16 * 1024 * 1024,
        "max_partition_fetch_bytes": 4 * 1024 * 1024,
        "session_timeout_ms": 10_000,
        "heartbeat_interval_ms": 3_000,
    }
    options.update(overrides)
    return AIOKafkaConsumer(*topics, **options)


async def consumer_lag(consumer: AIOKafkaConsumer) -> int:
    """Records behind on the assigned partitions: the high watermark of the last fetch (true
    on every broker; Tansu's ListOffsets(latest) can under-read) minus the position; the
    broker's end offsets until a fetch was seen."""
    lag = 0
    for tp in consumer.assignment():
        try:
            position = await consumer.position(tp)
        except IllegalStateError:  # unassigned during a rebalance
            continue
        hw = consumer.highwater(tp)
        if hw is None:
            hw = (await consumer.end_offsets([tp])).get(tp, position)
        lag += max(0, hw - position)
    return lag
