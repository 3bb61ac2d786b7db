"""Redis stopped: predictions still answer from PostgreSQL, /health/detailed is degraded,
/health/ready stays ready; Redis back: the cache is used again without a restart.

Uses a private redis-server on a free port (never the machine's Redis)."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import httpx
import pytest
import redis
from _api_helpers import add_asset, add_prediction, bearer
from sqlalchemy.engine import Engine

from services.api.main import create_app
from services.common import infra
from services.common.cache import prediction_key
from services.common.config import Settings

URL = "/api/v1/predictions/BTC-USD?interval=1d&horizon=1"


@pytest.fixture
def private_redis() -> Iterator[infra.RedisServer]:
    server = infra.RedisServer()
    yield server
    server.stop()


async def test_redis_outage_and_recovery(
    api_settings: Settings, clean_db: Engine, private_redis: infra.RedisServer
) -> None:
    settings = api_settings.model_copy(
        update={"redis_url": private_redis.url, "api_redis_retry_s": 0.2}
    )
    add_asset(clean_db, "BTC-USD")
    add_prediction(clean_db, "BTC-USD", price=123.0)
    direct = redis.Redis.from_url(private_redis.url)
    direct.set(prediction_key("BTC-USD", "1d", 1), b'{"from": "cache"}')

    app = create_app(settings)
    token, _ = app.state.api.tokens.mint("ops", ["predictions:read", "prices:read"])
    transport = httpx.ASGITransport(app=app)
    try:
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as c:
            hit = await c.get(URL, headers=bearer(token))
            assert hit.content == b'{"from": "cache"}'
            assert (await c.get("/health/detailed")).json()["status"] == "healthy"

            private_redis.stop()
            for _ in range(3):
                r = await c.get(URL, headers=bearer(token))
                assert r.status_code == 200, r.text
                assert r.json()["predicted_price"] == 123.0  # served from PostgreSQL
            assert (await c.get("/api/v1/assets", headers=bearer(token))).status_code == 200
            detailed = (await c.get("/health/detailed")).json()
            assert detailed["status"] == "degraded"
            assert detailed["services"]["redis"] == "unhealthy"
            assert detailed["services"]["database"] == "healthy"
            assert detailed["api"]["redis_fallback_active"] is True
            assert (await c.get("/health/ready")).status_code == 200
            assert (await c.get("/health/redis")).status_code == 503

            private_redis.start()
            direct = redis.Redis.from_url(private_redis.url)
            direct.set(prediction_key("BTC-USD", "1d", 1), b'{"from": "cache again"}')
            await asyncio.sleep(0.3)  # past api_redis_retry_s
            for _ in range(20):  # the pool may hold a dead connection or two
                back = await c.get(URL, headers=bearer(token))
                if back.content == b'{"from": "cache again"}':
                    break
                await asyncio.sleep(0.25)
            assert back.content == b'{"from": "cache again"}'
            assert (await c.get("/health/detailed")).json()["status"] == "healthy"
    finally:
        await app.state.api.close()


async def test_local_rate_limit_while_redis_is_down(
    api_settings: Settings, clean_db: Engine, private_redis: infra.RedisServer
) -> None:
    settings = api_settings.model_copy(
        update={"redis_url": private_redis.url, "rate_limit_per_minute": 3}
    )
    app = create_app(settings)
    token, _ = app.state.api.tokens.mint("limited", ["prices:read"])
    private_redis.stop()
    transport = httpx.ASGITransport(app=app)
    try:
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as c:
            codes = [
                (await c.get("/api/v1/assets", headers=bearer(token))).status_code for _ in range(5)
            ]
        assert codes[:3] == [200, 200, 200]
        assert codes[3:] == [429, 429]
    finally:
        await app.state.api.close()
