"""How far a consumer group is behind on a topic, robust to brokers with a lax ListOffsets.

The Tansu broker answers ListOffsets(latest) with the base offset of the last record batch
plus one, not the end of the log, when batches hold several records. Fetch responses carry
the true high watermark, so the end of each partition is read from a fetch instead.
"""

from __future__ import annotations

import time

from aiokafka import AIOKafkaConsumer, TopicPartition

from services.common.config import Settings

Offsets = dict[TopicPartition, int]


async def high_watermarks(
    consumer: AIOKafkaConsumer, starts: dict[TopicPartition, int], timeout_s: float = 10.0
) -> dict[TopicPartition, int]:
    """The high watermark of each partition, learnt by fetching from ``starts``."""
    consumer.assign(list(starts))
    for tp, offset in starts.items():
        consumer.seek(tp, offset)
    deadline = time.monotonic() + timeout_s
    marks: dict[TopicPartition, int] = {}
    while len(marks) < len(starts) and time.monotonic() < deadline:
        await consumer.getmany(timeout_ms=200, max_records=1)
        for tp in starts:
            hw = consumer.highwater(tp)
            if hw is not None:
                marks[tp] = hw
    if len(marks) < len(starts):
        raise TimeoutError("could not learn the high watermarks")
    return marks


def _reader(settings: Settings, group: str | None) -> AIOKafkaConsumer:
    return AIOKafkaConsumer(
        bootstrap_servers=settings.kafka_bootstrap_servers,
        group_id=group,
        enable_auto_commit=False,
        fetch_max_bytes=1024 * 1024,
        max_partition_fetch_bytes=64 * 1024,
    )


async def _partitions(reader: AIOKafkaConsumer, topic: str) -> list[TopicPartition]:
    parts = reader.partitions_for_topic(topic) or set()
    if not parts:
        await reader.topics()  # metadata refresh
        parts = reader.partitions_for_topic(topic) or set()
    return [TopicPartition(topic, partition) for partition in sorted(parts)]


async def _committed(reader: AIOKafkaConsumer, parts: list[TopicPartition]) -> Offsets:
    return {tp: (await reader.committed(tp)) or 0 for tp in parts}


async def group_backlog(settings: Settings, group: str, topic: str) -> int:
    """Records on ``topic`` past the offsets ``group`` has committed (without joining it)."""
    reader = _reader(settings, group)
    await reader.start()
    try:
        committed = await _committed(reader, await _partitions(reader, topic))
        marks = await high_watermarks(reader, committed)
        return sum(max(0, marks[tp] - committed[tp]) for tp in committed)
    finally:
        await reader.stop()


async def end_offsets(settings: Settings, topic: str) -> Offsets:
    """The end of each partition of ``topic`` now: every record published so far lies below."""
    reader = _reader(settings, None)
    await reader.start()
    try:
        return await high_watermarks(reader, dict.fromkeys(await _partitions(reader, topic), 0))
    finally:
        await reader.stop()


async def behind(settings: Settings, group: str, targets: Offsets) -> int:
    """Records below ``targets`` that ``group`` has not committed yet. Records published after
    the targets were taken do not count: a live feed cannot keep this above zero."""
    reader = _reader(settings, group)
    await reader.start()
    try:
        committed = await _committed(reader, list(targets))
        return sum(max(0, end - committed[tp]) for tp, end in targets.items())
    finally:
        await reader.stop()
