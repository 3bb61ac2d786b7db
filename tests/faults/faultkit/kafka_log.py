"""Reading the broker's whole ``prices`` log: where did a lost acknowledged tick go?

A tick acknowledged by the broker but never stored is either *in the log* (the writer skipped
it: a consumer-side fault) or *not in the log* (the broker acknowledged it and did not keep
it). The report says which."""

from __future__ import annotations

import asyncio
from datetime import datetime

import orjson
from aiokafka import AIOKafkaConsumer, TopicPartition

from services.ingestion.validation import parse_ts


async def _read_all(
    bootstrap: str, topic: str, timeout_s: float = 30.0
) -> set[tuple[str, datetime]]:
    """Every (symbol, ts) in ``topic`` up to the end offsets seen at the start (the load keeps
    producing meanwhile: what comes later is not needed)."""
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap, enable_auto_commit=False, auto_offset_reset="earliest"
    )
    await consumer.start()
    keys: set[tuple[str, datetime]] = set()
    try:
        await consumer.topics()
        parts = [TopicPartition(topic, p) for p in (consumer.partitions_for_topic(topic) or [])]
        consumer.assign(parts)
        await consumer.seek_to_beginning(*parts)
        ends = await consumer.end_offsets(parts)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        while loop.time() < deadline:
            pending = [tp for tp in parts if await consumer.position(tp) < ends[tp]]
            if not pending:
                break
            batch = await consumer.getmany(*pending, timeout_ms=500, max_records=10000)
            for records in batch.values():
                for r in records:
                    body = orjson.loads(r.value or b"{}")
                    keys.add((body["symbol"], parse_ts(body["ts"])))
        else:
            raise TimeoutError(f"could not read {topic} to its end within {timeout_s}s")
    finally:
        await consumer.stop()
    return keys


def log_keys(bootstrap: str, topic: str) -> set[tuple[str, datetime]]:
    return asyncio.run(_read_all(bootstrap, topic))


async def _committed_beyond_end(
    bootstrap: str, group: str, topic: str, timeout_s: float = 15.0
) -> dict[int, tuple[int, int]]:
    """Partitions where ``group``'s committed offset lies beyond the log's end, with
    (committed, high watermark). An offset of a log the broker lost (a commit of the old
    instance's offsets after the group re-joined the new one) shows up here; a consumer of
    the live log never commits beyond what it read. The end is the high watermark a fetch
    reports (Tansu's ListOffsets(latest) can under-read); it is read after the commits, and
    it only grows."""
    from aiokafka.admin import AIOKafkaAdminClient

    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
    await consumer.start()
    try:
        await consumer.topics()
        parts = [TopicPartition(topic, p) for p in (consumer.partitions_for_topic(topic) or [])]
        admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
        await admin.start()
        try:
            # Tansu drops the connection on an OffsetFetch for "all partitions": name them.
            committed = await admin.list_consumer_group_offsets(group, partitions=parts)
        finally:
            await admin.close()
        mine = {tp: meta.offset for tp, meta in committed.items() if meta.offset >= 0}
        if not mine:
            return {}
        consumer.assign(list(mine))
        for tp in mine:
            consumer.seek(tp, 0)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        while any(consumer.highwater(tp) is None for tp in mine):
            if loop.time() > deadline:
                raise TimeoutError(f"no fetch answer for {topic} within {timeout_s}s")
            await consumer.getmany(timeout_ms=200, max_records=1)
        ends = {tp: consumer.highwater(tp) or 0 for tp in mine}
    finally:
        await consumer.stop()
    return {tp.partition: (offset, ends[tp]) for tp, offset in mine.items() if offset > ends[tp]}


def committed_beyond_end(bootstrap: str, group: str, topic: str) -> dict[int, tuple[int, int]]:
    return asyncio.run(_committed_beyond_end(bootstrap, group, topic))
