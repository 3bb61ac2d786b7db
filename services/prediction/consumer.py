"""The ``prediction-engine`` consumer of ``prices`` and its commit semantics.

Commit semantics (at-least-once, idempotent):

* A batch from ``getmany`` is handled completely by the engine before anything is committed:
  every forecast it called for is in the database (the durable marker, written last), in
  Redis and acknowledged on ``predictions``; its scores and retrain requests are stored.
* Only then are the offsets *of that batch* (last offset + 1 per partition) committed, if
  no rebalance came in between (below).
* When handling fails (database, broker), nothing is committed, the keys of the batch lose
  their in-memory state and the consumer seeks back to the first offset of the batch (if no
  rebalance came in between), so the batch is read again after a backoff. When the process
  dies, the next owner of the partition starts at the last committed offset; the engine's
  resume step re-forecasts the newest bar before the first tick it sees unless the database
  already holds it. Re-doing work is harmless: predictions are upserted on their primary
  key, scores are recomputed, retrain requests are unique while open.
* Re-forecasts after a model promotion (``PredictionEngine.run_queued``) run between batches
  on this task, for the symbols of the partitions assigned here. They stand for no offset:
  a failed run stays queued and is retried before the next batch.
* On SIGTERM the current batch is finished and committed (unless it is waiting for the writer,
  in which case it is abandoned uncommitted) and the consumer leaves its group.

Two replicas in the group split the partitions, hence the symbols (key = symbol). A
rebalance drops the state of revoked partitions; a commit refused because of a rebalance just
means the batch is handled again by the new owner.

Offsets belong to the assignment they were read under: a batch fetched before a rebalance
(revocation or assignment) is neither committed nor sought back to, it is read again from the
committed offsets (:class:`~services.common.kafka.FencedConsumer` has the fencing and the commit
rules; its ``generation`` and ``fenced`` are ``PricesConsumer.generation`` and
``PricesConsumer.stale_batches``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from datetime import UTC

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.partitioner import DefaultPartitioner
from aiokafka.structs import ConsumerRecord
from pydantic import ValidationError

from services.common.config import Settings
from services.common.kafka import FencedConsumer, LogEndWatchdog, make_consumer
from services.common.metrics import FORECAST_ERRORS
from services.common.schemas import Tick
from services.prediction.engine import Interrupted, PredictionEngine, TickIn

log = logging.getLogger(__name__)


def parse_batch(
    batch: dict[TopicPartition, list[ConsumerRecord]],
) -> tuple[list[TickIn], dict[TopicPartition, tuple[int, int]]]:
    """Ticks in partition order, and (first, last) offset of each partition in the batch."""
    ticks: list[TickIn] = []
    spans: dict[TopicPartition, tuple[int, int]] = {}
    for tp, records in batch.items():
        if not records:
            continue
        spans[tp] = (records[0].offset, records[-1].offset)
        for record in records:
            try:
                tick = Tick.from_json(record.value or b"")
            except ValidationError:
                FORECAST_ERRORS.labels("bad_tick").inc()
                log.warning("skipping malformed tick at %s@%d", tp, record.offset)
                continue
            ts = tick.ts if tick.ts.tzinfo else tick.ts.replace(tzinfo=UTC)
            ticks.append((tick.symbol, ts, tp.partition))
    return ticks, spans


class PricesConsumer:
    def __init__(self, settings: Settings, engine: PredictionEngine) -> None:
        self.settings = settings
        self.engine = engine
        self.batches = 0
        self.failures = 0
        self.fence = FencedConsumer(
            settings.consumer_group_prediction,
            on_revoked=lambda revoked: engine.forget_partitions([tp.partition for tp in revoked]),
        )
        self.watchdog: LogEndWatchdog | None = None

    @property
    def generation(self) -> int:
        """Bumped by every revocation and assignment (:class:`FencedConsumer`)."""
        return self.fence.generation

    @property
    def stale_batches(self) -> int:
        """Batches whose offsets a rebalance fenced off (neither committed nor sought back)."""
        return self.fence.fenced

    @property
    def consumer(self) -> AIOKafkaConsumer | None:
        """The running consumer (None when not running)."""
        return self.fence.consumer

    async def lag(self) -> int | None:
        return await self.fence.lag()

    async def run(self, stop: asyncio.Event) -> None:
        settings = self.settings
        consumer = make_consumer(
            settings,
            group_id=settings.consumer_group_prediction,
            max_poll_records=2000,
            fetch_max_wait_ms=settings.prediction_fetch_max_wait_ms,
        )
        self.watchdog = watchdog = await self.fence.start(
            consumer, [settings.topic_prices], settings.startup_wait_s
        )
        backoff = 0.5
        try:
            while not stop.is_set():
                await watchdog.check()
                if self.engine.queued and consumer.assignment():
                    try:
                        await self.engine.run_queued(self._owner(consumer))
                    except Exception:
                        self.failures += 1
                        log.exception("re-forecast failed; it stays queued")
                        await _sleep_or_stop(stop, backoff)
                        backoff = min(backoff * 2, 10.0)
                        continue
                batch = await consumer.getmany(timeout_ms=200)
                if not batch:
                    continue
                generation = self.fence.generation
                ticks, spans = parse_batch(batch)
                started = time.perf_counter()
                try:
                    report = await self.engine.handle(ticks, stop)
                except Interrupted:
                    log.info("stopping with an uncommitted batch (it will be re-read)")
                    break
                except Exception:
                    self.failures += 1
                    log.exception("batch failed; re-reading it in %.1fs", backoff)
                    self.engine.forget_keys(ticks)
                    self.fence.seek_back(
                        {tp: first for tp, (first, _) in spans.items()}, generation
                    )
                    await _sleep_or_stop(stop, backoff)
                    backoff = min(backoff * 2, 10.0)
                    continue
                backoff = 0.5
                handled = time.perf_counter()
                await self.fence.commit({tp: last for tp, (_, last) in spans.items()}, generation)
                log.debug(
                    "batch of %d ticks: %d forecasts, %d scored; handled in %.1f ms, "
                    "committed in %.1f ms",
                    report.ticks,
                    len(report.outcomes),
                    report.scored,
                    (handled - started) * 1000,
                    (time.perf_counter() - handled) * 1000,
                )
                self.batches += 1
        finally:
            await self.fence.stop()

    def _owner(self, consumer: AIOKafkaConsumer) -> Callable[[str], bool]:
        """Whether a symbol's ticks land on a partition assigned here (key = symbol, the
        producers' default murmur2 partitioner)."""
        topic = self.settings.topic_prices
        partitions = sorted(consumer.partitions_for_topic(topic) or ())
        mine = {tp.partition for tp in consumer.assignment() if tp.topic == topic}
        partitioner = DefaultPartitioner()

        def owns(symbol: str) -> bool:
            if not partitions:
                return False
            return partitioner(symbol.encode(), partitions, partitions) in mine

        return owns


async def _sleep_or_stop(stop: asyncio.Event, seconds: float) -> None:
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stop.wait(), seconds)
