"""The API's /health/detailed says whether the data can be trusted (services/api/health.py).

A real feed (the ingestion service in this process: synthetic source, Kafka, the writer) into
the session's PostgreSQL; the API reads lag from Kafka and ages and champions from the
database. Stopping the feed turns the answer degraded with the stale symbol named; starting it
again turns it back. A hanging dependency does not hold the answer up.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import httpx
import pytest
import sqlalchemy as sa
from fastapi import FastAPI
from sqlalchemy.engine import Engine

from services.api.main import create_app
from services.common import infra
from services.common.config import Settings
from services.common.kafka import ensure_topics
from services.ingestion.service import run_ingestion

SYMBOL = "FEED-USD"


@pytest.fixture
def feed_settings(isolated_settings: Settings, api_settings: Settings) -> Settings:
    """The API's settings on topics and consumer groups of the test's own."""
    own = {
        k: getattr(isolated_settings, k)
        for k in ("topic_prices", "topic_prices_dlq", "consumer_group_writer")
    }
    return api_settings.model_copy(
        update={
            **own,
            "consumer_group_prediction": isolated_settings.consumer_group_prediction,
            "ingest_sources": "synthetic",
            "ingest_symbols": SYMBOL,
            "synthetic_interval_s": 0.2,
            "writer_batch_timeout_ms": 50,
            "ingest_health_port": infra.free_port(),
            "stale_after_s": 3.0,
            "health_data_cache_s": 0.2,
            "startup_wait_s": 20.0,
        }
    )


class Feed:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.stop_event = asyncio.Event()
        self.task: asyncio.Task[int] | None = None

    def start(self) -> None:
        self.stop_event = asyncio.Event()
        self.task = asyncio.create_task(
            run_ingestion(
                self.settings, "all", self.stop_event, install_signals=False, health=False
            )
        )

    async def stop(self) -> None:
        if self.task is not None and not self.task.done():
            self.stop_event.set()
            await asyncio.wait_for(self.task, 30)


@pytest.fixture
async def feed(feed_settings: Settings, clean_db: Engine) -> AsyncIterator[Feed]:
    await ensure_topics(feed_settings)
    running = Feed(feed_settings)
    yield running
    await running.stop()


@pytest.fixture
async def api(feed_settings: Settings) -> AsyncIterator[httpx.AsyncClient]:
    app: FastAPI = create_app(feed_settings)
    transport = httpx.ASGITransport(app=app)
    try:
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as c:
            yield c
    finally:
        await app.state.api.close()


async def _until(
    api: httpx.AsyncClient, ok: Callable[[dict[str, Any]], bool], timeout_s: float
) -> dict[str, Any]:
    deadline = time.monotonic() + timeout_s
    while True:
        body = (await api.get("/health/detailed")).json()
        if ok(body) or time.monotonic() > deadline:
            return body
        await asyncio.sleep(0.3)


def _fresh(body: dict[str, Any]) -> bool:
    data = body.get("data", {})
    tick_age = data.get("symbols", {}).get(SYMBOL, {}).get("tick_age_s")
    return body["status"] == "healthy" and tick_age is not None and tick_age < 3


async def test_lag_ages_champions_and_a_stopped_feed(
    feed: Feed, api: httpx.AsyncClient, clean_db: Engine, feed_settings: Settings
) -> None:
    with clean_db.begin() as conn:
        conn.execute(
            sa.text(
                "INSERT INTO model_versions (model, scope, interval, version, status, promoted_at)"
                " VALUES ('lstm', '*', '1d', 3, 'champion', now() - interval '2 hours')"
            )
        )
    feed.start()
    body = await _until(api, _fresh, 60)
    assert _fresh(body), body
    data = body["data"]
    assert body["services"] == {"database": "healthy", "redis": "healthy", "kafka": "healthy"}
    assert data["stale_symbols"] == []
    assert set(data["consumer_lag"]) == {
        feed_settings.consumer_group_writer,
        feed_settings.consumer_group_prediction,
    }
    assert isinstance(data["consumer_lag"][feed_settings.consumer_group_writer], int)
    assert data["symbols"][SYMBOL]["bar_age_s"]["1m"] is not None
    assert set(data["symbols"][SYMBOL]["bar_age_s"]) == {"1m", "1h", "1d"}
    (champion,) = data["champions"]
    assert champion["model"] == "lstm" and champion["version"] == 3
    assert 7000 < champion["age_s"] < 7400
    assert data["streams"]["connections"] == 0 and "subscriptions" in data["streams"]

    await feed.stop()
    body = await _until(api, lambda b: b["status"] == "degraded", 30)
    assert body["status"] == "degraded", body
    assert body["data"]["stale_symbols"] == [SYMBOL]
    assert body["services"]["database"] == "healthy"

    feed.start()
    body = await _until(api, _fresh, 60)
    assert _fresh(body), body
    assert body["data"]["stale_symbols"] == []


async def test_a_hanging_database_does_not_hold_the_answer(
    api_settings: Settings, clean_db: Engine
) -> None:
    """A database that accepts connections and never answers: the page still answers
    within its budget, naming the database unhealthy."""
    server = await asyncio.start_server(lambda r, w: None, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    hanging = api_settings.model_copy(
        update={"database_url": f"postgresql+psycopg2://postgres@127.0.0.1:{port}/none"}
    )
    app = create_app(hanging)
    transport = httpx.ASGITransport(app=app)
    try:
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as c:
            # It answers (the checks are cut off at their budget) instead of waiting on the
            # driver, which would wait as long as the server holds the connection open.
            body = (await asyncio.wait_for(c.get("/health/detailed"), 30)).json()
        assert body["status"] == "unhealthy"
        assert body["services"]["database"] == "unhealthy"
        assert body["data"]["status"] == "unknown"
    finally:
        server.close()
        await app.state.api.close()
