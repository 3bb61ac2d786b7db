"""Fixtures of the prediction tests (helpers: ``prediction_helpers``)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest
from sqlalchemy.engine import Engine

from services.common import infra
from services.common.config import Settings
from services.common.kafka import ensure_topics
from services.prediction.service import PredictionService


@pytest.fixture
async def run_service(
    isolated_settings: Settings, clean_db: Engine
) -> AsyncIterator[Callable[..., Awaitable[PredictionService]]]:
    """Start a PredictionService in this event loop (health on a free port); stop at the end."""
    started: list[tuple[PredictionService, asyncio.Event, asyncio.Task[None]]] = []
    await ensure_topics(isolated_settings)

    async def start(settings: Settings | None = None) -> PredictionService:
        service = PredictionService(settings or isolated_settings, health_port=infra.free_port())
        stop = asyncio.Event()
        task = asyncio.create_task(service.run(stop))
        started.append((service, stop, task))
        ready = asyncio.create_task(service.ready.wait())
        done, _ = await asyncio.wait({ready, task}, timeout=60, return_when="FIRST_COMPLETED")
        if task in done:
            task.result()
        assert ready in done, "prediction service did not become ready"
        return service

    yield start
    for _, stop, task in started:
        stop.set()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(task, 30)
