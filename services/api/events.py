"""``model-events`` publisher for retrain requests (producer started on first use).

Every await on Kafka (start, send, stop) is bounded with ``bounded``: a broker that does not
answer delays one retrain request or the shutdown by a few seconds, never forever."""

from __future__ import annotations

import asyncio
import logging

from aiokafka import AIOKafkaProducer

from services.api.core.bounded import bounded
from services.common.config import Settings
from services.common.events import RetrainRequested, encode
from services.common.kafka import make_producer

log = logging.getLogger(__name__)

PUBLISH_TIMEOUT_S = 5.0
STOP_TIMEOUT_S = 3.0


class EventPublisher:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._producer: AIOKafkaProducer | None = None
        self._lock = asyncio.Lock()

    async def _get(self) -> AIOKafkaProducer:
        async with self._lock:
            if self._producer is None:
                producer = make_producer(self.settings, request_timeout_ms=5_000)
                try:
                    await bounded(producer.start(), PUBLISH_TIMEOUT_S, "kafka producer start")
                except BaseException:
                    await _stop(producer)
                    raise
                self._producer = producer
            return self._producer

    async def retrain_requested(
        self, request_id: int, symbol: str | None, interval: str, reason: str, by: str
    ) -> bool:
        """Publish; False (logged) when Kafka does not answer: the row stays queued and the
        retraining job (``pricecast train --pending``) still finds it."""
        event = RetrainRequested(
            request_id=request_id,
            symbol=symbol,
            interval=interval,
            reason=reason,
            requested_by=by,
        )
        try:
            producer = await self._get()
            await bounded(
                producer.send_and_wait(
                    self.settings.topic_model_events,
                    encode(event),
                    key=event.key,
                ),
                PUBLISH_TIMEOUT_S,
                "retrain_requested publish",
            )
            return True
        except Exception as exc:  # noqa: BLE001 - the request is durable; publishing is a hint
            log.warning(
                "could not publish retrain_requested %s: %s", request_id, type(exc).__name__
            )
            await self._reset()
            return False

    async def _reset(self) -> None:
        async with self._lock:
            producer, self._producer = self._producer, None
        if producer is not None:
            await _stop(producer)

    async def close(self) -> None:
        await self._reset()


async def _stop(producer: AIOKafkaProducer) -> None:
    try:
        await bounded(producer.stop(), STOP_TIMEOUT_S, "kafka producer stop")
    except Exception:
        log.debug("producer stop failed", exc_info=True)
