"""The writer: ``prices`` -> ``price_ticks``, consumer group ``price-consumer``.

Commit semantics (at-least-once delivery, exactly-once effect):

1. Records are collected into a pending batch until ``writer_batch_size`` records or
   ``writer_batch_timeout_ms`` have passed, and the previous batch is done with step 4. While
   it is not, the pending batch keeps growing, up to ``BATCH_GROWTH`` times
   ``writer_batch_size``: when the database is the bottleneck, it gets fewer, larger
   statements (its per-statement work, such as the bar trigger, is then shared by more rows).
2. Each record is re-validated as it arrives (stateless checks, :func:`~services.ingestion.
   batch.decode_batch`). Poison records (bad JSON, unknown shape, a missing field, a bad
   value, ...) are sent to ``prices.dlq`` with the reason, the original payload and their
   topic/partition/offset; the DLQ send is acknowledged before step 4.
3. The good ticks are written in ONE database transaction (normally one ``COPY`` straight into
   ``price_ticks``; after a conflict, COPY into a temp table then ``INSERT .. ON CONFLICT DO
   NOTHING`` on ``(symbol, ts, source, trade_id)``) and committed.
4. Only then are the offsets (last offset + 1 per partition of the batch) committed to Kafka.

Pipelining: steps 3-4 of batch N run in a task (the database work in a thread, where psycopg2
releases the GIL) while the main loop fetches and validates (steps 1-2) the records of batch
N+1. At most one batch is in steps 3-4 at a time, and batch N+1 enters step 3 only after batch
N finished step 4, so batches are stored and their offsets committed strictly in consumption
order: an offset committed for a partition still means every earlier record of it is stored
or dead-lettered.

A crash anywhere before 4 redelivers the batch to whoever owns the partitions next; the
natural-key conflict clause makes the second write a no-op, so nothing is lost and nothing is
stored twice. (A crash between 2 and 4 may put a poison record on the DLQ twice: the DLQ is
at-least-once.)

Rebalance: when partitions are revoked, every record whose batch has not started its database
write (the pending batch, and records being validated) is discarded, not flushed; the partitions'
next owner (or this writer, after the rebalance, since every new assignment restarts from the
committed offsets) reads those records again. A batch whose database write is in flight
finishes it; its offset commit is then skipped (a batch read before a rebalance is fenced off),
or refused by the group, which is logged and harmless for the same reason: the generation
fencing and the commits are :class:`~services.common.kafka.FencedConsumer`'. A position left
beyond the log end anyway is moved back by :class:`~services.common.kafka.LogEndWatchdog`.
The database being unreachable is not poison: the batch is retried with bounded backoff and
nothing is committed until it is stored. SIGTERM (``stop`` set) finishes the batch in flight
and the pending one, commits, and returns; if the database is down then, the batch is left
uncommitted (for redelivery) and nothing after it is written.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

import psycopg2
import sqlalchemy as sa
from aiokafka import ConsumerRecord, TopicPartition

from services.common.config import Settings
from services.common.kafka import FencedConsumer, make_consumer
from services.common.metrics import TICKS_WRITTEN, WRITER_BATCH_SECONDS
from services.common.schemas import Tick
from services.ingestion.batch import DecodedBatch, decode_batch
from services.ingestion.dlq import Origin
from services.ingestion.producer import TickPublisher
from services.ingestion.sink import TickSink
from services.ingestion.staleness import StalenessTracker
from services.ingestion.validation import Rejection, check_fields, decode, future_limit

log = logging.getLogger(__name__)

MAX_DB_BACKOFF_S = 5.0
BATCH_GROWTH = 4  # a pending batch may grow to this many times writer_batch_size (see step 1)
BUSY_POLL_MS = 5  # how often a due batch checks whether the database stage is free
DB_UNAVAILABLE = (sa.exc.OperationalError, psycopg2.OperationalError, psycopg2.InterfaceError)


@dataclass(slots=True)
class WriterStats:
    """What the writer has done since it started (``/health`` and doctor read it). Slots: it is
    updated on every batch, and a misspelt counter fails instead of adding an attribute."""

    batches: int = 0
    consumed: int = 0
    stored: int = 0
    duplicates: int = 0
    dead_lettered: int = 0
    lag: int = 0


@dataclass
class _Chunk:
    """Records of one fetch after step 2, with the future limit they were validated with."""

    records: list[ConsumerRecord]
    decoded: DecodedBatch
    limit: datetime


@dataclass
class _Batch:
    """A batch ready for steps 3-4: its chunks, their COPY lines, offsets and generation."""

    chunks: list[_Chunk]
    rows: list[str]
    newest: dict[str, datetime]  # newest tick per symbol
    offsets: dict[TopicPartition, int]  # last offset per partition
    consumed: int
    rejected: int
    generation: int
    started: float


def decode_records(records: Sequence[ConsumerRecord], limit: datetime) -> DecodedBatch:
    """Step 2 for ``records``: COPY lines of the good ones, rejections of the poison ones (a
    rejection without a symbol of its own takes the record key's)."""
    decoded = decode_batch([record.value for record in records], limit)
    for slot, (index, rej) in enumerate(decoded.rejects):
        key = records[index].key
        if rej.symbol is None and key:
            symbol = key.decode("utf-8", errors="replace")
            decoded.rejects[slot] = (index, Rejection(rej.reason, rej.detail, rej.payload, symbol))
    return decoded


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
        self.pending_offsets: dict[TopicPartition, int] = {}  # last offset per partition
        self.pending_chunks: list[_Chunk] = []  # the pending records, validated
        self.fence = FencedConsumer(settings.consumer_group_writer, on_revoked=self._revoked)
        self.stats = WriterStats()
        self.ready = False
        self._halted = False  # a batch was left unstored at stop: write nothing after it

    def _revoked(self, revoked: list[TopicPartition]) -> None:
        """Drop the pending batch: it is read again from the committed offsets."""
        dropped = len(self.pending)
        self.pending, self.pending_offsets, self.pending_chunks = [], {}, []
        if dropped:
            log.info("rebalance: discarded %d uncommitted records (redelivered)", dropped)

    async def lag(self) -> int:
        lag = await self.fence.lag()
        if lag is None:
            return 0
        self.stats.lag = lag
        return lag

    async def run(self, stop: asyncio.Event) -> None:
        """Consume until ``stop`` is set, then finish the batch in flight and the pending one,
        and leave the group."""
        settings = self.settings
        consumer = make_consumer(
            settings,
            group_id=settings.consumer_group_writer,
            max_poll_records=settings.writer_batch_size,
            session_timeout_ms=settings.writer_session_timeout_ms,
            heartbeat_interval_ms=settings.writer_heartbeat_interval_ms,
            client_id="pricecast-writer",
        )
        watchdog = await self.fence.start(
            consumer, [settings.topic_prices], settings.startup_wait_s
        )
        try:
            await asyncio.to_thread(self.sink.load_known_assets)
        except sa.exc.SQLAlchemyError as exc:  # the cache only saves upserts; go on without it
            log.warning("could not load known assets (%s)", exc)
        self.ready = True
        timeout_s = settings.writer_batch_timeout_ms / 1000.0
        size = settings.writer_batch_size
        started = time.monotonic()
        inflight: asyncio.Task[bool] | None = None
        try:
            while not stop.is_set() and not self._halted:
                await watchdog.check()
                busy = inflight is not None and not inflight.done()
                due = bool(self.pending) and (
                    len(self.pending) >= size or time.monotonic() - started >= timeout_s
                )
                if due and not busy:
                    inflight = await self._hand_over(self._take(), inflight, stop)
                    continue
                room = (size * BATCH_GROWTH if busy else size) - len(self.pending)
                if room <= 0 and inflight is not None:  # busy, grown as far as allowed: wait
                    await asyncio.wait([inflight])
                    continue
                if due:  # waiting for the database stage: look again soon
                    wait_s = BUSY_POLL_MS / 1000.0
                elif self.pending:
                    wait_s = timeout_s - (time.monotonic() - started)
                else:
                    wait_s = timeout_s
                data = await consumer.getmany(
                    timeout_ms=max(1, int(wait_s * 1000)), max_records=max(1, room)
                )
                if data:
                    if not self.pending:
                        started = time.monotonic()
                    await self._accept(data)
            if inflight is not None:  # SIGTERM: finish the batch in flight ...
                task, inflight = inflight, None
                await task
            if self.pending and not self._halted:  # ... and the pending one
                await self.flush(stop)
        finally:
            self.ready = False
            abandoned = inflight is not None and not inflight.done()
            if inflight is not None and abandoned:
                # Its offsets are not committed; a write that still lands is re-read later
                # and is a no-op then. Its thread may still use the sink's connection.
                inflight.cancel()
                await asyncio.gather(inflight, return_exceptions=True)
            if not abandoned:
                await asyncio.to_thread(self.sink.close)
            await self.fence.stop()

    async def flush(self, stop: asyncio.Event | None) -> None:
        """Steps 3-4 for the pending records, now (no batch may be in flight)."""
        if self.pending:
            await self._complete(self._take(), stop)

    async def _accept(self, data: dict[TopicPartition, list[ConsumerRecord]]) -> None:
        """Step 2 for a fetch: validate, dead-letter the poison, add to the pending batch."""
        generation = self.fence.generation
        records: list[ConsumerRecord] = []
        for part in data.values():
            records.extend(part)
        limit = future_limit(self.settings.max_clock_skew_s)
        decoded = decode_records(records, limit)
        if decoded.rejects:
            await self.publisher.dead_letter(
                [rej for _, rej in decoded.rejects],
                "writer",
                [
                    Origin(records[index].topic, records[index].partition, records[index].offset)
                    for index, _ in decoded.rejects
                ],
            )
            if not self.fence.current(generation, f"the validation of {len(records)} records"):
                return  # revoked meanwhile: they will be read again
        self.pending.extend(records)
        for tp, part in data.items():
            self.pending_offsets[tp] = part[-1].offset
        self.pending_chunks.append(_Chunk(records, decoded, limit))

    def _take(self) -> _Batch:
        """The pending batch, ready for steps 3-4; pending is empty again."""
        chunks, self.pending_chunks = self.pending_chunks, []
        offsets, self.pending_offsets = self.pending_offsets, {}
        consumed, self.pending = len(self.pending), []
        if len(chunks) == 1:
            rows, newest = chunks[0].decoded.rows, chunks[0].decoded.newest
        else:
            rows, newest = [], {}
            for chunk in chunks:
                rows.extend(chunk.decoded.rows)
                for symbol, ts in chunk.decoded.newest.items():
                    if symbol not in newest or ts > newest[symbol]:
                        newest[symbol] = ts
        rejected = sum(len(chunk.decoded.rejects) for chunk in chunks)
        generation, started = self.fence.generation, time.perf_counter()
        return _Batch(chunks, rows, newest, offsets, consumed, rejected, generation, started)

    async def _hand_over(
        self, batch: _Batch, inflight: asyncio.Task[bool] | None, stop: asyncio.Event
    ) -> asyncio.Task[bool] | None:
        """Start steps 3-4 of ``batch`` once the batch in flight is done (in order)."""
        if inflight is not None and not await inflight:
            self._halted = True  # the previous batch is not stored: neither is this one
            return None
        if not self.fence.current(batch.generation, f"a batch of {batch.consumed} records"):
            return None  # discarded before its write: it is read again
        return asyncio.create_task(self._complete(batch, stop), name="writer-batch")

    async def _complete(self, batch: _Batch, stop: asyncio.Event | None) -> bool:
        """Steps 3-4; False if the batch was left unstored (stopping while the database is
        down), True once it is stored and its offsets were offered for commit."""
        stored = await self._store(batch, stop)
        if stored is None:  # stopping while the database is down: leave it to redelivery
            self._halted = True
            return False
        await self.commit(batch)
        WRITER_BATCH_SECONDS.observe(time.perf_counter() - batch.started)
        TICKS_WRITTEN.inc(stored)
        st = self.stats
        st.batches += 1
        st.consumed += batch.consumed
        st.stored += stored
        st.duplicates += len(batch.rows) - stored
        st.dead_lettered += batch.rejected
        if self.staleness is not None:
            for symbol, ts in batch.newest.items():
                self.staleness.observe(symbol, ts)
        return True

    async def _store(self, batch: _Batch, stop: asyncio.Event | None) -> int | None:
        delay = 0.2
        rows, symbols = batch.rows, list(batch.newest)
        while True:
            try:
                return await asyncio.to_thread(self.sink.write_rows, rows, symbols)
            except DB_UNAVAILABLE as exc:
                log.error("database unavailable (%s); retrying batch in %.1fs", exc, delay)
            except (psycopg2.DataError, psycopg2.IntegrityError) as exc:
                log.error("batch refused by the database (%s); storing tick by tick", exc)
                return await self._store_each(batch)
            if stop is not None and stop.is_set():
                return None
            await asyncio.sleep(delay)
            delay = min(delay * 2, MAX_DB_BACKOFF_S)

    async def _store_each(self, batch: _Batch) -> int:
        """The batch's good ticks one by one (a rare path: they are validated again)."""
        ticks: list[Tick] = [
            check_fields(decode(chunk.records[index].value), limit=chunk.limit)
            for chunk in batch.chunks
            for index in chunk.decoded.good
        ]
        inserted, refused = await asyncio.to_thread(self.sink.write_each, ticks)
        if refused:
            rejects = [
                Rejection("db_rejected", err, ticks[index].wire(), ticks[index].symbol)
                for index, err in refused
            ]
            await self.publisher.dead_letter(rejects, "writer")
        return inserted

    async def commit(self, batch: _Batch) -> None:
        """Step 4: commit the stored batch's offsets, unless a rebalance fenced it off (read
        before a rebalance: its offsets may belong to a log the broker lost)."""
        await self.fence.commit(batch.offsets, batch.generation)
