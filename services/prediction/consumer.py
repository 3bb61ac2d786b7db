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

Offsets belong to the assignment they were read under. Every rebalance (revocation or
assignment) bumps ``PricesConsumer.generation``; a batch remembers the generation it was
fetched in, and after a rebalance in between its offsets are neither committed nor sought
back to: the new assignment already starts from the group's committed offset, which lies
before the batch (it was not committed), so the batch is read again. This matters when the
broker lost its log (the in-memory broker restarted: the group re-joins a new, empty log):
an offset of the old log is beyond the end of the new one, and a broker that does not answer
``OFFSET_OUT_OF_RANGE`` (Tansu) would leave the consumer waiting there, and then skip every
tick before it. :class:`~services.common.kafka.LogEndWatchdog` is the second line: a
partition whose position stays beyond the log end is moved back into the log.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Iterable
from datetime import UTC, datetime

from aiokafka import AIOKafkaConsumer, ConsumerRebalanceListener, TopicPartition
from aiokafka.errors import CommitFailedError, KafkaError
from aiokafka.partitioner import DefaultPartitioner
from aiokafka.structs import ConsumerRecord
from pydantic import ValidationError

from services.common.config import Settings
from services.common.kafka import (
    LogEndWatchdog,
    consumer_lag,
    make_consumer,
    start_with_backoff,
)
from services.common.metrics import CONSUMER_LAG, FORECAST_ERRORS
from services.common.schemas import Tick
from services.prediction.engine import Interrupted, PredictionEngine, TickIn

log = logging.getLogger(__name__)


class _Rebalance(ConsumerRebalanceListener):
    def __init__(self, owner: PricesConsumer) -> None:
        self.owner = owner

    async def on_partitions_revoked(self, revoked: Iterable[TopicPartition]) -> None:
        self.owner.generation += 1
        self.owner.engine.forget_partitions([tp.partition for tp in revoked])

    async def on_partitions_assigned(self, assigned: Iterable[TopicPartition]) -> None:
        self.owner.generation += 1
        log.info("prediction partitions assigned: %s", sorted(tp.partition for tp in assigned))


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
                tick = Tick.model_validate_json(record.value or b"")
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
        self.consumer: AIOKafkaConsumer | None = None
        self.batches = 0
        self.failures = 0
        self.last_batch_at: datetime | None = None
        # Bumped by every revocation and assignment: offsets of a batch fetched under an
        # older generation are neither committed nor sought back to (module docstring).
        self.generation = 0
        self.stale_batches = 0
        self.watchdog: LogEndWatchdog | None = None

    async def lag(self) -> int | None:
        if self.consumer is None:
            return None
        lag = await consumer_lag(self.consumer)
        CONSUMER_LAG.labels(self.settings.consumer_group_prediction).set(lag)
        return lag

    async def run(self, stop: asyncio.Event) -> None:
        s = self.settings
        consumer = make_consumer(
            s,
            group_id=s.consumer_group_prediction,
            max_poll_records=2000,
            fetch_max_wait_ms=s.prediction_fetch_max_wait_ms,
        )
        consumer.subscribe([s.topic_prices], listener=_Rebalance(self))
        await start_with_backoff(consumer.start, s.startup_wait_s, what="kafka consumer")
        self.consumer = consumer
        self.watchdog = watchdog = LogEndWatchdog(consumer, s.consumer_group_prediction)
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
                generation = self.generation
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
                    self._seek_back(consumer, spans, generation)
                    await _sleep_or_stop(stop, backoff)
                    backoff = min(backoff * 2, 10.0)
                    continue
                backoff = 0.5
                handled = time.perf_counter()
                await self._commit(consumer, spans, generation)
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
                self.last_batch_at = datetime.now(UTC)
        finally:
            self.consumer = None
            await consumer.stop()

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

    def _seek_back(
        self,
        consumer: AIOKafkaConsumer,
        spans: dict[TopicPartition, tuple[int, int]],
        generation: int,
    ) -> None:
        """Re-read a failed batch: back to its first offsets, unless a rebalance came in
        between (the new assignment starts from the committed offset, before the batch, and
        the batch's offsets may be those of a log the broker no longer has)."""
        if generation != self.generation:
            self.stale_batches += 1
            log.info("rebalanced during the failed batch: re-read from the committed offsets")
            return
        for tp, (first, _) in spans.items():
            consumer.seek(tp, first)

    async def _commit(
        self,
        consumer: AIOKafkaConsumer,
        spans: dict[TopicPartition, tuple[int, int]],
        generation: int,
    ) -> None:
        """Commit the batch's offsets, unless a rebalance came in between (see
        :meth:`_seek_back`): then the batch is read again from the committed offsets."""
        if generation != self.generation:
            self.stale_batches += 1
            log.info("rebalanced during the batch: not committing its offsets (re-read)")
            return
        offsets = {tp: last + 1 for tp, (_, last) in spans.items()}
        try:
            await consumer.commit(offsets)
        except (CommitFailedError, KafkaError) as exc:
            # Rebalanced away: the new owner handles the batch again. A broker hiccup: the
            # next commit (cumulative) covers these offsets. Either way nothing is lost.
            log.warning("offset commit failed (%s)", exc)


async def _sleep_or_stop(stop: asyncio.Event, seconds: float) -> None:
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stop.wait(), seconds)
