"""Redis access and the prediction cache key format."""

from __future__ import annotations

import redis
import redis.asyncio as aioredis

from services.common.config import Settings


def prediction_key(symbol: str, interval: str, horizon: int) -> str:
    """``prediction:{symbol}:{interval}:{horizon}`` (design.md)."""
    return f"prediction:{symbol}:{interval}:{horizon}"


def status_key(symbol: str, interval: str) -> str:
    """Why a symbol has no forecast (ERR_PRED_001 state), cached beside its predictions."""
    return f"prediction-status:{symbol}:{interval}"


def make_redis(settings: Settings) -> redis.Redis:
    return redis.Redis.from_url(
        settings.redis_url, socket_timeout=1.0, socket_connect_timeout=1.0, health_check_interval=15
    )


def make_async_redis(settings: Settings) -> aioredis.Redis:
    return aioredis.Redis.from_url(
        settings.redis_url, socket_timeout=1.0, socket_connect_timeout=1.0, health_check_interval=15
    )
