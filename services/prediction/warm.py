"""Cache warming at start: every active symbol's newest forecasts and statuses into Redis.

A key already present is a hit, a key written now a miss (``pricecast_cache_requests_total``
with ``service="prediction"``); forecasts whose cache life has ended (the next bar closed
while the service was down) are not written back: the next bar close replaces them.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from datetime import UTC, datetime

import redis.asyncio as aioredis
from sqlalchemy.engine import Engine

from services.common.cache import prediction_key, status_key
from services.common.config import Settings
from services.common.metrics import CACHE_REQUESTS
from services.common.schemas import PredictionRecord, PredictionStatus
from services.prediction import store
from services.prediction.clock import INTERVALS, ttl_seconds
from services.prediction.publish import encode, status_ttl

log = logging.getLogger(__name__)


@dataclass
class WarmReport:
    symbols: int = 0
    hits: int = 0
    misses: int = 0
    expired: int = 0

    @property
    def hit_ratio(self) -> float | None:
        total = self.hits + self.misses
        return None if total == 0 else self.hits / total


def _load(db: Engine) -> tuple[list[str], list[PredictionRecord], list[PredictionStatus]]:
    with db.connect() as conn:
        symbols = store.active_symbols(conn)
        records = [
            record
            for interval in INTERVALS
            for record in store.latest_forecasts(conn, symbols, interval)
        ]
        statuses = store.statuses(conn, symbols)
    return symbols, records, statuses


async def warm_cache(settings: Settings, db: Engine, client: aioredis.Redis) -> WarmReport:
    symbols, records, statuses = await asyncio.to_thread(_load, db)
    report = WarmReport(symbols=len(symbols))
    now = datetime.now(UTC)
    margin = settings.prediction_ttl_margin_s
    entries: list[tuple[str, bytes, int]] = []
    for record in records:
        ttl = ttl_seconds(record.as_of, record.interval, margin, now)
        if ttl <= 0:
            report.expired += 1
            continue
        entries.append(
            (prediction_key(record.symbol, record.interval, record.horizon), encode(record), ttl)
        )
    for st in statuses:
        entries.append(
            (status_key(st.symbol, st.interval), encode(st), status_ttl(st.interval, margin))
        )
    if not entries:
        return report
    async with client.pipeline(transaction=False) as pipe:
        for key, _, _ in entries:
            pipe.exists(key)
        present = await pipe.execute()
    async with client.pipeline(transaction=False) as pipe:
        for (key, value, ttl), found in zip(entries, present, strict=True):
            if found:
                report.hits += 1
            else:
                report.misses += 1
                pipe.set(key, value, ex=ttl, nx=True)
        await pipe.execute()
    CACHE_REQUESTS.labels("prediction", "hit").inc(report.hits)
    CACHE_REQUESTS.labels("prediction", "miss").inc(report.misses)
    log.info(
        "cache warmed: %d symbols, %d keys present, %d written, %d expired",
        report.symbols,
        report.hits,
        report.misses,
        report.expired,
    )
    return report
