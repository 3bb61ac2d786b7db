"""Stream fixtures: topics of the test's own, short timings, a served app, a producer."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
import redis
from _stream_helpers import RunningApi, StartApi, producer, start_api
from aiokafka import AIOKafkaProducer
from own_topics import own_topics
from sqlalchemy.engine import Engine

from services.common.config import Settings
from services.common.kafka import ensure_topics


@pytest.fixture
async def stream_settings(api_settings: Settings) -> Settings:
    s = own_topics(
        api_settings,
        {
            "stream_auth_timeout_s": 1.0,
            "stream_slow_client_s": 1.0,
            "stream_sweep_interval_s": 0.1,
            "stream_tick_interval_ms": 50,
            "stream_queue_size": 64,
            "api_sync_interval_ms": 50,
            "writer_batch_timeout_ms": 50,
        },
    )
    await ensure_topics(s)
    return s


@pytest.fixture
async def api(
    stream_settings: Settings, clean_db: Engine, redis_client: redis.Redis
) -> AsyncIterator[RunningApi]:
    running = await start_api(stream_settings)
    yield running
    await running.stop()


@pytest.fixture
async def api_with(
    stream_settings: Settings, clean_db: Engine, redis_client: redis.Redis
) -> AsyncIterator[StartApi]:
    """Serves the app with settings of its own (``await api_with(stream_heartbeat_s=0.3)``);
    what it started stops after the test."""
    started: list[RunningApi] = []

    async def _start(**overrides: Any) -> RunningApi:
        running = await start_api(stream_settings.model_copy(update=overrides))
        started.append(running)
        return running

    yield _start
    for running in started:
        await running.stop()


@pytest.fixture
async def kafka(stream_settings: Settings) -> AsyncIterator[AIOKafkaProducer]:
    p = await producer(stream_settings)
    yield p
    await p.stop()


@pytest.fixture
def mint(api: RunningApi) -> Callable[..., str]:
    """Access tokens signed by the served app's key (all scopes unless named)."""
    tokens = api.app.state.api.tokens

    def _mint(*scopes: str, subject: str | None = None, ttl_s: int | None = None) -> str:
        token, _ = tokens.mint(
            subject or f"stream-{uuid.uuid4().hex[:8]}",
            scopes or ("prices:read", "predictions:read"),
            ttl_s=ttl_s,
        )
        return str(token)

    return _mint
