"""Redis access and the prediction cache key format.

Clients retry a failed command once after a short backoff (redis-py's default is 10 retries
with up to 10 s between them): a Redis outage must degrade a request quickly, never stall it.
"""

from __future__ import annotations

import redis.asyncio as aioredis
from redis.asyncio.retry import Retry as AsyncRetry
from redis.backoff import ExponentialBackoff

from services.common.config import Settings

_RETRIES = 1
_BACKOFF = ExponentialBackoff(cap=0.2, base=0.05)


def prediction_key(symbol: str, interval: str, horizon: int) -> str:
    """``prediction:{symbol}:{interval}:{horizon}`` (docs/architecture.md)."""
    return f"prediction:{symbol}:{interval}:{horizon}"


def status_key(symbol: str, interval: str) -> str:
    """Why a symbol has no forecast (ERR_PRED_001 state), cached beside its predictions."""
    return f"prediction-status:{symbol}:{interval}"


def make_async_redis(settings: Settings) -> aioredis.Redis:
    return aioredis.Redis.from_url(
        settings.redis_url,
        socket_timeout=1.0,
        socket_connect_timeout=1.0,
        health_check_interval=15,
        retry=AsyncRetry(_BACKOFF, _RETRIES),
    )
