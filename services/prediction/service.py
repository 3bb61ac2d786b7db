"""``pricecast predict``: the prediction service process.

Wires the pieces together and owns their lifetimes: the ``prices`` consumer (forecasts), the
``model-events`` watcher (hot reload), cache warming at start and the health/metrics server
on ``predict_health_port``. Runs until SIGTERM/SIGINT, then finishes the current batch,
commits, and closes every client.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import signal
from datetime import UTC, datetime
from typing import Any

from services.common.cache import make_async_redis
from services.common.config import Settings, get_settings
from services.common.db import make_engine, wait_for_db
from services.common.health import (
    check_database,
    check_kafka,
    check_redis,
    health_router,
    serve_worker_http,
)
from services.common.kafka import ensure_topics, make_producer, start_with_backoff
from services.prediction.champions import ModelProvider
from services.prediction.clock import INTERVALS
from services.prediction.consumer import PricesConsumer
from services.prediction.engine import PredictionEngine
from services.prediction.events import ModelEventsWatcher
from services.prediction.warm import WarmReport, warm_cache

log = logging.getLogger(__name__)


class PredictionService:
    def __init__(self, settings: Settings, *, health_port: int | None = None) -> None:
        self.settings = settings
        self.health_port = settings.predict_health_port if health_port is None else health_port
        self.ready = asyncio.Event()
        self.engine: PredictionEngine | None = None
        self.provider: ModelProvider | None = None
        self.consumer: PricesConsumer | None = None
        self.events: ModelEventsWatcher | None = None
        self.warm: WarmReport | None = None
        self.started_at = datetime.now(UTC)

    async def run(self, stop: asyncio.Event) -> None:
        settings = self.settings
        db = make_engine(
            settings, pool_size=max(settings.db_pool_size, settings.prediction_workers + 2)
        )
        redis = make_async_redis(settings)
        producer = make_producer(settings)
        tasks: list[asyncio.Task[None]] = []
        try:
            await asyncio.to_thread(wait_for_db, db, settings.startup_wait_s)
            await ensure_topics(settings, timeout_s=settings.startup_wait_s)
            await start_with_backoff(producer.start, settings.startup_wait_s, what="kafka producer")
            self.provider = ModelProvider(settings, db, INTERVALS)
            await asyncio.to_thread(self.provider.reload)
            self.engine = PredictionEngine(settings, db, redis, producer, self.provider, INTERVALS)
            await asyncio.to_thread(self.engine.start)  # forecast processes, before ready
            try:
                self.warm = await warm_cache(settings, db, redis)
            except Exception:
                log.warning("cache warming failed; continuing cold", exc_info=True)
            self.consumer = PricesConsumer(settings, self.engine)
            self.events = ModelEventsWatcher(settings, self.provider, self.engine.queue_reforecast)
            router = health_router(
                {
                    "database": lambda: check_database(db),
                    "redis": lambda: check_redis(redis),
                    "kafka": lambda: check_kafka(settings.kafka_bootstrap_servers),
                },
                critical={"database", "kafka"},
                extra=self.details,
            )
            tasks = [
                asyncio.create_task(self.consumer.run(stop), name="prices-consumer"),
                asyncio.create_task(self.events.run(stop), name="model-events"),
            ]
            if self.health_port:
                tasks.append(
                    asyncio.create_task(
                        serve_worker_http(router, self.health_port), name="health-http"
                    )
                )
            await self.events.ready.wait() if not tasks[1].done() else None
            self.ready.set()
            log.info("prediction service running (health on :%s)", self.health_port)
            stopper = asyncio.create_task(stop.wait())
            done, _ = await asyncio.wait([stopper, *tasks], return_when=asyncio.FIRST_COMPLETED)
            stopper.cancel()
            for task in done:
                if task is not stopper and task.exception() is not None:
                    raise task.exception()  # type: ignore[misc]
        finally:
            stop.set()
            for task in tasks[:2]:  # consumers finish their batch and leave their groups
                with contextlib.suppress(Exception, asyncio.CancelledError):
                    await asyncio.wait_for(task, 30)
            for task in tasks[2:]:
                task.cancel()
                with contextlib.suppress(Exception, asyncio.CancelledError):
                    await task
            if self.engine is not None:
                self.engine.close()
            with contextlib.suppress(Exception):
                await producer.stop()
            with contextlib.suppress(Exception):
                await redis.aclose()  # type: ignore[attr-defined]
            db.dispose()

    async def details(self) -> dict[str, Any]:
        """Data trustworthiness for ``/health/detailed``."""
        now = datetime.now(UTC)
        engine, provider, consumer = self.engine, self.provider, self.consumer
        last = None if engine is None else engine.last_forecast_at
        return {
            "prediction": {
                "consumer_group": self.settings.consumer_group_prediction,
                "consumer_lag": None if consumer is None else await consumer.lag(),
                "symbols_waiting": [] if engine is None else sorted(engine.waiting),
                "last_forecast_age_s": None
                if last is None
                else round((now - last).total_seconds(), 1),
                "forecasts_total": 0 if engine is None else engine.forecasts_total,
                "reforecasts_total": 0 if engine is None else engine.reforecasts_total,
                "reforecasts_queued": 0 if engine is None else engine.queued,
                "tracked_keys": 0 if engine is None else len(engine.tracker),
                "model_versions": {} if provider is None else provider.versions(),
                "model_ages_s": {} if provider is None else provider.ages(now),
                "cache_warm_hit_ratio": None if self.warm is None else self.warm.hit_ratio,
                "uptime_s": round((now - self.started_at).total_seconds(), 1),
            }
        }


async def serve(settings: Settings) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await PredictionService(settings).run(stop)


def main(args: argparse.Namespace) -> int:
    settings = get_settings()
    if not settings.kafka_configured:
        log.error("KAFKA_BOOTSTRAP_SERVERS is not set (use `pricecast run` for a local stack)")
        return 2
    asyncio.run(serve(settings))
    return 0
