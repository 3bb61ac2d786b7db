"""``LogEndWatchdog`` on the real broker: a consumer positioned beyond the end of the log.

That is where a consumer is left when the broker lost its log (the in-memory broker
restarted) and an offset of the old log is applied to the new one. Apache Kafka answers such a
fetch with ``OFFSET_OUT_OF_RANGE``; the first test pins down that Tansu does not (the reason
the watchdog exists), the others that the watchdog moves the consumer back into the log and
nothing of the log is skipped.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import AsyncIterator
from typing import NamedTuple

import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition
from prometheus_client import REGISTRY

from services.common.config import Settings
from services.common.kafka import LogEndWatchdog, ensure_topics, make_consumer, make_producer

RECORDS = 60
BEYOND = 500  # an offset of a longer, lost log


async def _produce(settings: Settings, n: int, tag: str) -> None:
    producer = make_producer(settings)
    await producer.start()
    try:
        for i in range(n):
            await producer.send(settings.topic_prices, f"{tag}-{i}".encode(), partition=0)
        await producer.flush()
    finally:
        await producer.stop()


async def _drain(consumer: AIOKafkaConsumer, tp: TopicPartition, until: int) -> list[int]:
    """Offsets read until the position reaches ``until``."""
    seen: list[int] = []
    deadline = time.monotonic() + 30
    while await consumer.position(tp) < until:
        assert time.monotonic() < deadline, f"read only {len(seen)} records"
        batch = await consumer.getmany(tp, timeout_ms=200)
        seen.extend(r.offset for r in batch.get(tp, []))
    return seen


async def _next_fetch(consumer: AIOKafkaConsumer, tp: TopicPartition) -> None:
    """Poll until the broker answered one more fetch for ``tp`` (at the current position)."""
    before = consumer.last_poll_timestamp(tp) or 0
    deadline = time.monotonic() + 30
    while (consumer.last_poll_timestamp(tp) or 0) <= before:
        assert time.monotonic() < deadline, "no fetch response"
        await consumer.getmany(tp, timeout_ms=200)


async def _until_reset(
    consumer: AIOKafkaConsumer, tp: TopicPartition, watchdog: LogEndWatchdog
) -> dict[TopicPartition, int]:
    """Poll until the watchdog resets a partition; what it reset."""
    deadline = time.monotonic() + 30
    while True:
        assert time.monotonic() < deadline, "the watchdog never reset the partition"
        await consumer.getmany(tp, timeout_ms=100)
        if reset := await watchdog.check():
            return reset


def _resets(group: str) -> float:
    value = REGISTRY.get_sample_value("pricecast_consumer_offset_resets_total", {"group": group})
    return value or 0.0


@pytest.fixture
async def one_partition(isolated_settings: Settings) -> AsyncIterator[Settings]:
    s = isolated_settings.model_copy(update={"kafka_partitions": 1})
    await ensure_topics(s)
    await _produce(s, RECORDS, "a")
    yield s


class AtTheEnd(NamedTuple):
    """A consumer of group ``group`` that has read the whole one-partition log."""

    settings: Settings
    group: str
    consumer: AIOKafkaConsumer
    tp: TopicPartition


@pytest.fixture
async def at_the_end(one_partition: Settings) -> AsyncIterator[AtTheEnd]:
    group = f"wd-{uuid.uuid4().hex[:8]}"
    consumer = make_consumer(one_partition, one_partition.topic_prices, group_id=group)
    await consumer.start()
    tp = TopicPartition(one_partition.topic_prices, 0)
    try:
        await _drain(consumer, tp, RECORDS)
        yield AtTheEnd(one_partition, group, consumer, tp)
    finally:
        await consumer.stop()


async def test_the_broker_does_not_reset_a_position_beyond_the_log_end(
    at_the_end: AtTheEnd,
) -> None:
    settings, _, consumer, tp = at_the_end
    consumer.seek(tp, BEYOND)
    await _produce(settings, 5, "b")
    for _ in range(3):
        await _next_fetch(consumer, tp)
    # Answered, no records, no OFFSET_OUT_OF_RANGE: the position stays beyond the end.
    assert await consumer.position(tp) == BEYOND
    assert consumer.highwater(tp) == RECORDS + 5


async def test_watchdog_resets_to_the_committed_offset_inside_the_log(at_the_end: AtTheEnd) -> None:
    settings, group, consumer, tp = at_the_end
    await consumer.commit({tp: 40})
    consumer.seek(tp, BEYOND)
    await _produce(settings, 5, "b")
    watchdog = LogEndWatchdog(consumer, group, grace_s=0.3, interval_s=0.05)
    before = _resets(group)
    reset = await _until_reset(consumer, tp, watchdog)
    assert reset == {tp: 40}
    assert _resets(group) == before + 1
    # From the committed offset on, every record of the log is read: nothing skipped.
    assert await _drain(consumer, tp, RECORDS + 5) == list(range(40, RECORDS + 5))
    assert watchdog.resets == 1


async def test_watchdog_resets_to_the_beginning_when_the_commit_is_beyond_the_end(
    at_the_end: AtTheEnd,
) -> None:
    """The stale commit of an old log: the group's committed offset is beyond the end too."""
    _, group, consumer, tp = at_the_end
    consumer.seek(tp, BEYOND)
    await consumer.commit({tp: BEYOND})
    watchdog = LogEndWatchdog(consumer, group, grace_s=0.3, interval_s=0.05)
    reset = await _until_reset(consumer, tp, watchdog)
    assert reset == {tp: 0}
    assert await _drain(consumer, tp, RECORDS) == list(range(RECORDS))


async def test_watchdog_leaves_a_consumer_inside_the_log_alone(at_the_end: AtTheEnd) -> None:
    settings, group, consumer, tp = at_the_end
    watchdog = LogEndWatchdog(consumer, group, grace_s=0.0, interval_s=0.0)
    for _ in range(5):  # caught up: position == high watermark
        await _next_fetch(consumer, tp)
        assert await watchdog.check() == {}
    await _produce(settings, 5, "b")
    offsets = await _drain(consumer, tp, RECORDS + 5)
    assert offsets == list(range(RECORDS, RECORDS + 5))
    assert await watchdog.check() == {}
    assert watchdog.resets == 0
