"""Each API process reads ``predictions`` and ``prices`` itself, every partition.

No consumer group: replicas that shared one would split the partitions between them and
each would deliver only part of the stream. The consumer has ``group_id=None`` and assigns
itself every partition of both topics (re-checked every ``REFRESH_S`` for new partitions),
starting at the end: a stream carries what happens from now on, the snapshot on subscribe
gives the state before. It commits nothing and is invisible to the lag of the real groups.

The loop only hands records over: predictions to the hub (one envelope for every
subscriber), ticks to the coalescer and the bar closer, and only for symbols someone here
subscribes to. Nothing in it awaits a client or the database.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import time
from datetime import datetime
from typing import Any

import orjson
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.errors import KafkaError

from services.api.core.bounded import BackgroundTask, bounded
from services.api.stream.bars import BarCloser
from services.api.stream.hub import Hub
from services.api.stream.ticks import TickCoalescer
from services.common.config import Settings

log = logging.getLogger(__name__)

REFRESH_S = 30.0


class KafkaFeed:
    def __init__(self, settings: Settings, hub: Hub, ticks: TickCoalescer, bars: BarCloser):
        self.settings = settings
        self.hub = hub
        self.ticks = ticks
        self.bars = bars
        self._task = BackgroundTask("stream-feed", "stream feed", 5.0)
        self._consumer: AIOKafkaConsumer | None = None
        self.assigned: list[TopicPartition] = []
        self.ready = False  # both topics assigned, start offsets resolved
        self.records = 0
        self.last_record_at: float | None = None
        self.error: str | None = None

    def _make_consumer(self) -> AIOKafkaConsumer:
        return AIOKafkaConsumer(
            bootstrap_servers=self.settings.kafka_bootstrap_servers,
            group_id=None,
            enable_auto_commit=False,
            auto_offset_reset="latest",
            client_id=f"pricecast-api-stream-{socket.gethostname()}-{os.getpid()}",
            fetch_max_wait_ms=self.settings.stream_fetch_max_wait_ms,
            max_poll_records=5000,
        )

    async def _assign(self, consumer: AIOKafkaConsumer) -> bool:
        """Assign every partition of both topics; True when the assignment changed."""
        await consumer.topics()  # refreshes metadata
        wanted: list[TopicPartition] = []
        for topic in (self.settings.topic_predictions, self.settings.topic_prices):
            parts = consumer.partitions_for_topic(topic) or set()
            wanted.extend(TopicPartition(topic, partition) for partition in sorted(parts))
        if set(wanted) == set(self.assigned):
            return False
        positions = {tp: await consumer.position(tp) for tp in self.assigned}
        consumer.assign(wanted)
        for tp in wanted:
            if tp in positions:
                consumer.seek(tp, positions[tp])
            else:
                await consumer.position(tp)  # resolve "latest" now: nothing after is missed
        self.assigned = wanted
        self.ready = all(
            consumer.partitions_for_topic(topic_name)
            for topic_name in (self.settings.topic_predictions, self.settings.topic_prices)
        )
        log.info("stream feed reads %d partitions", len(wanted))
        return True

    async def _run(self) -> None:
        delay = 0.5
        while True:
            consumer = self._consumer = self._make_consumer()
            try:
                await consumer.start()
                self.assigned, self.ready = [], False
                await self._consume(consumer)
            except asyncio.CancelledError:
                raise
            except (KafkaError, OSError) as exc:
                self.error = f"{type(exc).__name__}: {exc}"
                log.warning("stream feed: kafka failed (%s); retrying in %.1fs", exc, delay)
            except Exception as exc:
                self.error = f"{type(exc).__name__}: {exc}"
                log.exception("stream feed failed; restarting in %.1fs", delay)
            finally:
                self._consumer = None
                try:
                    await bounded(consumer.stop(), 3.0, "stream consumer stop")
                except Exception:
                    log.debug("stream consumer stop failed", exc_info=True)
            await asyncio.sleep(delay)
            delay = min(delay * 2, 10.0)

    async def _consume(self, consumer: AIOKafkaConsumer) -> None:
        refreshed = 0.0
        while True:
            now = time.monotonic()
            if now - refreshed >= (REFRESH_S if self.ready else 1.0):
                refreshed = now
                await self._assign(consumer)
            if not self.assigned:
                await asyncio.sleep(0.5)
                continue
            batches = await consumer.getmany(timeout_ms=1000)
            self.error = None
            for tp, records in batches.items():
                if tp.topic == self.settings.topic_predictions:
                    for record in records:
                        if self._prediction(record):
                            # Let the senders drain between messages of a burst: a burst
                            # longer than a queue must not overflow clients that keep up.
                            await asyncio.sleep(0)
                else:
                    wanted = self.hub.price_keys
                    for record in records:
                        if record.key in wanted:
                            self._tick(record)
                self.records += len(records)
                self.last_record_at = time.time()

    def _prediction(self, record: Any) -> bool:
        """Publish one prediction record; True when some subscriber here took it."""
        raw: bytes | None = record.value
        if raw is None:
            return False
        try:
            head = orjson.loads(raw)
            channel = f"predictions:{head['symbol']}:{head['interval']}"
        except (orjson.JSONDecodeError, KeyError, TypeError):
            log.debug("unreadable prediction record at offset %s skipped", record.offset)
            return False
        if not self.hub.interested(channel):
            return False
        born = record.timestamp / 1000
        return self.hub.publish("prediction", channel, raw.decode(), born, False) > 0

    def _tick(self, record: Any) -> None:
        key: bytes | None = record.key
        raw: bytes | None = record.value
        if key is None or raw is None:
            return
        symbol = key.decode("utf-8", "replace")
        born = record.timestamp / 1000
        if self.hub.interested(f"ticks:{symbol}"):
            self.ticks.offer(symbol, raw, born)
        if self.bars.wants(symbol):
            try:
                ts = datetime.fromisoformat(orjson.loads(raw)["ts"])
            except (orjson.JSONDecodeError, KeyError, TypeError, ValueError):
                return
            self.bars.observe(symbol, ts, born)

    def start(self) -> None:
        self._task.start(self._run)

    async def close(self) -> None:
        await self._task.stop()

    def stats(self) -> dict[str, Any]:
        return {
            "running": self._task.running,
            "ready": self.ready,
            "partitions": len(self.assigned),
            "records": self.records,
            "last_record_age_s": (
                round(time.time() - self.last_record_at, 3) if self.last_record_at else None
            ),
            "error": self.error,
        }
