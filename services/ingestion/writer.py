"""The writer: ``prices`` -> ``price_ticks``, consumer group ``price-consumer``.

Commit semantics (at-least-once delivery, exactly-once effect):

1. Records are collected into a pending batch until ``writer_batch_size`` records or
   ``writer_batch_timeout_ms`` have passed.
2. Each record is re-validated (stateless checks). Poison records (bad JSON, unknown shape, a
   missing field, a bad value, ...) are sent to ``prices.dlq`` with the reason, the original
   payload and their topic/partition/offset; the DLQ send is acknowledged before step 4.
3. The good ticks are written in ONE database transaction (COPY into a temp table, then
   ``INSERT .. ON CONFLICT DO NOTHING`` on ``(symbol, ts, source)``) and committed.
4. Only then are the offsets (last offset + 1 per partition of the batch) committed to Kafka.

A crash anywhere before 4 redelivers the batch to whoever owns the partitions next; the
natural-key conflict clause makes the second write a no-op, so nothing is lost and nothing is
stored twice. (A crash between 2 and 4 may put a poison record on the DLQ twice: the DLQ is
at-least-once.)

Rebalance: when partitions are revoked, the pending batch that has not started its database
write is discarded, not flushed; the partitions' next owner (or this writer, after the
rebalance, since every new assignment restarts from the committed offsets) reads those records
again. A batch whose database write is in flight finishes it; its offset commit may then be
refused for revoked partitions, which is logged and harmless for the same reason. The database
being unreachable is not poison: the batch is retried with bounded backoff and nothing is
committed until it is stored. SIGTERM (``stop`` set) finishes the pending batch, commits, and
returns.

For fault-injection tests only, ``PRICECAST_WRITER_CRASH_AT=<point>:<n>`` SIGKILLs the process
at the n-th batch reaching ``before_db_commit``, ``after_db_commit`` or ``after_offset_commit``.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime

import psycopg2
import sqlalchemy as sa
from aiokafka import AIOKafkaConsumer, ConsumerRebalanceListener, ConsumerRecord, TopicPartition
from aiokafka.errors import CommitFailedError, IllegalStateError, KafkaError
from aiokafka.structs import OffsetAndMetadata

from services.common.config import Settings
from services.common.kafka import consumer_lag, make_consumer, start_with_backoff
from services.common.metrics import CONSUMER_LAG, TICKS_WRITTEN, WRITER_BATCH_SECONDS
from services.ingestion.dlq import Origin
from services.ingestion.producer import TickPublisher
from services.ingestion.sink import TickSink
from services.ingestion.staleness import StalenessTracker
from services.ingestion.validation import (
    Rejection,
    Tick,
    ValidationFailed,
    check_fields,
    decode,
    future_limit,
)

log = logging.getLogger(__name__)

CRASH_ENV = "PRICECAST_WRITER_CRASH_AT"
MAX_DB_BACKOFF_S = 5.0


@dataclass
class WriterStats:
    batches: int = 0
    consumed: int = 0
    stored: int = 0
    duplicates: int = 0
    dead_lettered: int = 0
    last_batch_at: float | None = None
    lag: int = 0
    extra: dict[str, int] = field(default_factory=dict)


class _CrashHook:
    """Test-only: kill the process hard at a chosen point of the n-th batch."""

    def __init__(self, spec: str | None) -> None:
        self.point, self.n = None, 0
        if spec:
            point, _, n = spec.partition(":")
            self.point, self.n = point, int(n or 1)
        self.seen: dict[str, int] = {}

    def __call__(self, point: str) -> None:
        if point != self.point:
            return
        self.seen[point] = self.seen.get(point, 0) + 1
        if self.seen[point] == self.n:
            log.warning("crash hook: SIGKILL at %s of batch %d", point, self.n)
            os.kill(os.getpid(), signal.SIGKILL)


class _Revocations(ConsumerRebalanceListener):
    def __init__(self, writer: TickWriter) -> None:
        self.writer = writer

    async def on_partitions_revoked(self, revoked: list[TopicPartition]) -> None:
        dropped = len(self.writer.pending)
        self.writer.pending = []
        if dropped:
            log.info("rebalance: discarded %d uncommitted records (redelivered)", dropped)

    async def on_partitions_assigned(self, assigned: list[TopicPartition]) -> None:
        log.info("assigned %d partitions", len(assigned))


def decode_record(record: ConsumerRecord, limit: datetime) -> Tick | Rejection:
    try:
        return check_fields(decode(record.value), limit=limit)
    except ValidationFailed as exc:
        symbol = exc.symbol
        if symbol is None and record.key:
            symbol = record.key.decode("utf-8", errors="replace")
        return Rejection(exc.reason, exc.detail, record.value, symbol)


class TickWriter:
    def __init__(
        self,
        settings: Settings,
        sink: TickSink,
        publisher: TickPublisher,
        staleness: StalenessTracker | None = None,
    ) -> None:
        self.settings = settings
        self.sink = sink
        self.publisher = publisher
        self.staleness = staleness
        self.pending: list[ConsumerRecord] = []
        self.stats = WriterStats()
        self.ready = False
        self._consumer: AIOKafkaConsumer | None = None
        self._crash = _CrashHook(os.environ.get(CRASH_ENV))

    async def lag(self) -> int:
        if self._consumer is None:
            return 0
        lag = await consumer_lag(self._consumer)
        self.stats.lag = lag
        CONSUMER_LAG.labels(self.settings.consumer_group_writer).set(lag)
        return lag

    async def run(self, stop: asyncio.Event) -> None:
        """Consume until ``stop`` is set, then flush the pending batch and leave the group."""
        s = self.settings
        consumer = make_consumer(
            s,
            group_id=s.consumer_group_writer,
            max_poll_records=s.writer_batch_size,
            session_timeout_ms=s.writer_session_timeout_ms,
            heartbeat_interval_ms=s.writer_heartbeat_interval_ms,
            client_id="pricecast-writer",
        )
        consumer.subscribe([s.topic_prices], listener=_Revocations(self))
        await start_with_backoff(consumer.start, s.startup_wait_s, what="kafka consumer")
        self._consumer = consumer
        try:
            await asyncio.to_thread(self.sink.load_known_assets)
        except sa.exc.SQLAlchemyError as exc:  # the cache only saves upserts; go on without it
            log.warning("could not load known assets (%s)", exc)
        self.ready = True
        timeout_s = s.writer_batch_timeout_ms / 1000.0
        started = time.monotonic()
        try:
            while not stop.is_set():
                room = s.writer_batch_size - len(self.pending)
                data = await consumer.getmany(
                    timeout_ms=max(1, int(timeout_s * 1000)), max_records=max(1, room)
                )
                if data and not self.pending:
                    started = time.monotonic()
                for records in data.values():
                    self.pending.extend(records)
                full = len(self.pending) >= s.writer_batch_size
                if self.pending and (full or time.monotonic() - started >= timeout_s):
                    await self.flush(stop)
            if self.pending:  # SIGTERM: finish the batch (unless the database is down)
                await self.flush(stop)
        finally:
            self.ready = False
            self._consumer = None
            await consumer.stop()

    async def flush(self, stop: asyncio.Event | None) -> None:
        batch, self.pending = self.pending, []
        if not batch:
            return
        started = time.perf_counter()
        ticks: list[Tick] = []
        rejects: list[Rejection] = []
        origins: list[Origin | None] = []
        limit = future_limit(self.settings.max_clock_skew_s)
        for record in batch:
            result = decode_record(record, limit)
            if isinstance(result, Rejection):
                rejects.append(result)
                origins.append(Origin(record.topic, record.partition, record.offset))
            else:
                ticks.append(result)
        if rejects:
            await self.publisher.dead_letter(rejects, "writer", origins)
        stored = await self._store(ticks, batch, stop)
        if stored is None:  # stopping while the database is down: leave it to redelivery
            return
        self._crash("after_db_commit")
        await self._commit(batch)
        self._crash("after_offset_commit")
        WRITER_BATCH_SECONDS.observe(time.perf_counter() - started)
        TICKS_WRITTEN.inc(stored)
        st = self.stats
        st.batches += 1
        st.consumed += len(batch)
        st.stored += stored
        st.duplicates += len(ticks) - stored
        st.dead_lettered += len(rejects)
        st.last_batch_at = time.time()
        if self.staleness is not None:
            for t in ticks:
                self.staleness.observe(t.symbol, t.ts)

    async def _store(
        self, ticks: list[Tick], batch: Sequence[ConsumerRecord], stop: asyncio.Event | None
    ) -> int | None:
        delay = 0.2
        while True:
            try:
                return await asyncio.to_thread(self._write, ticks)
            except (sa.exc.OperationalError, psycopg2.OperationalError) as exc:
                log.error("database unavailable (%s); retrying batch in %.1fs", exc, delay)
            except (psycopg2.DataError, psycopg2.IntegrityError) as exc:
                log.error("batch refused by the database (%s); storing tick by tick", exc)
                return await self._store_each(ticks, batch)
            if stop is not None and stop.is_set():
                return None
            await asyncio.sleep(delay)
            delay = min(delay * 2, MAX_DB_BACKOFF_S)

    def _write(self, ticks: list[Tick]) -> int:
        self._crash("before_db_commit")
        return self.sink.write(ticks)

    async def _store_each(self, ticks: list[Tick], batch: Sequence[ConsumerRecord]) -> int:
        inserted, refused = await asyncio.to_thread(self.sink.write_each, ticks)
        if refused:
            rejects = [
                Rejection("db_rejected", err, ticks[i].wire(), ticks[i].symbol)
                for i, err in refused
            ]
            await self.publisher.dead_letter(rejects, "writer")
        return inserted

    async def _commit(self, batch: Sequence[ConsumerRecord]) -> None:
        consumer = self._consumer
        if consumer is None:
            return
        offsets: dict[TopicPartition, int] = {}
        for r in batch:
            tp = TopicPartition(r.topic, r.partition)
            if r.offset >= offsets.get(tp, -1):
                offsets[tp] = r.offset
        assigned = consumer.assignment()
        to_commit = {
            tp: OffsetAndMetadata(o + 1, "") for tp, o in offsets.items() if tp in assigned
        }
        if not to_commit:
            return
        try:
            await consumer.commit(to_commit)
        except (CommitFailedError, IllegalStateError, KafkaError) as exc:
            # Stored already; the next owner re-reads and ON CONFLICT makes it a no-op.
            log.warning(
                "offset commit refused after a rebalance (%s); records will be re-read", exc
            )
