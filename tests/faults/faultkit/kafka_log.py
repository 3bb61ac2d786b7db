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
