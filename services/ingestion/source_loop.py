"""Driving one source: fetch, validate, publish (rejects to the DLQ), repeat every interval."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time

from aiokafka.errors import KafkaError

from services.ingestion.producer import TickPublisher
from services.ingestion.sources.base import Source

log = logging.getLogger(__name__)


async def _sleep_or_stop(stop: asyncio.Event, seconds: float) -> None:
    if seconds <= 0:
        await asyncio.sleep(0)
        return
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stop.wait(), seconds)


async def run_source(source: Source, publisher: TickPublisher, stop: asyncio.Event) -> int:
    """Poll ``source`` until it is exhausted or ``stop`` is set; returns ticks published."""
    published = 0
    while not stop.is_set() and not source.exhausted:
        started = time.monotonic()
        try:
            raw = await source.fetch()
            if raw:
                good, _bad = await publisher.validate_and_publish(raw, source.name)
                source.published(raw)
                published += len(good)
        except (KafkaError, OSError) as exc:
            # Not published; an HTTP source offers the same ticks again next poll.
            log.error("%s: publishing failed (%s); retrying next poll", source.name, exc)
        except Exception:
            log.exception("%s: poll failed", source.name)
        await _sleep_or_stop(stop, source.interval_s - (time.monotonic() - started))
    return published
