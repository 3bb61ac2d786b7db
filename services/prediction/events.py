"""Hot reload: listen on ``model-events`` and reload the champions on a promotion.

Every replica must see every promotion, so this consumer has no group: it reads all
partitions from their end (only events after start matter; the champions are loaded from
the registry at start). A registry fingerprint poll every ``prediction_registry_poll_s``
catches promotions whose event was missed (broker outage, event published before start).

After a reload the affected keys are handed to ``on_change`` (the engine's re-forecast
queue): the symbol an event names (``training.py`` publishes one event per asset), every
symbol when an event names none (scope ``*``), plus every champion that the reload changed
(a global one affects every symbol) so that a missed event still re-forecasts.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Sequence

from aiokafka import AIOKafkaConsumer, TopicPartition

from ml.registry import GLOBAL_SCOPE
from services.common.config import Settings
from services.common.events import ModelPromoted, decode
from services.common.kafka import start_with_backoff
from services.prediction.champions import ModelProvider
from services.prediction.clock import INTERVALS
from services.prediction.planning import Reforecast

log = logging.getLogger(__name__)

OnChange = Callable[[Sequence[Reforecast]], None]


def affected(
    events: Sequence[ModelPromoted],
    before: dict[str, str],
    after: dict[str, str],
    intervals: Sequence[str] = INTERVALS,
) -> list[Reforecast]:
    """What to re-forecast after a reload: named by the events, and changed in the registry
    (``before``/``after`` are :meth:`ModelProvider.versions`, keyed ``scope:interval``)."""
    wanted: dict[str, set[str] | None] = {}

    def add(interval: str, symbol: str | None) -> None:
        if interval not in intervals:
            return
        if symbol is None or symbol == GLOBAL_SCOPE:
            wanted[interval] = None
            return
        current = wanted.setdefault(interval, set())
        if current is not None:
            current.add(symbol)

    for event in events:
        for interval in intervals if event.interval is None else [event.interval]:
            add(interval, event.symbol or None)
    for key in sorted(set(before) | set(after)):
        if before.get(key) != after.get(key):
            scope, _, interval = key.rpartition(":")
            add(interval, scope)
    return [
        Reforecast(interval, None if symbols is None else frozenset(symbols))
        for interval, symbols in sorted(wanted.items())
    ]


class ModelEventsWatcher:
    def __init__(
        self, settings: Settings, provider: ModelProvider, on_change: OnChange | None = None
    ) -> None:
        self.settings = settings
        self.provider = provider
        self.on_change = on_change
        self.ready = asyncio.Event()
        self.promotions_seen = 0

    async def run(self, stop: asyncio.Event) -> None:
        settings = self.settings
        consumer = AIOKafkaConsumer(
            bootstrap_servers=settings.kafka_bootstrap_servers,
            group_id=None,
            enable_auto_commit=False,
            auto_offset_reset="latest",
        )
        await start_with_backoff(
            consumer.start, settings.startup_wait_s, what="model-events consumer"
        )
        try:
            await self._assign(consumer, stop)
            self.ready.set()
            next_poll = time.monotonic() + settings.prediction_registry_poll_s
            while not stop.is_set():
                batch = await consumer.getmany(timeout_ms=250)
                promoted: list[ModelPromoted] = []
                for records in batch.values():
                    for record in records:
                        event = decode(record.value)
                        if event is None:
                            log.warning("ignoring a malformed model event")
                            continue
                        if isinstance(event, ModelPromoted):
                            self.promotions_seen += 1
                            log.info("model promoted: %s", event)
                            promoted.append(event)
                before = self.provider.versions()
                if promoted:
                    await asyncio.to_thread(self.provider.reload)
                elif time.monotonic() >= next_poll:
                    next_poll = time.monotonic() + settings.prediction_registry_poll_s
                    try:
                        await asyncio.to_thread(self.provider.reload_if_changed)
                    except Exception:
                        log.warning("registry poll failed", exc_info=True)
                else:
                    continue
                requests = affected(promoted, before, self.provider.versions())
                if requests and self.on_change is not None:
                    self.on_change(requests)
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
        assigned = [TopicPartition(topic, partition) for partition in sorted(partitions or ())]
        consumer.assign(assigned)
        await consumer.seek_to_end(*assigned)
        for topic_partition in assigned:
            await consumer.position(
                topic_partition
            )  # resolve now: events after this point are seen
