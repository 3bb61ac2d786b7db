"""Read-only Kafka state for doctor: advertised brokers, topics, offsets, consumer-group lag.

Only metadata, ListOffsets, OffsetFetch and DescribeGroups requests: doctor never joins a
group, never commits and never consumes. Committed offsets are fetched for explicit
partitions (the "all partitions" form is not implemented by every Kafka-compatible broker).
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from dataclasses import dataclass, field

from aiokafka import AIOKafkaClient, AIOKafkaConsumer
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.structs import TopicPartition


@dataclass
class TopicState:
    name: str
    begin: dict[int, int] = field(default_factory=dict)
    end: dict[int, int] = field(default_factory=dict)

    @property
    def partitions(self) -> int:
        return len(self.end)

    @property
    def messages(self) -> int:
        return sum(self.end[partition] - self.begin.get(partition, 0) for partition in self.end)


@dataclass
class GroupLag:
    group: str
    per_partition: dict[TopicPartition, int]  # lag per partition
    committed: dict[TopicPartition, int]  # -1: nothing committed
    members: int | None  # None: the broker did not say

    @property
    def total(self) -> int:
        return sum(self.per_partition.values())

    @property
    def committed_any(self) -> bool:
        return any(offset >= 0 for offset in self.committed.values())


def _ms(timeout_s: float) -> int:
    return max(1000, int(timeout_s * 1000))


async def advertised_brokers(bootstrap: str, timeout_s: float) -> list[tuple[int, str, int]]:
    """Bootstrap, and return what the cluster metadata says its brokers are."""
    client = AIOKafkaClient(
        bootstrap_servers=bootstrap,
        request_timeout_ms=_ms(timeout_s),
        client_id="pricecast-doctor",
    )
    try:
        await asyncio.wait_for(client.bootstrap(), timeout_s)
        return sorted(
            (broker.nodeId, broker.host, broker.port) for broker in client.cluster.brokers()
        )
    finally:
        await client.close()


async def topic_states(
    bootstrap: str, timeout_s: float, topics: Iterable[str] | None = None
) -> dict[str, TopicState]:
    """Begin and end offsets of every partition of ``topics`` (all topics when None) that
    exists; missing topics are absent from the answer."""
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap,
        enable_auto_commit=False,
        request_timeout_ms=_ms(timeout_s) + 1000,
        max_partition_fetch_bytes=4096,
        client_id="pricecast-doctor",
    )
    await asyncio.wait_for(consumer.start(), timeout_s)
    try:
        cluster = await consumer._client.fetch_all_metadata()
        names = sorted(cluster.topics()) if topics is None else list(topics)
        out: dict[str, TopicState] = {}
        tps: list[TopicPartition] = []
        for name in names:
            parts = cluster.partitions_for_topic(name)
            if parts is None:
                continue
            out[name] = TopicState(name)
            tps += [TopicPartition(name, partition) for partition in sorted(parts)]
        if tps:
            begin = await consumer.beginning_offsets(tps)
            end = await consumer.end_offsets(tps)
            high = await _high_watermarks(consumer, {tp: int(end.get(tp, 0)) for tp in tps})
            for tp in tps:
                out[tp.topic].begin[tp.partition] = int(begin.get(tp, 0))
                out[tp.topic].end[tp.partition] = max(int(end.get(tp, 0)), high.get(tp, 0))
        return out
    finally:
        await consumer.stop()


async def _high_watermarks(
    consumer: AIOKafkaConsumer, ends: dict[TopicPartition, int], timeout_s: float = 2.0
) -> dict[TopicPartition, int]:
    """The high watermark a fetch reports, per non-empty partition.

    ListOffsets(latest) is authoritative on Apache Kafka, but the in-memory Tansu broker
    answers the base offset of the last record *batch* plus one, which undercounts batched
    topics; a fetch of the last batch carries the true high watermark. Reading one small
    batch per partition is cheap on either broker.
    """
    wanted = [tp for tp, end in ends.items() if end > 0]
    if not wanted:
        return {}
    consumer.assign(wanted)
    for tp in wanted:
        consumer.seek(tp, ends[tp] - 1)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    while loop.time() < deadline and any(consumer.highwater(tp) is None for tp in wanted):
        await consumer.getmany(*wanted, timeout_ms=200, max_records=1)
    return {tp: int(consumer.highwater(tp) or 0) for tp in wanted}


async def group_lag(
    bootstrap: str, group: str, topics: dict[str, TopicState], timeout_s: float
) -> GroupLag:
    """Lag of ``group`` on ``topics``: end offset minus the committed offset, or minus the
    beginning when the group committed nothing (it would start from the earliest message)."""
    admin = AIOKafkaAdminClient(
        bootstrap_servers=bootstrap, request_timeout_ms=_ms(timeout_s), client_id="pricecast-doctor"
    )
    await asyncio.wait_for(admin.start(), timeout_s)
    try:
        tps = [
            TopicPartition(topic.name, partition)
            for topic in topics.values()
            for partition in sorted(topic.end)
        ]
        offsets = await admin.list_consumer_group_offsets(group, partitions=tps) if tps else {}
        committed = {tp: int(offsets[tp].offset) if tp in offsets else -1 for tp in tps}
        lag: dict[TopicPartition, int] = {}
        for tp in tps:
            state = topics[tp.topic]
            start = committed[tp] if committed[tp] >= 0 else state.begin.get(tp.partition, 0)
            lag[tp] = max(0, state.end[tp.partition] - start)
        members = await _members(admin, group)
        return GroupLag(group, lag, committed, members)
    finally:
        await admin.close()


async def _members(admin: AIOKafkaAdminClient, group: str) -> int | None:
    try:
        responses = await admin.describe_consumer_groups([group])
    except Exception:  # noqa: BLE001 - membership is extra evidence, not the check
        return None
    for response in responses:
        for group_info in response.groups:
            error_code, group_id, state = group_info[0], group_info[1], group_info[2]
            if group_id == group and error_code == 0:
                return 0 if state in ("Empty", "Dead") else len(group_info[5])
    return None
