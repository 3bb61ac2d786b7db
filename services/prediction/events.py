"""Hot reload: listen on ``model-events`` and reload the champions on a promotion.

Every replica must see every promotion, so this consumer has no group: it reads all
partitions from their end (only events after start matter; the champions are loaded from
the registry at start). A registry fingerprint poll every ``prediction_registry_poll_s``
catches promotions whose event was missed (broker outage, event published before start).
"""

from __future__ import annotations

import asyncio
import logging
import time

from aiokafka import AIOKafkaConsumer, TopicPartition

from services.common.config import Settings
from services.common.kafka import loads, start_with_backoff
from services.prediction.models import ModelProvider

log = logging.getLogger(__name__)

PROMOTED = "model_promoted"


class ModelEventsWatcher:
    def __init__(self, settings: Settings, provider: ModelProvider) -> None:
        self.settings = settings
        self.provider = provider
        self.ready = asyncio.Event()
        self.promotions_seen = 0

    async def run(self, stop: asyncio.Event) -> None:
        s = self.settings
        consumer = AIOKafkaConsumer(
            bootstrap_servers=s.kafka_bootstrap_servers,
            group_id=None,
            enable_auto_commit=False,
            auto_offset_reset="latest",
        )
        await start_with_backoff(consumer.start, s.startup_wait_s, what="model-events consumer")
        try:
            await self._assign(consumer, stop)
            self.ready.set()
            next_poll = time.monotonic() + s.prediction_registry_poll_s
            while not stop.is_set():
                batch = await consumer.getmany(timeout_ms=250)
                promoted = False
                for records in batch.values():
                    for record in records:
                        try:
                            event = loads(record.value)
                        except ValueError:
                            log.warning("ignoring a malformed model event")
                            continue
                        if isinstance(event, dict) and event.get("type") == PROMOTED:
                            self.promotions_seen += 1
                            log.info("model promoted: %s", event)
                            promoted = True
                if promoted:
                    await asyncio.to_thread(self.provider.reload)
                elif time.monotonic() >= next_poll:
                    next_poll = time.monotonic() + s.prediction_registry_poll_s
                    try:
                        await asyncio.to_thread(self.provider.reload_if_changed)
                    except Exception:
                        log.warning("registry poll failed", exc_info=True)
        finally:
            await consumer.stop()

    async def _assign(self, consumer: AIOKafkaConsumer, stop: asyncio.Event) -> None:
        topic = self.settings.topic_model_events
        partitions: set[int] | None = None
        while not stop.is_set():
            await consumer.topics()  # refreshes cluster metadata
            partitions = consumer.partitions_for_topic(topic)
            if partitions:
                break
            await asyncio.sleep(0.2)
        tps = [TopicPartition(topic, p) for p in sorted(partitions or ())]
        consumer.assign(tps)
        await consumer.seek_to_end(*tps)
        for tp in tps:
            await consumer.position(tp)  # resolve now: events after this point are seen
