"""What one API process holds: settings, engine, Redis, token service, gate, publisher."""

from __future__ import annotations

import logging
from dataclasses import dataclass

import redis.asyncio as aioredis
from sqlalchemy.engine import Engine

from services.api.core.bounded import bounded
from services.api.core.gate import CLOSE_TIMEOUT_S, RedisGate
from services.api.core.keys import load_keyset
from services.api.core.security import TokenService
from services.api.events import EventPublisher
from services.common.cache import make_async_redis
from services.common.config import Settings
from services.common.db import make_engine

log = logging.getLogger(__name__)


@dataclass
class ApiState:
    settings: Settings
    engine: Engine
    redis: aioredis.Redis
    tokens: TokenService
    gate: RedisGate
    events: EventPublisher

    @classmethod
    def build(cls, settings: Settings) -> ApiState:
        redis = make_async_redis(settings)
        return cls(
            settings=settings,
            engine=make_engine(settings),
            redis=redis,
            tokens=TokenService(load_keyset(settings), settings),
            gate=RedisGate(
                redis,
                settings.api_redis_retry_s,
                local_cache_s=settings.api_local_cache_ms / 1000,
                sync_interval_s=settings.api_sync_interval_ms / 1000,
            ),
            events=EventPublisher(settings),
        )

    async def close(self) -> None:
        """Release everything; bounded (gate and publisher bound their own stops)."""
        await self.gate.close()
        await self.events.close()
        try:
            await bounded(self.redis.aclose(), CLOSE_TIMEOUT_S, "redis close")  # type: ignore[attr-defined]
        except Exception:
            log.debug("redis close failed", exc_info=True)
        self.engine.dispose()
