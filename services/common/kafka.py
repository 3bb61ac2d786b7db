"""Kafka plumbing shared by every service: topics, producers, consumers, JSON codec."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRebalanceListener, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import IllegalStateError, KafkaError, TopicAlreadyExistsError

from services.common.config import Settings
from services.common.metrics import CONSUMER_LAG, CONSUMER_OFFSET_RESETS

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
                name=topic,
                num_partitions=settings.kafka_partitions,
                replication_factor=replicas,
                topic_configs=configs,
            )
            for topic in all_topics(settings)
            if topic not in existing
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


@dataclass
class _Sighting:
    position: int
    since: float  # monotonic seconds when first seen beyond the log end
    polled_ms: int  # the partition's last fetch response (ms) when first seen


class LogEndWatchdog:
    """Moves a consumer back into the log when its position lies beyond the log's end.

    Why: a consumer position is only meaningful for the log it was taken from. When a broker
    loses its log (the in-memory Tansu broker restarted, an unclean leader election), a
    position or committed offset of the old log can lie beyond the end of the new one. Apache
    Kafka answers such a fetch with ``OFFSET_OUT_OF_RANGE`` and the client resets by
    ``auto_offset_reset``; Tansu answers it with no records and no error, so the consumer
    waits silently until the new log grows past the old position, then skips everything
    before it (and its lag reads 0 meanwhile: ``max(0, high watermark - position)``).

    Rule (checked by :meth:`check`, at most every ``interval_s``): a partition whose
    position is greater than the high watermark that a fetch *at that position* reported,
    still so after ``grace_s`` with the same position and confirmed by a newer fetch response,
    is reset: to the group's committed offset when that lies inside the log (``<=`` the high
    watermark), else to the beginning of the log (what ``auto_offset_reset=earliest`` does on
    ``OFFSET_OUT_OF_RANGE``). Each reset logs a warning and increments
    ``pricecast_consumer_offset_resets_total{group}``. Nothing is skipped: every record of
    the current log at or after the new position is delivered; records the consumer had
    already handled are re-read (consumers are idempotent).

    Only the fetcher's own figures are used (``highwater``, ``last_poll_timestamp``): they
    are updated only by a fetch response whose offset is the current position, so a high
    watermark below the position is the broker's word on this very position.
    """

    def __init__(
        self,
        consumer: AIOKafkaConsumer,
        group: str,
        *,
        grace_s: float = 5.0,
        interval_s: float = 1.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.consumer = consumer
        self.group = group
        self.grace_s = grace_s
        self.interval_s = interval_s
        self.clock = clock
        self.resets = 0
        self._seen: dict[TopicPartition, _Sighting] = {}
        self._next_check = 0.0

    async def check(self) -> dict[TopicPartition, int]:
        """Reset the partitions stuck beyond the log end; return them with their new position
        (-1 when the reset to the beginning has not resolved it yet).

        Cheap when nothing is wrong (no network request); meant to be awaited on every
        iteration of a consume loop, between ``getmany`` calls.
        """
        now = self.clock()
        if now < self._next_check:
            return {}
        self._next_check = now + self.interval_s
        assigned = self.consumer.assignment()
        for tp in list(self._seen):
            if tp not in assigned:
                del self._seen[tp]
        reset: dict[TopicPartition, int] = {}
        for tp in sorted(assigned):
            beyond = await self._beyond_end(tp)
            if beyond is None:
                self._seen.pop(tp, None)
                continue
            position, highwater, polled_ms = beyond
            seen = self._seen.get(tp)
            if seen is None or seen.position != position:
                self._seen[tp] = _Sighting(position, now, polled_ms)
                continue
            if now - seen.since < self.grace_s or polled_ms <= seen.polled_ms:
                continue
            offset = await self._reset(tp, position, highwater)
            if offset is not None:
                reset[tp] = offset
            self._seen.pop(tp, None)
        return reset

    async def _beyond_end(self, tp: TopicPartition) -> tuple[int, int, int] | None:
        """(position, high watermark, last fetch ms) when the position is past the log end."""
        highwater = self.consumer.highwater(tp)
        polled_ms = self.consumer.last_poll_timestamp(tp)
        if highwater is None or polled_ms is None:
            return None
        try:
            # A valid position is returned at once; an invalid one (being reset) is not ours.
            position = await asyncio.wait_for(self.consumer.position(tp), 0.05)
        except (TimeoutError, IllegalStateError):
            return None
        if position <= highwater:
            return None
        return position, highwater, polled_ms

    async def _reset(self, tp: TopicPartition, position: int, highwater: int) -> int | None:
        """Seek ``tp`` back into the log; its new position (-1: not known yet), or None when
        the partition was revoked meanwhile."""
        committed: int | None = None
        target = -1
        with contextlib.suppress(KafkaError, TimeoutError):
            committed = await asyncio.wait_for(self.consumer.committed(tp), 5.0)
        try:
            if committed is not None and 0 <= committed <= highwater:
                self.consumer.seek(tp, committed)
                target = committed
                where = f"the committed offset {committed}"
            else:
                await self.consumer.seek_to_beginning(tp)
                with contextlib.suppress(TimeoutError, KafkaError):
                    target = await asyncio.wait_for(self.consumer.position(tp), 5.0)
                where = f"the beginning of the log ({target})"
        except IllegalStateError:  # revoked meanwhile: the next owner starts from the commit
            return None
        self.resets += 1
        CONSUMER_OFFSET_RESETS.labels(self.group).inc()
        log.warning(
            "consumer group %s: position %d of %s lies beyond the log end %d for %.0fs "
            "(the broker lost its log?); reset to %s",
            self.group,
            position,
            tp,
            highwater,
            self.grace_s,
            where,
        )
        return target


class FencedConsumer(ConsumerRebalanceListener):
    """A manual-commit group member: rebalance (generation) fencing and ordered offset commits.

    Both ``prices`` consumers (the writer, the prediction engine's consumer) start their
    ``AIOKafkaConsumer`` through :meth:`start` (subscribed with this fence as its rebalance
    listener), commit through :meth:`commit`, report :meth:`lag` and :meth:`stop` it.

    Commit semantics (at-least-once; the consumer's effect must be idempotent):

    * **What is committed, when.** The owner fetches a batch, notes :attr:`generation`, does
      the batch's work until it is durable, then calls :meth:`commit` with the batch's last
      offset per partition: ``last + 1`` is committed for each partition still assigned.
      Nothing is committed before the batch's work is durable, and the owner commits batches
      strictly in the order it consumed them, so a committed offset means every earlier
      record of the partition was handled. Commits are cumulative: a later commit covers an
      earlier one that failed.
    * **Rebalance.** Every revocation and every assignment bumps :attr:`generation`; a
      revocation first calls ``on_revoked`` (the owner drops what it holds uncommitted for
      those partitions: it is read again). A batch fetched under an older generation is
      *fenced*: its offsets are neither committed (:meth:`commit` returns False) nor sought
      back to (:meth:`seek_back`). The new assignment starts from the group's committed
      offset, which lies before the batch (it was not committed), so the batch is read again,
      by this consumer or the partitions' new owner. Offsets belong to the log they were read
      from: after a broker lost its log (the in-memory broker restarted and the group
      re-joined a new, empty log) an old batch's offsets can lie beyond the new log's end,
      and committing or seeking to them would skip every record before them.
      :class:`LogEndWatchdog` is the second line, for a position beyond the log end anyway.
    * **Refused commits.** A commit the group refuses (``CommitFailedError`` after a rebalance
      the fence did not see yet, a broker error) is logged and is harmless: the batch is
      handled again by the partition's next owner, or the next commit covers it.
    * **At-least-once.** A crash or a rebalance at any point before the commit redelivers the
      batch from the committed offset; nothing is lost, and work may be done twice.
    """

    def __init__(
        self, group: str, on_revoked: Callable[[list[TopicPartition]], None] | None = None
    ) -> None:
        self.group = group
        self.on_revoked = on_revoked
        self.generation = 0  # bumped by every revocation and assignment
        self.fenced = 0  # batches whose offsets were fenced off by a rebalance
        self.consumer: AIOKafkaConsumer | None = None

    async def start(
        self, consumer: AIOKafkaConsumer, topics: list[str], wait_s: float
    ) -> LogEndWatchdog:
        """Subscribe ``consumer`` to ``topics`` with this fence as its rebalance listener and
        start it (waiting up to ``wait_s`` for the broker); its :class:`LogEndWatchdog`."""
        consumer.subscribe(topics, listener=self)
        await start_with_backoff(consumer.start, wait_s, what="kafka consumer")
        self.consumer = consumer
        return LogEndWatchdog(consumer, self.group)

    async def stop(self) -> None:
        """Stop the consumer (it leaves the group); nothing is committed after this."""
        consumer, self.consumer = self.consumer, None
        if consumer is not None:
            await consumer.stop()

    async def lag(self) -> int | None:
        """Records behind (:func:`consumer_lag`, also into ``pricecast_consumer_lag{group}``);
        None when the consumer is not running."""
        if self.consumer is None:
            return None
        lag = await consumer_lag(self.consumer)
        CONSUMER_LAG.labels(self.group).set(lag)
        return lag

    async def on_partitions_revoked(self, revoked: Iterable[TopicPartition]) -> None:
        self.generation += 1  # a batch read before this is not committed any more
        if self.on_revoked is not None:
            self.on_revoked(list(revoked))

    async def on_partitions_assigned(self, assigned: Iterable[TopicPartition]) -> None:
        self.generation += 1  # offsets read before a re-join may be of another log
        partitions = sorted(tp.partition for tp in assigned)
        log.info("consumer group %s: partitions assigned: %s", self.group, partitions)

    def current(self, generation: int, what: str = "the batch") -> bool:
        """Whether no rebalance came since ``generation`` (else counted and logged: fenced)."""
        if generation == self.generation:
            return True
        self.fenced += 1
        log.info("consumer group %s: rebalanced during %s: it is read again", self.group, what)
        return False

    async def commit(self, last_offsets: Mapping[TopicPartition, int], generation: int) -> bool:
        """Commit ``last + 1`` for each partition of the batch still assigned, unless the batch
        is fenced (a rebalance since ``generation``); True when the group took the commit."""
        consumer = self.consumer
        if consumer is None or not self.current(generation, "the batch (not committed)"):
            return False
        assigned = consumer.assignment()
        offsets = {tp: last + 1 for tp, last in last_offsets.items() if tp in assigned}
        if not offsets:
            return False
        try:
            await consumer.commit(offsets)
        except KafkaError as exc:
            log.warning(
                "consumer group %s: offset commit refused (%s); the records are read again "
                "unless a later commit covers them",
                self.group,
                exc,
            )
            return False
        return True

    def seek_back(self, first_offsets: Mapping[TopicPartition, int], generation: int) -> bool:
        """Re-read a failed batch from its first offsets, unless it is fenced (the new
        assignment starts from the committed offset, before the batch, anyway)."""
        consumer = self.consumer
        if consumer is None or not self.current(generation, "the failed batch"):
            return False
        for tp, first in first_offsets.items():
            consumer.seek(tp, first)
        return True
