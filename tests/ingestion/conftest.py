"""Helpers for the ingestion tests (real broker and PostgreSQL via tests/conftest.py)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
from ingest_helpers import RunningWriter
from sqlalchemy.engine import Engine

from services.common import infra
from services.common.config import Settings
from services.common.kafka import ensure_topics
from services.ingestion.producer import TickPublisher


@pytest.fixture
def ing_settings(isolated_settings: Settings) -> Settings:
    return isolated_settings.model_copy(
        update={
            "writer_batch_timeout_ms": 50,
            "writer_session_timeout_ms": 2000,
            "writer_heartbeat_interval_ms": 200,
            "ingest_health_port": infra.free_port(),
            "startup_wait_s": 20.0,
        }
    )


@pytest.fixture
async def publisher(ing_settings: Settings) -> AsyncIterator[TickPublisher]:
    await ensure_topics(ing_settings)
    pub = TickPublisher(ing_settings)
    assert await pub.start()
    yield pub
    await pub.stop()


@pytest.fixture
async def start_writer(ing_settings: Settings, engine: Engine) -> AsyncIterator[Callable[..., Any]]:
    running: list[RunningWriter] = []

    async def start(settings: Settings | None = None) -> RunningWriter:
        w = await RunningWriter(settings or ing_settings, engine).start()
        running.append(w)
        return w

    yield start
    for w in running:
        if w.task is not None and not w.task.done():
            await w.close()
